// Package charttest renders the tailor Helm chart (deploy/helm/tailor) with
// Helm's Go library, decodes every object it renders strictly into the
// Kubernetes API types and checks what the cluster depends on. It is a
// module of its own so that the tailor module does not depend on Helm and
// Kubernetes.
package charttest

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
)

// Objects are the rendered objects of one release, by kind, decoded into
// the API types.
type Objects struct {
	StatefulSets    []*appsv1.StatefulSet
	Deployments     []*appsv1.Deployment
	Jobs            []*batchv1.Job
	Services        []*corev1.Service
	Secrets         []*corev1.Secret
	ServiceAccounts []*corev1.ServiceAccount
	PDBs            []*policyv1.PodDisruptionBudget
	NetworkPolicies []*networkingv1.NetworkPolicy
	// Docs are every object's source, by "file#n", for text searches.
	Docs map[string]string
	// Notes is the rendered NOTES.txt.
	Notes string
}

// Release renders chrt for release name in namespace with vals (the
// user's values, merged over the chart's), in strict mode: a reference to
// a value that does not exist is an error.
func Release(ctx context.Context, chrt *chart.Chart, name, namespace string, vals map[string]any) (map[string]string, error) {
	top, err := util.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: name, Namespace: namespace, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.RenderWithContext(ctx, chrt, top)
}

// Decode splits rendered templates into objects and decodes each into its
// API type, strictly: a field the type does not have, a kind this package
// does not know, or an object without apiVersion, kind or name is an error.
func Decode(rendered map[string]string) (*Objects, error) {
	objs := &Objects{Docs: map[string]string{}}
	files := make([]string, 0, len(rendered))
	for f := range rendered {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, file := range files {
		base := path.Base(file)
		if base == "NOTES.txt" {
			objs.Notes = rendered[file]
			continue
		}
		if strings.HasPrefix(base, "_") || !strings.HasSuffix(base, ".yaml") {
			continue
		}
		docs := releaseutil.SplitManifests(rendered[file])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := docs[k]
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			id := file + "#" + strings.TrimPrefix(k, "manifest-")
			if err := objs.add(id, doc); err != nil {
				return nil, fmt.Errorf("%s: %w", id, err)
			}
		}
	}
	return objs, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func (o *Objects) add(id, doc string) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		return err
	}
	gvk := tm.APIVersion + "/" + tm.Kind
	var obj metav1.Object
	switch gvk {
	case "apps/v1/StatefulSet":
		x := &appsv1.StatefulSet{}
		obj, o.StatefulSets = x, append(o.StatefulSets, x)
	case "apps/v1/Deployment":
		x := &appsv1.Deployment{}
		obj, o.Deployments = x, append(o.Deployments, x)
	case "batch/v1/Job":
		x := &batchv1.Job{}
		obj, o.Jobs = x, append(o.Jobs, x)
	case "v1/Service":
		x := &corev1.Service{}
		obj, o.Services = x, append(o.Services, x)
	case "v1/Secret":
		x := &corev1.Secret{}
		obj, o.Secrets = x, append(o.Secrets, x)
	case "v1/ServiceAccount":
		x := &corev1.ServiceAccount{}
		obj, o.ServiceAccounts = x, append(o.ServiceAccounts, x)
	case "policy/v1/PodDisruptionBudget":
		x := &policyv1.PodDisruptionBudget{}
		obj, o.PDBs = x, append(o.PDBs, x)
	case "networking.k8s.io/v1/NetworkPolicy":
		x := &networkingv1.NetworkPolicy{}
		obj, o.NetworkPolicies = x, append(o.NetworkPolicies, x)
	default:
		return fmt.Errorf("unexpected object %q (apiVersion %q, kind %q)", gvk, tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	if obj.GetName() == "" {
		return fmt.Errorf("%s without a name", gvk)
	}
	o.Docs[id] = doc
	return nil
}

// Workload is a pod template and the object that owns it.
type Workload struct {
	Kind, Name string
	Replicas   int32 // 1 for a Job
	Template   *corev1.PodTemplateSpec
}

// Workloads are every pod template of the release.
func (o *Objects) Workloads() []Workload {
	var out []Workload
	for _, s := range o.StatefulSets {
		out = append(out, Workload{"StatefulSet", s.Name, replicas(s.Spec.Replicas), &s.Spec.Template})
	}
	for _, d := range o.Deployments {
		out = append(out, Workload{"Deployment", d.Name, replicas(d.Spec.Replicas), &d.Spec.Template})
	}
	for _, j := range o.Jobs {
		out = append(out, Workload{"Job", j.Name, 1, &j.Spec.Template})
	}
	return out
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}
