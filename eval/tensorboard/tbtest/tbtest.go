// Package tbtest reads TensorBoard event files in tests with tools tailor
// did not write: Debian's protoc compiles TensorBoard's own event.proto and
// summary.proto (eval/tensorboard/testdata/proto) to Python, and
// python3-protobuf parses every record after a Python script has checked
// its masked CRC-32Cs.
package tbtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/tailorml/tailor/eval/tensorboard"
)

// testdata is eval/tensorboard/testdata, found from this file's path.
func testdata(tb testing.TB) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("tbtest: cannot find its own source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

// Python returns a python3 that imports google.protobuf and the path of
// protoc, or skips the test saying which is missing.
func Python(tb testing.TB) (python, protoc string) {
	tb.Helper()
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		tb.Skip("protoc not found (Debian: apt-get install protobuf-compiler): cannot check event files with TensorBoard's protos")
	}
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import google.protobuf").Run() == nil {
			return path, protoc
		}
	}
	tb.Skip("no python3 with the protobuf module (Debian: apt-get install python3-protobuf): cannot check event files with TensorBoard's protos")
	return "", ""
}

// ReadWithPython compiles TensorBoard's protos with protoc and reads the
// event file at path with python3-protobuf, checking every record's CRCs.
// It skips the test when protoc or python3-protobuf is missing, and fails
// it if the file does not read.
func ReadWithPython(tb testing.TB, path string) []tensorboard.Event {
	tb.Helper()
	evs, err := TryReadWithPython(tb, path)
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

// TryReadWithPython is ReadWithPython returning the python reader's
// refusal as an error (for tests of corrupt files).
func TryReadWithPython(tb testing.TB, path string) ([]tensorboard.Event, error) {
	tb.Helper()
	python, protoc := Python(tb)
	td := testdata(tb)
	gen := tb.TempDir()
	protos, err := filepath.Glob(filepath.Join(td, "proto", "tensorboard", "compat", "proto", "*.proto"))
	if err != nil || len(protos) == 0 {
		tb.Fatalf("tbtest: TensorBoard's protos under %s: %v", td, err)
	}
	args := []string{"-I", filepath.Join(td, "proto"), "--python_out", gen}
	for _, p := range protos {
		rel, _ := filepath.Rel(filepath.Join(td, "proto"), p)
		args = append(args, rel)
	}
	cmd := exec.Command(protoc, args...)
	cmd.Dir = filepath.Join(td, "proto")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("protoc %v: %v\n%s", args, err, out)
	}
	cmd = exec.Command(python, filepath.Join(td, "read_events.py"), path)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+gen, "PYTHONDONTWRITEBYTECODE=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("read %s with python3-protobuf: %w: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var evs []tensorboard.Event
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var e struct {
			WallTime    float64  `json:"wall_time"`
			Step        int64    `json:"step"`
			FileVersion string   `json:"file_version"`
			SessionLog  int      `json:"session_log"`
			Scalars     [][2]any `json:"scalars"`
		}
		if err := dec.Decode(&e); err != nil {
			tb.Fatalf("the python reader's output: %v\n%s", err, out)
		}
		ev := tensorboard.Event{WallTime: e.WallTime, Step: e.Step, FileVersion: e.FileVersion, SessionLog: e.SessionLog}
		for _, s := range e.Scalars {
			tag, ok1 := s[0].(string)
			v, ok2 := s[1].(float64)
			if !ok1 || !ok2 {
				tb.Fatalf("the python reader's scalar %v: want [tag, number]", s)
			}
			ev.Scalars = append(ev.Scalars, tensorboard.Scalar{Tag: tag, Value: v})
		}
		evs = append(evs, ev)
	}
	return evs, nil
}
