package charttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// The certificate deploy/README.md and values.yaml describe — one pair
// with *.<fullname>-coordinator.<namespace>.svc.<domain> and
// *.<fullname>-paramserver.<namespace>.svc.<domain> — is valid, in Go's
// TLS verification, for every name a coordinator or parameter server pod
// publishes (its --advertise, expanded as the kubelet does).
func TestWildcardCertificateNamesThePods(t *testing.T) {
	objs := render(t, loadChart(t), readValues(t, "ci/scale-values.yaml"))
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "tailor"},
		DNSNames: []string{
			"*." + fullname + "-coordinator." + namespace + ".svc.cluster.local",
			"*." + fullname + "-paramserver." + namespace + ".svc.cluster.local",
		},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	checked := 0
	for _, sts := range objs.StatefulSets {
		if strings.HasSuffix(sts.Name, "-etcd") {
			continue
		}
		c := &sts.Spec.Template.Spec.Containers[0]
		for i := range replicas(sts.Spec.Replicas) {
			vals := map[string]string{"POD_NAME": fmt.Sprintf("%s-%d", sts.Name, i), "POD_NAMESPACE": namespace}
			args, err := expand(c, flagArgs(c.Args, "advertise"), vals)
			if err != nil || len(args) != 1 {
				t.Fatalf("%s: --advertise %q: %v", sts.Name, args, err)
			}
			host := strings.TrimPrefix(args[0], "--advertise=")
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("%s pod %d publishes %s: %v", sts.Name, i, host, err)
				}
			}
			checked++
		}
	}
	if checked != 2+4 {
		t.Errorf("checked %d pods, want 6 (2 coordinators, 4 servers)", checked)
	}
	// and not for another release's or namespace's servers
	for _, host := range []string{"other-tailor-paramserver-0.other-tailor-paramserver.ml.svc.cluster.local",
		fullname + "-paramserver-0." + fullname + "-paramserver.prod.svc.cluster.local"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err == nil {
			t.Errorf("the certificate is valid for %s", host)
		}
	}
}

// flagArgs are the arguments that set --name.
func flagArgs(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if strings.HasPrefix(a, "--"+name+"=") {
			out = append(out, a)
		}
	}
	return out
}
