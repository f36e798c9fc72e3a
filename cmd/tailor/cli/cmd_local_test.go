package cli

import (
	"strings"
	"testing"
)

// tailor local's flags reach localcluster.Config: settings that cannot
// work are refused before anything starts (exit status 1, the setting
// named), and a flag error is a usage error.
func TestLocalCommandFlags(t *testing.T) {
	out := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--workers", "0"}, 1, "workers 0: want at least 1"},
		{[]string{"--restart-limit", "-1"}, 1, "restart limit -1"},
		{[]string{"--restart-window", "0s"}, 1, "restart window 0s"},
		{[]string{"--store", "gcs"}, 1, `store "gcs": want s3 or file`},
		{[]string{"--workers", "many"}, 2, "invalid value"},
	} {
		code, _, errs := runCLI(t, append([]string{"local", "--out", out}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("tailor local %q: exit %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	code, stdout, _ := runCLI(t, "local", "--help")
	if code != 0 || !strings.Contains(stdout, "-restart-limit int") || !strings.Contains(stdout, `(default "out/local")`) {
		t.Errorf("tailor local --help: exit %d\n%s", code, stdout)
	}
}
