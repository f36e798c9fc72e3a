package charttest

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

const (
	chartDir  = "../tailor"
	release   = "fashion"
	namespace = "ml"
	fullname  = "fashion-tailor"
)

// a case: a values file (none: the defaults) and what its release must be
type renderCase struct {
	name, file   string
	ps, workers  int32
	etcd         string // the --etcd every role gets
	inChartEtcd  int32  // etcd members in the release (0: external)
	tls, netpol  bool
	gossip       bool
	s3Secret     string   // the Secret the S3 credentials come from
	leaks        []string // values that must appear in no object but a Secret
	wantEtcdAuth bool
}

const inChartEtcd = "http://fashion-tailor-etcd.ml.svc.cluster.local:2379"

var cases = []renderCase{
	{name: "defaults", ps: 2, workers: 2, etcd: inChartEtcd, inChartEtcd: 1, netpol: true, gossip: true, s3Secret: "tailor-s3"},
	{name: "etcd3", file: "ci/etcd3-values.yaml", ps: 2, workers: 2, etcd: inChartEtcd, inChartEtcd: 3, netpol: true, gossip: true, s3Secret: "tailor-s3"},
	{name: "external etcd with TLS", file: "ci/external-etcd-tls-values.yaml", ps: 2, workers: 2,
		etcd:   "https://etcd-0.etcd.infra.svc.cluster.local:2379,https://etcd-1.etcd.infra.svc.cluster.local:2379,https://etcd-2.etcd.infra.svc.cluster.local:2379",
		netpol: true, gossip: true, s3Secret: "tailor-s3", wantEtcdAuth: true},
	{name: "8 workers 4 servers", file: "ci/scale-values.yaml", ps: 4, workers: 8, etcd: inChartEtcd, inChartEtcd: 1, netpol: true, gossip: true, s3Secret: "tailor-s3"},
	{name: "TLS", file: "ci/tls-values.yaml", ps: 2, workers: 2, etcd: inChartEtcd, inChartEtcd: 1, tls: true, netpol: true, gossip: true,
		s3Secret: fullname + "-s3", leaks: []string{"TEST-ACCESS-KEY-DO-NOT-LEAK", "TEST-SECRET-KEY-DO-NOT-LEAK", "TEST-KEY-PEM-DO-NOT-LEAK", "TEST-CERT-PEM-DO-NOT-LEAK"}},
	{name: "no NetworkPolicy", file: "ci/no-networkpolicy-values.yaml", ps: 2, workers: 2, etcd: inChartEtcd, inChartEtcd: 1, s3Secret: "tailor-s3"},
	{name: "production example", file: "examples/production-values.yaml", ps: 2, workers: 4, etcd: inChartEtcd, inChartEtcd: 3, tls: true, netpol: true, gossip: true, s3Secret: "tailor-s3"},
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	return c
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	if file == "" {
		return map[string]any{}
	}
	v, err := common.ReadValuesFile(filepath.Join(chartDir, file))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func render(t *testing.T, c *chart.Chart, vals map[string]any) *Objects {
	t.Helper()
	out, err := Release(t.Context(), c, release, namespace, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	objs, err := Decode(out)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return objs
}

func TestRender(t *testing.T) {
	c := loadChart(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, c, readValues(t, tc.file))
			checkNames(t, objs)
			checkParamServers(t, objs, tc)
			checkCoordinators(t, objs)
			checkWorkers(t, objs, tc)
			checkSubmit(t, objs, tc)
			checkClusterArgs(t, objs, tc)
			checkSecrets(t, objs, tc)
			checkProbes(t, objs)
			checkServices(t, objs)
			checkPDBs(t, objs, tc)
			checkNetworkPolicy(t, objs, tc)
			checkSecurity(t, objs)
			checkEtcd(t, objs, tc)
			checkSpread(t, objs)
			if !strings.Contains(objs.Notes, "tailor run") || strings.Contains(objs.Notes, "<no value>") {
				t.Errorf("NOTES.txt: %q", objs.Notes)
			}
		})
	}
}

// ---- finding things ----

func statefulSet(t *testing.T, objs *Objects, name string) *appsv1.StatefulSet {
	t.Helper()
	for _, s := range objs.StatefulSets {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no StatefulSet %s", name)
	return nil
}

func service(objs *Objects, name string) *corev1.Service {
	for _, s := range objs.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// tailorContainers are the containers running the tailor image, with the
// workload they are in.
func tailorContainers(objs *Objects) map[string]*corev1.Container {
	out := map[string]*corev1.Container{}
	for _, w := range objs.Workloads() {
		for i := range w.Template.Spec.Containers {
			c := &w.Template.Spec.Containers[i]
			if strings.Contains(c.Image, "tailor") && !strings.Contains(c.Image, "etcd") {
				out[w.Kind+"/"+w.Name+"/"+c.Name] = c
			}
		}
	}
	return out
}

// flagValues are the values of --name=value in args, in order.
func flagValues(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		} else if a == "--"+name {
			out = append(out, "")
		}
	}
	return out
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func fieldRef(t *testing.T, c *corev1.Container, env, path string) {
	t.Helper()
	e := envVar(c, env)
	if e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
		t.Errorf("container %s: env %s is %+v, want the downward API's %s", c.Name, env, e, path)
	}
}

func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// ---- checks ----

func checkNames(t *testing.T, objs *Objects) {
	for id, doc := range objs.Docs {
		if strings.Contains(doc, "<no value>") {
			t.Errorf("%s: <no value> in the output", id)
		}
	}
	for _, w := range objs.Workloads() {
		// a pod's name adds -NN (StatefulSet) or two hashes (Deployment, Job)
		if msgs := validation.IsDNS1123Label(w.Name + "-1234567890-12345"); len(msgs) > 0 {
			t.Errorf("%s %s: its pods' names are no DNS label: %v", w.Kind, w.Name, msgs)
		}
	}
	for _, s := range objs.Services {
		if msgs := validation.IsDNS1035Label(s.Name); len(msgs) > 0 {
			t.Errorf("Service %s: %v", s.Name, msgs)
		}
		for _, p := range s.Spec.Ports {
			if msgs := validation.IsValidPortName(p.Name); len(msgs) > 0 {
				t.Errorf("Service %s: port name %q: %v", s.Name, p.Name, msgs)
			}
		}
	}
	// what the API server validates beyond the types: names, label
	// values, port and variable names, Secret keys
	for _, w := range objs.Workloads() {
		if msgs := validation.IsDNS1123Subdomain(w.Name); len(msgs) > 0 {
			t.Errorf("%s %s: %v", w.Kind, w.Name, msgs)
		}
		for k, v := range w.Template.Labels {
			if msgs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(msgs) > 0 {
				t.Errorf("%s %s: label %s=%s: %v", w.Kind, w.Name, k, v, msgs)
			}
		}
		for _, c := range w.Template.Spec.Containers {
			seen := map[string]bool{}
			for _, p := range c.Ports {
				if msgs := validation.IsValidPortName(p.Name); len(msgs) > 0 || seen[p.Name] {
					t.Errorf("%s %s: container %s: port name %q: %v (or repeated)", w.Kind, w.Name, c.Name, p.Name, msgs)
				}
				seen[p.Name] = true
			}
			for _, e := range c.Env {
				if msgs := validation.IsEnvVarName(e.Name); len(msgs) > 0 {
					t.Errorf("%s %s: container %s: env %q: %v", w.Kind, w.Name, c.Name, e.Name, msgs)
				}
			}
		}
	}
	for _, s := range objs.Secrets {
		for k := range s.Data {
			if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
				t.Errorf("Secret %s: key %q: %v", s.Name, k, msgs)
			}
		}
	}
}

// The parameter servers are a StatefulSet of P pods, each server index
// the ordinal at the end of its pod's (host) name, advertising its stable
// DNS name under a headless Service.
func checkParamServers(t *testing.T, objs *Objects, tc renderCase) {
	sts := statefulSet(t, objs, fullname+"-paramserver")
	if got := replicas(sts.Spec.Replicas); got != tc.ps {
		t.Errorf("paramserver replicas: got %d, want %d", got, tc.ps)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("paramserver pod management: got %q, want Parallel (a run needs every server)", sts.Spec.PodManagementPolicy)
	}
	pod := sts.Spec.Template.Spec
	if pod.Hostname != "" || pod.Subdomain != "" || pod.SetHostnameAsFQDN != nil && *pod.SetHostnameAsFQDN {
		t.Errorf("paramserver pods' host name is changed (hostname %q, subdomain %q): the index comes from it", pod.Hostname, pod.Subdomain)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("paramserver pods: %d containers, want 1", len(pod.Containers))
	}
	c := &pod.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("paramserver command %q: want the image's entrypoint (tailor), no shell", c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "paramserver" {
		t.Fatalf("paramserver args %q", c.Args)
	}
	if got := flagValues(c.Args, "index"); len(got) != 0 {
		t.Errorf("paramserver has --index %q: every pod would be that server", got)
	}
	if got := flagValues(c.Args, "index-from-hostname"); len(got) != 1 {
		t.Errorf("paramserver args %q: want --index-from-hostname once", c.Args)
	}
	if e := envVar(c, "TAILOR_INDEX"); e != nil {
		t.Errorf("paramserver env TAILOR_INDEX=%+v: it would conflict with --index-from-hostname", e)
	}
	// pod i of the StatefulSet is named sts-i: the ordinal tailor reads
	// (cmd/tailor/cli hostOrdinal: the digits after the last dash)
	for i := range tc.ps {
		host := fmt.Sprintf("%s-%d", sts.Name, i)
		digits := host[strings.LastIndexByte(host, '-')+1:]
		if n, err := strconv.Atoi(digits); err != nil || n != int(i) {
			t.Errorf("pod %s: index %q, want %d", host, digits, i)
		}
	}
	svc := service(objs, sts.Spec.ServiceName)
	if svc == nil {
		t.Fatalf("paramserver serviceName %q: no such Service", sts.Spec.ServiceName)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: clusterIP %q, publishNotReadyAddresses %v; want a headless Service publishing every pod", svc.Name, svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
	}
	wantAdv := "$(POD_NAME)." + svc.Name + ".$(POD_NAMESPACE).svc.cluster.local"
	if got := flagValues(c.Args, "advertise"); len(got) != 1 || got[0] != wantAdv {
		t.Errorf("paramserver --advertise %q, want %q", got, wantAdv)
	}
	fieldRef(t, c, "POD_NAME", "metadata.name")
	fieldRef(t, c, "POD_NAMESPACE", "metadata.namespace")
	checkListen(t, c, true)
}

// the listeners a role's advertised name needs: fixed ports on 0.0.0.0
func checkListen(t *testing.T, c *corev1.Container, grpc bool) {
	t.Helper()
	want := map[string]string{"gossip": "0.0.0.0:7946", "metrics-listen": "0.0.0.0:9100"}
	if grpc {
		want["listen"] = "0.0.0.0:7000"
	}
	for flag, v := range want {
		if got := flagValues(c.Args, flag); len(got) != 1 || got[0] != v {
			t.Errorf("container %s: --%s %q, want %q", c.Name, flag, got, v)
		}
	}
	if !grpc && len(flagValues(c.Args, "listen")) != 0 {
		t.Errorf("container %s: --listen on a role without gRPC", c.Name)
	}
}

func checkCoordinators(t *testing.T, objs *Objects) {
	sts := statefulSet(t, objs, fullname+"-coordinator")
	if got := replicas(sts.Spec.Replicas); got != 2 {
		t.Errorf("coordinator replicas: got %d, want 2 (a leader and a standby)", got)
	}
	c := &sts.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "coordinator" {
		t.Fatalf("coordinator args %q", c.Args)
	}
	if got := flagValues(c.Args, "id"); len(got) != 1 || got[0] != "$(POD_NAME)" {
		t.Errorf("coordinator --id %q, want $(POD_NAME)", got)
	}
	svc := service(objs, sts.Spec.ServiceName)
	if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Fatalf("coordinator serviceName %q: no headless Service", sts.Spec.ServiceName)
	}
	wantAdv := "$(POD_NAME)." + svc.Name + ".$(POD_NAMESPACE).svc.cluster.local"
	if got := flagValues(c.Args, "advertise"); len(got) != 1 || got[0] != wantAdv {
		t.Errorf("coordinator --advertise %q, want %q", got, wantAdv)
	}
	fieldRef(t, c, "POD_NAME", "metadata.name")
	checkListen(t, c, true)
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || m.MountPath == "/out" && !m.ReadOnly
	}
	if !mounted {
		t.Errorf("coordinator: no writable /out (the run's --out)")
	}
}

func checkWorkers(t *testing.T, objs *Objects, tc renderCase) {
	if len(objs.Deployments) != 1 {
		t.Fatalf("%d Deployments, want 1 (the workers)", len(objs.Deployments))
	}
	d := objs.Deployments[0]
	if d.Name != fullname+"-worker" {
		t.Errorf("Deployment %s, want %s-worker", d.Name, fullname)
	}
	if got := replicas(d.Spec.Replicas); got != tc.workers {
		t.Errorf("worker replicas: got %d, want %d", got, tc.workers)
	}
	c := &d.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "worker" {
		t.Fatalf("worker args %q", c.Args)
	}
	if got := flagValues(c.Args, "id"); len(got) != 1 || got[0] != "$(POD_NAME)" {
		t.Errorf("worker --id %q, want $(POD_NAME)", got)
	}
	if got := flagValues(c.Args, "advertise"); len(got) != 1 || got[0] != "$(POD_IP)" {
		t.Errorf("worker --advertise %q, want $(POD_IP)", got)
	}
	fieldRef(t, c, "POD_NAME", "metadata.name")
	fieldRef(t, c, "POD_IP", "status.podIP")
	checkListen(t, c, false)
}

// The submit Job writes the spec with --ps = the parameter servers'
// replicas and the data under the bucket.
func checkSubmit(t *testing.T, objs *Objects, tc renderCase) {
	if len(objs.Jobs) != 1 {
		t.Fatalf("%d Jobs, want 1 (submit)", len(objs.Jobs))
	}
	j := objs.Jobs[0]
	if !strings.HasPrefix(j.Name, fullname+"-submit-") {
		t.Errorf("Job %s", j.Name)
	}
	if p := j.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		t.Errorf("submit restartPolicy %q", p)
	}
	c := &j.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "submit" {
		t.Fatalf("submit args %q", c.Args)
	}
	if got := flagValues(c.Args, "ps"); len(got) != 1 || got[0] != strconv.Itoa(int(tc.ps)) {
		t.Errorf("submit --ps %q, want %d (the parameter servers' replicas)", got, tc.ps)
	}
	if got := flagValues(c.Args, "data"); len(got) != 1 || !strings.HasPrefix(got[0], "s3://tailor/") {
		t.Errorf("submit --data %q, want s3://tailor/...", got)
	}
	run := flagValues(c.Args, "run")
	if got := flagValues(c.Args, "out"); len(got) != 1 || len(run) != 1 || got[0] != "/out/"+run[0] {
		t.Errorf("submit --out %q, want /out/RUN (the coordinators' volume)", got)
	}
}

// Every tailor container gets --etcd and --run once, the same in all.
func checkClusterArgs(t *testing.T, objs *Objects, tc renderCase) {
	runs := map[string]bool{}
	for id, c := range tailorContainers(objs) {
		etcd, run := flagValues(c.Args, "etcd"), flagValues(c.Args, "run")
		if len(etcd) != 1 || etcd[0] != tc.etcd {
			t.Errorf("%s: --etcd %q, want %q", id, etcd, tc.etcd)
		}
		if len(run) != 1 || run[0] == "" {
			t.Errorf("%s: --run %q", id, run)
		} else {
			runs[run[0]] = true
		}
		for _, name := range []string{"TAILOR_ETCD", "TAILOR_RUN"} {
			if envVar(c, name) != nil {
				t.Errorf("%s: env %s as well as the flag", id, name)
			}
		}
	}
	if len(runs) != 1 {
		t.Errorf("run ids %v: want one for every container", runs)
	}
}

var secretEnv = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "TAILOR_ETCD_PASSWORD", "TAILOR_ETCD_USER"}

// Secrets are referenced, never inlined: credentials come by secretKeyRef,
// key files from secret volumes, and every Secret referenced is rendered
// or named in the values; the values given for the chart's own Secrets
// appear in no other object.
func checkSecrets(t *testing.T, objs *Objects, tc renderCase) {
	rendered := map[string]*corev1.Secret{}
	for _, s := range objs.Secrets {
		rendered[s.Name] = s
	}
	known := func(name string) bool {
		if rendered[name] != nil {
			return true
		}
		// Secrets the values name, made outside the chart
		for _, n := range []string{"tailor-s3", "tailor-etcd-client", "tailor-etcd-user", "minio-ca", "tailor-tls", "tailor-gossip"} {
			if name == n {
				return true
			}
		}
		return false
	}
	for id, c := range tailorContainers(objs) {
		for _, e := range c.Env {
			if slices.Contains(secretEnv, e.Name) {
				if e.Value != "" {
					t.Errorf("%s: env %s has a literal value", id, e.Name)
				}
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Errorf("%s: env %s not from a Secret", id, e.Name)
				} else if !known(e.ValueFrom.SecretKeyRef.Name) {
					t.Errorf("%s: env %s from Secret %q, which is neither rendered nor named in the values", id, e.Name, e.ValueFrom.SecretKeyRef.Name)
				}
			}
			if strings.Contains(e.Name, "PASSWORD") && !strings.HasSuffix(e.Name, "_FILE") {
				t.Errorf("%s: env %s: a password goes in a file", id, e.Name)
			}
		}
		ak := envVar(c, "AWS_ACCESS_KEY_ID")
		if ak == nil || ak.ValueFrom == nil || ak.ValueFrom.SecretKeyRef == nil || ak.ValueFrom.SecretKeyRef.Name != tc.s3Secret {
			t.Errorf("%s: AWS_ACCESS_KEY_ID %+v, want from Secret %s", id, ak, tc.s3Secret)
		}
		if tc.tls {
			for _, n := range []string{"TAILOR_TLS_CA", "TAILOR_TLS_CERT", "TAILOR_TLS_KEY"} {
				e := envVar(c, n)
				if e == nil || !strings.HasPrefix(e.Value, "/etc/tailor/tls/") {
					t.Errorf("%s: %s = %+v, want a file of the tls volume", id, n, e)
				}
			}
		} else if envVar(c, "TAILOR_TLS_CA") != nil {
			t.Errorf("%s: TLS env with tls off", id)
		}
		if tc.wantEtcdAuth {
			for _, n := range []string{"TAILOR_ETCD_CA", "TAILOR_ETCD_CERT", "TAILOR_ETCD_KEY", "TAILOR_ETCD_PASSWORD_FILE", "TAILOR_ETCD_USER"} {
				if envVar(c, n) == nil {
					t.Errorf("%s: no %s with external etcd over TLS with a user", id, n)
				}
			}
		}
		if gossip := envVar(c, "TAILOR_GOSSIP_KEY_FILE"); tc.gossip != (gossip != nil) {
			t.Errorf("%s: TAILOR_GOSSIP_KEY_FILE %+v with gossip.enabled %v", id, gossip, tc.gossip)
		}
	}
	// every file path an env var names is in a mounted volume
	for _, w := range objs.Workloads() {
		vols := map[string]corev1.Volume{}
		for _, v := range w.Template.Spec.Volumes {
			vols[v.Name] = v
			if v.Secret != nil && !known(v.Secret.SecretName) {
				t.Errorf("%s %s: volume %s from Secret %q, neither rendered nor named in the values", w.Kind, w.Name, v.Name, v.Secret.SecretName)
			}
		}
		for _, c := range w.Template.Spec.Containers {
			for _, m := range c.VolumeMounts {
				if _, ok := vols[m.Name]; !ok && !hasClaimTemplate(objs, w, m.Name) {
					t.Errorf("%s %s: container %s mounts %q, which is no volume", w.Kind, w.Name, c.Name, m.Name)
				}
			}
			for _, e := range c.Env {
				if !strings.HasPrefix(e.Value, "/etc/tailor/") {
					continue
				}
				ok := false
				for _, m := range c.VolumeMounts {
					ok = ok || strings.HasPrefix(e.Value, m.MountPath+"/")
				}
				if !ok {
					t.Errorf("%s %s: env %s=%s is in no mounted volume", w.Kind, w.Name, e.Name, e.Value)
				}
			}
		}
	}
	for _, s := range objs.Secrets {
		if len(s.StringData) > 0 {
			t.Errorf("Secret %s: stringData; want data", s.Name)
		}
	}
	for _, leak := range tc.leaks {
		found := false
		for id, doc := range objs.Docs {
			if !strings.Contains(doc, leak) {
				continue
			}
			if strings.Contains(doc, "\nkind: Secret\n") {
				t.Errorf("%s: %q in a Secret as plain text (want base64 data)", id, leak)
			} else {
				t.Errorf("%s: holds the secret value %q", id, leak)
			}
		}
		for _, s := range objs.Secrets {
			for _, v := range s.Data {
				found = found || strings.Contains(string(v), leak)
			}
		}
		if !found {
			t.Errorf("secret value %q is in no Secret", leak)
		}
	}
}

func hasClaimTemplate(objs *Objects, w Workload, name string) bool {
	if w.Kind != "StatefulSet" {
		return false
	}
	for _, s := range objs.StatefulSets {
		if s.Name == w.Name {
			for _, c := range s.Spec.VolumeClaimTemplates {
				if c.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// portDeclared reports whether p names or numbers a port c declares.
func portDeclared(c *corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP
		}
	}
	return false
}

// Every long-running container has liveness and readiness probes, on a
// port it declares; tailor's on /healthz and /readyz.
func checkProbes(t *testing.T, objs *Objects) {
	for _, w := range objs.Workloads() {
		if w.Kind == "Job" {
			continue
		}
		for i := range w.Template.Spec.Containers {
			c := &w.Template.Spec.Containers[i]
			for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s %s: container %s: no HTTP %s probe", w.Kind, w.Name, c.Name, kind)
					continue
				}
				if !portDeclared(c, p.HTTPGet.Port) {
					t.Errorf("%s %s: container %s: %s probe on port %s, which the container does not declare", w.Kind, w.Name, c.Name, kind, p.HTTPGet.Port.String())
				}
				want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[kind]
				if kind == "liveness" && strings.Contains(c.Image, "etcd") {
					want = "/livez"
				}
				if p.HTTPGet.Path != want {
					t.Errorf("%s %s: container %s: %s probe path %q, want %q", w.Kind, w.Name, c.Name, kind, p.HTTPGet.Path, want)
				}
			}
			if !strings.Contains(c.Image, "etcd") {
				if got := flagValues(c.Args, "metrics-listen"); len(got) != 1 || !strings.HasSuffix(got[0], ":9100") {
					t.Errorf("%s %s: probes on 9100 but --metrics-listen %q", w.Kind, w.Name, got)
				}
			}
		}
	}
}

// Every Service selects pods of one workload, on ports they declare.
func checkServices(t *testing.T, objs *Objects) {
	for _, s := range objs.Services {
		var matched []Workload
		for _, w := range objs.Workloads() {
			if selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, w.Template.Labels) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			t.Errorf("Service %s selects %d workloads, want 1", s.Name, len(matched))
			continue
		}
		c := &matched[0].Template.Spec.Containers[0]
		for _, p := range s.Spec.Ports {
			if !portDeclared(c, p.TargetPort) {
				t.Errorf("Service %s: port %s targets %s, which %s does not declare", s.Name, p.Name, p.TargetPort.String(), matched[0].Name)
			}
		}
	}
	for _, sts := range objs.StatefulSets {
		s := service(objs, sts.Spec.ServiceName)
		if s == nil || !selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, sts.Spec.Template.Labels) {
			t.Errorf("StatefulSet %s: serviceName %q is no Service of its pods", sts.Name, sts.Spec.ServiceName)
		}
		if !selects(t, sts.Spec.Selector, sts.Spec.Template.Labels) {
			t.Errorf("StatefulSet %s: selector does not match its pods", sts.Name)
		}
	}
	for _, d := range objs.Deployments {
		if !selects(t, d.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("Deployment %s: selector does not match its pods", d.Name)
		}
	}
}

// Each PodDisruptionBudget selects the pods of exactly its workload.
func checkPDBs(t *testing.T, objs *Objects, tc renderCase) {
	want := map[string]bool{}
	if tc.netpol { // the no-NetworkPolicy case turns the PDBs off too
		want[fullname+"-coordinator"] = true
		want[fullname+"-paramserver"] = true
		if tc.inChartEtcd > 1 {
			want[fullname+"-etcd"] = true
		}
	}
	got := map[string]bool{}
	for _, p := range objs.PDBs {
		got[p.Name] = true
		var matched []string
		for _, w := range objs.Workloads() {
			if selects(t, p.Spec.Selector, w.Template.Labels) {
				matched = append(matched, w.Name)
			}
		}
		if len(matched) != 1 || matched[0] != p.Name {
			t.Errorf("PDB %s selects the pods of %v, want %s's only", p.Name, matched, p.Name)
		}
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("PDB %s: maxUnavailable %v, want 1", p.Name, p.Spec.MaxUnavailable)
		}
	}
	for n := range want {
		if !got[n] {
			t.Errorf("no PodDisruptionBudget %s", n)
		}
	}
	for n := range got {
		if !want[n] {
			t.Errorf("unexpected PodDisruptionBudget %s", n)
		}
	}
}

// The NetworkPolicy selects every pod of the release and lets in only pods
// of the release (and what extraIngress adds); it selects no pod of
// another release.
func checkNetworkPolicy(t *testing.T, objs *Objects, tc renderCase) {
	if !tc.netpol {
		if len(objs.NetworkPolicies) != 0 {
			t.Errorf("%d NetworkPolicies with networkPolicy.enabled false", len(objs.NetworkPolicies))
		}
		return
	}
	if len(objs.NetworkPolicies) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(objs.NetworkPolicies))
	}
	np := objs.NetworkPolicies[0]
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes %v, want [Ingress]", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) == 0 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector == nil ||
		np.Spec.Ingress[0].From[0].NamespaceSelector != nil || np.Spec.Ingress[0].From[0].IPBlock != nil || len(np.Spec.Ingress[0].Ports) != 0 {
		t.Fatalf("first ingress rule %+v: want from the release's pods, every port", np.Spec.Ingress)
	}
	from := np.Spec.Ingress[0].From[0].PodSelector
	for _, w := range objs.Workloads() {
		if !selects(t, &np.Spec.PodSelector, w.Template.Labels) {
			t.Errorf("NetworkPolicy does not select %s %s's pods", w.Kind, w.Name)
		}
		if !selects(t, from, w.Template.Labels) {
			t.Errorf("NetworkPolicy does not let in %s %s's pods", w.Kind, w.Name)
		}
	}
	other := map[string]string{"app.kubernetes.io/name": "tailor", "app.kubernetes.io/instance": "other", "app.kubernetes.io/component": "worker"}
	if selects(t, &np.Spec.PodSelector, other) || selects(t, from, other) {
		t.Errorf("NetworkPolicy selects or lets in another release's pods")
	}
	if selects(t, from, map[string]string{}) {
		t.Errorf("NetworkPolicy lets in any pod")
	}
}

// Non-root, no privilege escalation, no capabilities, a read-only root
// file system; resources with requests and a memory limit.
func checkSecurity(t *testing.T, objs *Objects) {
	for _, w := range objs.Workloads() {
		ps := w.Template.Spec.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
			t.Errorf("%s %s: pod securityContext %+v: want runAsNonRoot and a non-zero user", w.Kind, w.Name, ps)
		}
		if a := w.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s %s: a service account token is mounted", w.Kind, w.Name)
		}
		for _, c := range w.Template.Spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s %s: container %s securityContext %+v", w.Kind, w.Name, c.Name, sc)
			}
			if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
				t.Errorf("%s %s: container %s has no CPU request", w.Kind, w.Name, c.Name)
			}
			if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
				t.Errorf("%s %s: container %s has no memory request", w.Kind, w.Name, c.Name)
			}
			if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
				t.Errorf("%s %s: container %s has no memory limit", w.Kind, w.Name, c.Name)
			}
			if c.Image == "" || strings.HasSuffix(c.Image, ":") {
				t.Errorf("%s %s: container %s image %q", w.Kind, w.Name, c.Name, c.Image)
			}
		}
	}
}

// The in-chart etcd: a StatefulSet of 1 or 3 members started together,
// each in --initial-cluster under its stable name; none with external etcd.
func checkEtcd(t *testing.T, objs *Objects, tc renderCase) {
	var sts *appsv1.StatefulSet
	for _, s := range objs.StatefulSets {
		if s.Name == fullname+"-etcd" {
			sts = s
		}
	}
	if tc.inChartEtcd == 0 {
		if sts != nil {
			t.Errorf("an etcd StatefulSet with external etcd")
		}
		return
	}
	if sts == nil {
		t.Fatal("no etcd StatefulSet")
	}
	if got := replicas(sts.Spec.Replicas); got != tc.inChartEtcd {
		t.Errorf("etcd replicas %d, want %d", got, tc.inChartEtcd)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("etcd pod management %q, want Parallel (a new cluster needs its quorum)", sts.Spec.PodManagementPolicy)
	}
	headless := service(objs, sts.Spec.ServiceName)
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("etcd serviceName %q: want a headless Service publishing not-ready pods", sts.Spec.ServiceName)
	}
	c := &sts.Spec.Template.Spec.Containers[0]
	initial := flagValues(c.Args, "initial-cluster")
	if len(initial) != 1 {
		t.Fatalf("etcd --initial-cluster %q", initial)
	}
	members := strings.Split(initial[0], ",")
	if len(members) != int(tc.inChartEtcd) {
		t.Errorf("etcd --initial-cluster has %d members, want %d", len(members), tc.inChartEtcd)
	}
	for i, m := range members {
		want := fmt.Sprintf("%s-%d=http://%s-%d.%s.ml.svc.cluster.local:2380", sts.Name, i, sts.Name, i, headless.Name)
		if m != want {
			t.Errorf("etcd member %d: %q, want %q", i, m, want)
		}
	}
	if got := flagValues(c.Args, "name"); len(got) != 1 || got[0] != "$(POD_NAME)" {
		t.Errorf("etcd --name %q, want $(POD_NAME)", got)
	}
	client := service(objs, fullname+"-etcd")
	if client == nil || !strings.HasPrefix(tc.etcd, "http://"+client.Name+".ml.svc.cluster.local:") {
		t.Errorf("the roles' --etcd %q is not the etcd client Service", tc.etcd)
	}
}

// ---- lint, and values the chart must refuse ----

// helm lint's checks, through its library, for each values file.
func TestLint(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := lint.RunAll(chartDir, readValues(t, tc.file), namespace)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
		})
	}
}

func TestChartMetadata(t *testing.T) {
	c := loadChart(t)
	if c.Metadata.APIVersion != chart.APIVersionV2 {
		t.Errorf("apiVersion %q, want v2", c.Metadata.APIVersion)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	if c.Metadata.KubeVersion == "" {
		t.Error("Chart.yaml has no kubeVersion")
	}
	// the defaults and the schema-free values must coalesce without complaint
	if _, err := util.CoalesceValues(c, map[string]any{}); err != nil {
		t.Error(err)
	}
}

// Values the chart must refuse, with a message that says what to give.
func TestRefused(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		name string
		vals string
		want string
	}{
		{"external etcd without endpoints", "etcd: {enabled: false}", "give etcd.external.endpoints"},
		{"TLS without a certificate", "tls: {enabled: true}", "give tls.existingSecret"},
		{"no S3 credentials", "s3: {credentials: {existingSecret: ''}}", "s3.credentials"},
		{"half the S3 credentials", "s3: {credentials: {existingSecret: '', accessKeyId: x}}", "s3.credentials"},
		// values.schema.json
		{"two etcd members", "etcd: {replicas: 2}", "/etcd/replicas"},
		{"no parameter server", "paramserver: {replicas: 0}", "/paramserver/replicas"},
		{"no run id", "run: {id: ''}", "/run/id"},
		{"an unknown mode", "run: {mode: lockstep}", "/run/mode"},
		{"a misspelt section", "paramservers: {replicas: 4}", "paramservers"},
		{"a misspelt key", "worker: {replica: 4}", "replica"},
		{"a number as a string", "worker: {replicas: '4'}", "/worker/replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals, err := common.ReadValues([]byte(tc.vals))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Release(t.Context(), c, release, namespace, vals)
			t.Logf("refused: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render: %v; want an error with %q", err, tc.want)
			}
		})
	}
}

// Coordinators, parameter servers and etcd members prefer separate nodes:
// each StatefulSet's anti-affinity selects its own pods, and only them.
func checkSpread(t *testing.T, objs *Objects) {
	for _, sts := range objs.StatefulSets {
		a := sts.Spec.Template.Spec.Affinity
		if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
			t.Errorf("StatefulSet %s: affinity %+v, want a preferred pod anti-affinity", sts.Name, a)
			continue
		}
		term := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
		if term.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("StatefulSet %s: anti-affinity over %q, want nodes", sts.Name, term.TopologyKey)
		}
		for _, w := range objs.Workloads() {
			if got, want := selects(t, term.LabelSelector, w.Template.Labels), w.Name == sts.Name; got != want {
				t.Errorf("StatefulSet %s: anti-affinity selects %s %s's pods: %v, want %v", sts.Name, w.Kind, w.Name, got, want)
			}
		}
	}
}

// An affinity in the values replaces the default spreading.
func TestAffinityFromValues(t *testing.T) {
	vals, err := common.ReadValues([]byte(`coordinator:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{key: pool, operator: In, values: [cpu]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	objs := render(t, loadChart(t), vals)
	a := statefulSet(t, objs, fullname+"-coordinator").Spec.Template.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.PodAntiAffinity != nil {
		t.Errorf("coordinator affinity %+v, want the values' node affinity only", a)
	}
	if a := statefulSet(t, objs, fullname+"-paramserver").Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
		t.Errorf("paramserver affinity %+v, want the default spreading", a)
	}
}
