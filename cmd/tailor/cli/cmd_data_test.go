package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tailorml/tailor/cmd/tailor/cli"
)

// fashionTestdata is the Fashion-MNIST subset committed with the fashion package.
const fashionTestdata = "../../../fashion/testdata"

func TestDataFashion(t *testing.T) {
	out := filepath.Join(t.TempDir(), "fash")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{"list", []string{"data", "--help"}, 0, "fashion", ""},
		{"no dataset", []string{"data"}, 2, "", "fashion"},
		{"unknown dataset", []string{"data", "cifar"}, 2, "", "unknown data set"},
		{"help", []string{"data", "fashion", "--help"}, 0, "--layout", ""},
		{"no out", []string{"data", "fashion", "--source", fashionTestdata}, 1, "", "output folder"},
		{"bad flag", []string{"data", "fashion", "--sizes", "3", out}, 2, "", "flag provided but not defined"},
		{"bad colour", []string{"data", "fashion", "--colours", "red,mauve", out}, 1, "", "mauve"},
		{"generate", []string{"data", "fashion", "--source", fashionTestdata, "--size", "32",
			"--train", "20", "--val", "5", "--test", "5", "--format", "csv", "--seed", "7", out}, 0, "label sets", "generated fashion set"},
		{"exists", []string{"data", "fashion", "--source", fashionTestdata, "--train", "2", "--val", "0", "--test", "0", out}, 1, "", "already holds"},
		{"force single", []string{"data", "fashion", "--source", fashionTestdata, "--size", "32", "--layout", "single",
			"--train", "6", "--val", "2", "--test", "2", "--force", out}, 0, "images", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cli.RunContext(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit code: got %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantStdout, stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, stderr.String())
			}
		})
	}
	// The last run replaced the csv set with a single-layout folder tree.
	if _, err := os.Stat(filepath.Join(out, "train", "labels.csv")); !os.IsNotExist(err) {
		t.Errorf("--force left the old csv set behind: %v", err)
	}
	dirs, err := os.ReadDir(filepath.Join(out, "train"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if parts := strings.Split(d.Name(), "_"); len(parts) != 2 {
			t.Errorf("single layout folder %q, want colour_garment", d.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(out, "dataset.json")); err != nil {
		t.Errorf("dataset.json: %v", err)
	}
}

func TestUsageListsData(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli.RunContext(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("tailor --help: exit code %d", code)
	}
	if !strings.Contains(stdout.String(), "data") {
		t.Errorf("tailor --help does not list data:\n%s", stdout.String())
	}
}
