package cluster_test

import (
	"testing"

	"github.com/tailorml/tailor/internal/cluster"
)

func TestKeys(t *testing.T) {
	k := cluster.RunKeys("r1")
	tests := []struct{ got, want string }{
		{k.Prefix(), "/tailor/runs/r1/"},
		{k.Spec(), "/tailor/runs/r1/spec"},
		{k.Members(), "/tailor/runs/r1/members/"},
		{k.RoleMembers(cluster.RoleWorker), "/tailor/runs/r1/members/worker/"},
		{k.Member(cluster.RoleParamServer, "ps-0"), "/tailor/runs/r1/members/paramserver/ps-0"},
		{k.Member(cluster.RoleWorker, "a/b"), "/tailor/runs/r1/members/worker/a%2Fb"},
		{k.Election(), "/tailor/runs/r1/leader/"},
		{k.TrainProgress(), "/tailor/runs/r1/train-progress"},
		{k.Checkpoint(), "/tailor/runs/r1/checkpoint"},
		{cluster.RunKeys("a/b").Prefix(), "/tailor/runs/a%2Fb/"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("key = %q, want %q", tt.got, tt.want)
		}
	}
}

func TestParseMember(t *testing.T) {
	k := cluster.RunKeys("r")
	for _, id := range []string{"w1", "a/b", "ü x", "%2F"} {
		role, got, ok := k.ParseMember(k.Member(cluster.RoleWorker, id))
		if !ok || role != cluster.RoleWorker || got != id {
			t.Errorf("ParseMember(Member(worker, %q)) = %q, %q, %v; want worker, %q, true", id, role, got, ok, id)
		}
	}
	for _, key := range []string{
		"/tailor/runs/r/members/worker/",
		"/tailor/runs/r/members/worker",
		"/tailor/runs/r/members/worker/a/b",
		"/tailor/runs/other/members/worker/w1",
		"/tailor/runs/r/epoch",
	} {
		if role, id, ok := k.ParseMember(key); ok {
			t.Errorf("ParseMember(%q) = %q, %q, true; want not ok", key, role, id)
		}
	}
}
