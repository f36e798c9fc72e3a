package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tailorml/tailor/internal/netspec"
	"github.com/tailorml/tailor/internal/wire"
	"github.com/tailorml/tailor/model"
)

// TestLocalClusterCompressed trains a sync run with compressed pushes
// (`tailor local --compression fp16|topk`): the run completes, and every
// worker's "run done" line reports its pushes' payload bytes, which are
// exactly 2 bytes a Param float and 4 a State float with fp16, and under a
// quarter of the float32 bytes with top-k 0.1.
func TestLocalClusterCompressed(t *testing.T) {
	bin := buildTailor(t)
	data := testShards(t, 24)
	for _, comp := range []string{"fp16", "topk"} {
		t.Run(comp, func(t *testing.T) {
			out := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "local", "--verbose", "--out", out, "--data", data, "--workers", "2", "--ps", "2",
				"--epochs", "2", "--batch", "8", "--mode", "sync", "--compression", comp, "--topk", "0.1")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("tailor local: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), "run local finished") || !strings.Contains(stdout.String(), "mAP") {
				t.Errorf("output lacks the finish and the test mAP:\n%s", stdout.String())
			}
			wantEpochs(t, out, 2)
			b, err := model.Load(filepath.Join(out, "run", "model.tailor"))
			if err != nil {
				t.Fatal(err)
			}
			spec, _ := netspec.Tensors(b.Net)
			var params, state int
			for _, tt := range spec {
				if tt.Kind == wire.Param {
					params += tt.Size
				} else {
					state += tt.Size
				}
			}
			re := regexp.MustCompile(`msg="run done".* compression=(\w+) push_bytes=\d+ pushes=(\d+) push_bytes_per_step=(\d+)`)
			ms := re.FindAllStringSubmatch(stderr.String(), -1)
			if len(ms) != 2 {
				t.Fatalf("%d workers' \"run done\" lines with push bytes, want 2:\n%s", len(ms), stderr.String())
			}
			for _, m := range ms {
				pushes, _ := strconv.Atoi(m[2])
				perStep, _ := strconv.Atoi(m[3])
				if m[1] != comp || pushes == 0 {
					t.Errorf("a worker reports compression %s and %d pushes, want %s and some", m[1], pushes, comp)
				}
				switch float32Bytes := 4 * (params + state); comp {
				case "fp16":
					if want := 2*params + 4*state; perStep != want {
						t.Errorf("fp16: %d bytes a push, want %d (float32: %d)", perStep, want, float32Bytes)
					}
				case "topk":
					if perStep == 0 || perStep > float32Bytes/4 {
						t.Errorf("topk: %d bytes a push, want 1..%d (float32: %d)", perStep, float32Bytes/4, float32Bytes)
					}
				}
				t.Logf("%s: %d bytes a push (float32: %d)", comp, perStep, 4*(params+state))
			}
		})
	}
}
