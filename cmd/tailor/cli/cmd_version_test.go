package cli

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/tailorml/tailor/internal/version"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
)

func TestVersionCommand(t *testing.T) {
	code, text, errs := run(t, "version")
	if code != 0 || errs != "" {
		t.Fatalf("version: exit %d, stderr %q", code, errs)
	}
	want := version.Get()
	want.Kernels.Vec = model.VecKernels()
	switch want.Kernels.Vec {
	case "avx2", "avx", "go":
	default:
		t.Errorf("vec kernels %q", want.Kernels.Vec)
	}
	for _, s := range []string{"tailor " + want.String() + "\n", "version  " + want.Version, "go       " + want.Go + " " + want.Platform,
		"wire     protocol " + strconv.Itoa(wire.ProtocolVersion), "blas     " + model.BLAS + " (" + model.BLASCore() + ")",
		"kernels  vec " + want.Kernels.Vec + ", adam " + want.Kernels.Adam} {
		if !strings.Contains(text, s) {
			t.Errorf("version output lacks %q:\n%s", s, text)
		}
	}
	if code, same, _ := run(t, "--version"); code != 0 || same != text {
		t.Errorf("--version: exit %d\n%s\nwant what version printed:\n%s", code, same, text)
	}

	for _, args := range [][]string{{"version", "--json"}, {"--version", "--json"}} {
		code, js, errs := run(t, args...)
		var got version.Info
		if err := json.Unmarshal([]byte(js), &got); code != 0 || err != nil {
			t.Fatalf("%q: exit %d, %v\n%s%s", args, code, err, js, errs)
		}
		want.BLAS, want.BLASCore = model.BLAS, model.BLASCore()
		if got != want {
			t.Errorf("%q: got %+v\nwant %+v", args, got, want)
		}
	}
	if code, _, errs := run(t, "version", "extra"); code != 2 || !strings.Contains(errs, "unexpected arguments") {
		t.Errorf("version extra: exit %d, stderr %q", code, errs)
	}
}
