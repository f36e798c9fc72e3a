package model

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The weighted loss is PyTorch's BCEWithLogitsLoss(pos_weight=p), value
// and gradient, computed by PyTorch itself.
func TestPosWeightMatchesTorch(t *testing.T) {
	requireTorch(t)
	rng := rand.New(rand.NewPCG(7, 8))
	n, l := 6, 4
	z := randData(rng, n*l, 4)
	y := make([]float32, n*l)
	for i := range y {
		if rng.IntN(3) == 0 {
			y[i] = 1
		}
	}
	w := []float32{1, 12.5, 0.25, 3}
	g := G.NewGraph()
	zn := G.NewTensor(g, tensor.Float32, 2, G.WithShape(n, l), G.WithName("z"), G.WithValue(tensor.New(tensor.WithShape(n, l), tensor.WithBacking(z))))
	yn := G.NewTensor(g, tensor.Float32, 2, G.WithShape(n, l), G.WithName("y"), G.WithValue(tensor.New(tensor.WithShape(n, l), tensor.WithBacking(y))))
	op := newBCELoss(n, l, &runMode{posWeight: w})
	loss, err := G.ApplyOp(op, zn, yn)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(loss, zn)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	dz, _ := f32(grads[0].Value(), n*l, "grad")

	in, _ := json.Marshal(map[string]any{"z": z, "y": y, "w": w, "n": n, "l": l})
	const script = `
import json, sys, torch
d = json.load(sys.stdin)
z = torch.tensor(d["z"], dtype=torch.float64).reshape(d["n"], d["l"]).requires_grad_()
y = torch.tensor(d["y"], dtype=torch.float64).reshape(d["n"], d["l"])
w = torch.tensor(d["w"], dtype=torch.float64)
loss = torch.nn.BCEWithLogitsLoss(pos_weight=w)(z, y)
loss.backward()
print(json.dumps({"loss": loss.item(), "dz": z.grad.reshape(-1).tolist()}))
`
	cmd := exec.Command(torchPython, "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pytorch: %v", err)
	}
	var ref struct {
		Loss float64   `json:"loss"`
		DZ   []float64 `json:"dz"`
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatalf("pytorch output %q: %v", out, err)
	}
	if math.Abs(op.loss-ref.Loss) > 1e-6 {
		t.Errorf("loss %.9g, PyTorch %.9g", op.loss, ref.Loss)
	}
	for i := range dz {
		if d := math.Abs(float64(dz[i]) - ref.DZ[i]); d > 1e-6 {
			t.Errorf("dz[%d] = %.9g, PyTorch %.9g", i, dz[i], ref.DZ[i])
		}
	}
}
