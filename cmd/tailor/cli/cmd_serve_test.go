package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestServeUsageErrors(t *testing.T) {
	t.Setenv("TAILOR_RUN", "")
	t.Setenv("TAILOR_ETCD", "")
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
		{[]string{"--model", "m", "--listen", "nowhere"}, 1, "nowhere"},
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
