package charttest

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var dumpDir = flag.String("dump", "", "write each case's rendered manifests to `dir`/CASE/ (go test -run TestDump -dump DIR)")

// TestDump writes what the chart renders for every case, as helm template
// would, for reading; it does nothing without -dump.
func TestDump(t *testing.T) {
	if *dumpDir == "" {
		t.Skip("no -dump directory")
	}
	c := loadChart(t)
	for _, tc := range cases {
		out, err := Release(t.Context(), c, release, namespace, readValues(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		dir := filepath.Join(*dumpDir, strings.ReplaceAll(tc.name, " ", "-"))
		for name, text := range out {
			p := filepath.Join(dir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
