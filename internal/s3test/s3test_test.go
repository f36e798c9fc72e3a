package s3test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func TestServerRoundTripAndSignatures(t *testing.T) {
	srv := Start(t)
	t.Logf("versitygw on %s, metadata in %s", srv.Endpoint, srv.MetaMode)
	bucket := srv.NewBucket(t)
	ctx := context.Background()

	const data = "hello, s3"
	if _, err := srv.Client().PutObject(ctx, bucket, "a/b.txt", strings.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	obj, err := srv.Client().GetObject(ctx, bucket, "a/b.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || string(got) != data {
		t.Fatalf("GetObject read %q, %v; want %q", got, err, data)
	}

	// The gateway must check signatures: a wrong secret is refused.
	bad, err := minio.New(srv.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(srv.AccessKey, "not-the-secret", ""),
		Region:       srv.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.StatObject(ctx, bucket, "a/b.txt", minio.StatObjectOptions{})
	if resp := minio.ToErrorResponse(err); resp.StatusCode != 403 {
		t.Errorf("StatObject with a wrong secret: %v (status %d), want 403", err, resp.StatusCode)
	}

	// Buckets of different tests are separate.
	other := srv.NewBucket(t)
	if other == bucket {
		t.Fatalf("NewBucket returned %s twice", bucket)
	}
	if _, err := srv.Client().StatObject(ctx, other, "a/b.txt", minio.StatObjectOptions{}); err == nil {
		t.Error("object visible in a fresh bucket")
	}
}

func TestStoreURL(t *testing.T) {
	s := &Server{Endpoint: "127.0.0.1:9000", Region: "us-east-1"}
	for _, tt := range []struct{ bucket, prefix, want string }{
		{"b", "ds/v1", "s3://b/ds/v1?endpoint=127.0.0.1%3A9000&path_style=true&region=us-east-1&tls=false"},
		{"b", "", "s3://b?endpoint=127.0.0.1%3A9000&path_style=true&region=us-east-1&tls=false"},
	} {
		if got := s.StoreURL(tt.bucket, tt.prefix); got != tt.want {
			t.Errorf("StoreURL(%q, %q) = %q, want %q", tt.bucket, tt.prefix, got, tt.want)
		}
	}
}
