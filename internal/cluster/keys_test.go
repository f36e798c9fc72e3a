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
		{k.Epoch(), "/tailor/runs/r1/epoch"},
		{k.EpochUnits(3), "/tailor/runs/r1/epochs/000003/units/"},
		{k.Unit(3, 42), "/tailor/runs/r1/epochs/000003/units/00000042"},
		{k.WorkerProgress("w1"), "/tailor/runs/r1/progress/w1"},
		{k.TrainProgress(), "/tailor/runs/r1/train-progress"},
		{k.Checkpoint(), "/tailor/runs/r1/checkpoint"},
		{k.CheckpointRequest(), "/tailor/runs/r1/checkpoints/request"},
		{k.CheckpointPart(1200, "ps-1"), "/tailor/runs/r1/checkpoints/000000001200/parts/ps-1"},
		{k.ParamServer("ps-1"), "/tailor/runs/r1/ps/ps-1"},
		{cluster.RunKeys("a/b").Prefix(), "/tailor/runs/a%2Fb/"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("key = %q, want %q", tt.got, tt.want)
		}
	}
}

func TestKeysOrder(t *testing.T) {
	k := cluster.RunKeys("r")
	if a, b := k.Unit(1, 9), k.Unit(1, 10); a >= b {
		t.Errorf("Unit(1,9) = %q sorts after Unit(1,10) = %q", a, b)
	}
	if a, b := k.Unit(9, 0), k.Unit(10, 0); a >= b {
		t.Errorf("Unit(9,0) = %q sorts after Unit(10,0) = %q", a, b)
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

func TestParseUnit(t *testing.T) {
	k := cluster.RunKeys("r")
	e, u, ok := k.ParseUnit(k.Unit(7, 123))
	if !ok || e != 7 || u != 123 {
		t.Errorf("ParseUnit(Unit(7,123)) = %d, %d, %v; want 7, 123, true", e, u, ok)
	}
	for _, key := range []string{k.EpochUnits(7), k.Epoch(), "/tailor/runs/r/epochs/x/units/1", "/tailor/runs/r/epochs/1/units/-1"} {
		if _, _, ok := k.ParseUnit(key); ok {
			t.Errorf("ParseUnit(%q) ok; want not ok", key)
		}
	}
}
