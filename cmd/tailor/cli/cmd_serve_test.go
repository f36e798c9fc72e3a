package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailorml/tailor/model"
)

func TestServeUsageErrors(t *testing.T) {
	t.Setenv("TAILOR_RUN", "")
	t.Setenv("TAILOR_ETCD", "")
	cfg := model.DefaultConfig(16, 2)
	cfg.Dense = 8
	net, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "model.tailor")
	b := &model.Bundle{Net: net, Labels: []string{"a", "b"}, Mean: []float32{0, 0, 0}, Std: []float32{1, 1, 1}, Thresholds: []float32{0.5, 0.5}}
	if err := b.Save(good); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{[]string{"--help"}, 0, "Open Inference Protocol"},
		{nil, 2, "want --model FILE, or --run R and --etcd E"},
		{[]string{"--run", "r"}, 2, "want --model FILE, or --run R and --etcd E"},
		{[]string{"--model", "m", "extra"}, 2, "unexpected arguments"},
		{[]string{"--model", "m", "--max-batch", "0"}, 1, "max batch 0"},
		{[]string{"--model", "m", "--tls-ca", "ca.pem"}, 1, "mutual TLS needs"},
		{[]string{"--model", "/nonexistent/model.tailor", "--listen", "127.0.0.1:0"}, 1, "no such file"},
		{[]string{"--model", good, "--listen", "nowhere"}, 1, "nowhere"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := RunContext(context.Background(), append([]string{"serve"}, tt.args...), &out, &errb)
			if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.want) {
				t.Errorf("exit %d (want %d), output lacks %q:\n%s%s", code, tt.code, tt.want, out.String(), errb.String())
			}
		})
	}
}
