package charttest

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/fake"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/engine"
)

// cluster is a fake API server holding objects, for the chart's lookup.
type cluster struct{ objects []runtime.Object }

func (c cluster) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	gvr := schema.GroupVersionResource{Version: "v1", Resource: strings.ToLower(kind) + "s"}
	return fake.NewSimpleDynamicClient(runtime.NewScheme(), c.objects...).Resource(gvr), true, nil
}

// gossipKey renders the chart against c as an install or an upgrade and
// returns the gossip Secret's key.
func gossipKey(t *testing.T, c cluster, upgrade bool) string {
	t.Helper()
	ch := loadChart(t)
	top, err := util.ToRenderValues(ch, map[string]any{}, common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: !upgrade, IsUpgrade: upgrade}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.RenderWithClientProvider(ch, top, c)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range objs.Secrets {
		if s.Name == fullname+"-gossip" {
			return string(s.Data["gossip.key"])
		}
	}
	t.Fatal("no gossip Secret")
	return ""
}

// The chart's gossip key is 32 random bytes in hex, new at install and the
// installed one on an upgrade: every member of the run needs the same key,
// and a member restarted after an upgrade reads the Secret again.
func TestGossipKeyKeptOnUpgrade(t *testing.T) {
	k1, k2 := gossipKey(t, cluster{}, false), gossipKey(t, cluster{}, false)
	for _, k := range []string{k1, k2} {
		if b, err := hex.DecodeString(k); err != nil || len(b) != 32 {
			t.Errorf("gossip key %q: want 32 bytes in hex (%v)", k, err)
		}
	}
	if k1 == k2 {
		t.Errorf("two installs made the same gossip key %q", k1)
	}
	installed := strings.Repeat("5a", 32)
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   map[string]any{"name": fullname + "-gossip", "namespace": namespace},
		"data":       map[string]any{"gossip.key": base64.StdEncoding.EncodeToString([]byte(installed))},
	}}
	if got := gossipKey(t, cluster{objects: []runtime.Object{secret}}, true); got != installed {
		t.Errorf("upgrade: gossip key %q, want the installed %q", got, installed)
	}
	// another release's Secret is not this one's
	secret.SetName("other-tailor-gossip")
	if got := gossipKey(t, cluster{objects: []runtime.Object{secret}}, true); got == installed {
		t.Errorf("took another release's gossip key")
	}
}
