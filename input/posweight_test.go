package input

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPosWeight(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "w.csv")
	os.WriteFile(good, []byte("label,weight\nbag,4\n# a comment\nred, 0.5\n"), 0o644)
	stray := filepath.Join(dir, "stray.csv")
	os.WriteFile(stray, []byte("bag,4\nhat,2\n"), 0o644)
	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte("bag,-1\n"), 0o644)
	labels := []string{"bag", "blue", "red"}
	counts := []int64{2, 50, 0}
	for _, c := range []struct {
		flag    string
		want    []float32
		setErr  string
		mathErr string
	}{
		{flag: "none", want: nil},
		{flag: "auto", want: []float32{49, 1, 1}}, // 98/2; half and half; never present
		{flag: good, want: []float32{4, 1, 0.5}},
		{flag: stray, mathErr: `label "hat" is not one of the model's`},
		{flag: bad, setErr: "want a positive number"},
		{flag: filepath.Join(dir, "missing.csv"), setErr: "want none, auto or a file"},
	} {
		var p PosWeight
		err := p.Set(c.flag)
		if c.setErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.setErr) {
				t.Errorf("Set(%q) = %v, want %q", c.flag, err, c.setErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Set(%q): %v", c.flag, err)
		}
		if p.String() != c.flag {
			t.Errorf("Set(%q).String() = %q", c.flag, p.String())
		}
		w, err := p.For(labels, counts, 100)
		if c.mathErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.mathErr) {
				t.Errorf("%s: For = %v, want %q", c.flag, err, c.mathErr)
			}
			continue
		}
		if err != nil || !slices.Equal(w, c.want) {
			t.Errorf("%s: For = %v, %v; want %v", c.flag, w, err, c.want)
		}
	}
}
