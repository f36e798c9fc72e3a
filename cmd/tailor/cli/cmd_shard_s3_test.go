package cli

import (
	"strings"
	"testing"

	"github.com/tailorml/tailor/internal/s3test"
)

func TestShardBuildInspectS3(t *testing.T) {
	src := shardTestTree(t)
	srv := s3test.Start(t)
	srv.SetEnv(t)
	bucket := srv.NewBucket(t)

	// Settings by flags: the endpoint's scheme turns TLS off.
	dst := "s3://" + bucket + "/datasets/clothes"
	code, out, errs := runShardCLI(t, "build", "--size", "8", "--max-shard-bytes", "300", "--min-side", "4", "--quiet",
		"--s3-endpoint", "http://"+srv.Endpoint, "--s3-region", srv.Region, src, dst)
	if code != 0 {
		t.Fatalf("build exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if !strings.Contains(out, "built "+dst) || !strings.Contains(out, "train  2") {
		t.Errorf("build summary:\n%s", out)
	}

	// Settings in the URL.
	url := srv.StoreURL(bucket, "datasets/clothes")
	code, out, errs = runShardCLI(t, "inspect", "--verify", url)
	if code != 0 || !strings.Contains(out, "all 3 shards ok") {
		t.Fatalf("inspect --verify exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}

	// A second build needs --overwrite, as for a directory.
	if code, _, errs := runShardCLI(t, "build", "--size", "8", "--min-side", "4", "--quiet", src, url); code != 1 || !strings.Contains(errs, "--overwrite") {
		t.Errorf("rebuild exit %d, stderr:\n%s", code, errs)
	}

	// Refused credentials: a clear message, no secret.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-"+srv.SecretKey[:4])
	code, out, errs = runShardCLI(t, "inspect", url)
	if code != 1 || !strings.Contains(errs, "refused the credentials") {
		t.Errorf("inspect with a wrong secret: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if strings.Contains(errs+out, "not-the-secret") || strings.Contains(errs+out, srv.SecretKey) {
		t.Errorf("output shows a secret:\n%s%s", out, errs)
	}

	// A missing bucket is named.
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	code, _, errs = runShardCLI(t, "inspect", srv.StoreURL("no-such-bucket-at-all", "x"))
	if code != 1 || !strings.Contains(errs, `bucket "no-such-bucket-at-all" does not exist`) {
		t.Errorf("inspect of a missing bucket: exit %d, stderr:\n%s", code, errs)
	}
}
