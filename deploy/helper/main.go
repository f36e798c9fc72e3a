//go:build deploy

// Command helper does the few things a container built FROM scratch needs a
// shell or curl for. It is built with the deploy tag (deploy/build.sh), which
// keeps it out of `go build ./...` and `go test ./...`.
//
//	helper get URL              exit 0 if GET URL answers 2xx within 3 s (health checks)
//	helper exec PROG [ARG...]   run PROG in this process, "{hostname}" in the
//	                            arguments replaced by the container's host name
//	helper mkbucket ENDPOINT BUCKET
//	                            create BUCKET on the S3 service at ENDPOINT
//	                            (http://host:port) unless it exists, with the
//	                            credentials in AWS_ACCESS_KEY_ID and
//	                            AWS_SECRET_ACCESS_KEY; retries for up to a minute
//	helper pki DIR HOSTS [PAIRS]
//	                            the cluster's TLS and gossip key in DIR, unless
//	                            there: tailor certs init --dir DIR --hosts HOSTS
//	                            --pairs PAIRS (default node; ca.pem, and
//	                            NAME.pem, NAME-key.pem for every pair; all made
//	                            again if one is missing; ca-key.pem is removed:
//	                            no role needs it), and gossip.key (32 random
//	                            bytes in hex); private files 0600
//
// "{hostname}" is replaced in get's URL too. A worker needs a unique id and
// an address its peers can reach; in a scaled compose service only the host
// name tells the replicas apart, and FROM scratch there is no shell to expand
// $HOSTNAME:
//
//	helper exec /usr/local/bin/tailor worker --id {hostname} --metrics-listen {hostname}:9100
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

const usage = `usage: helper get URL | helper exec PROG [ARG...] | helper mkbucket ENDPOINT BUCKET | helper pki DIR HOSTS [PAIRS]`

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	var err error
	switch {
	case args[0] == "get" && len(args) == 2:
		err = get(expand(args[1]))
	case args[0] == "exec" && len(args) >= 2:
		err = execv(args[1:])
	case args[0] == "mkbucket" && len(args) == 3:
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = mkbucket(ctx, args[1], args[2])
	case args[0] == "pki" && (len(args) == 3 || len(args) == 4):
		pairs := "node"
		if len(args) == 4 {
			pairs = args[3]
		}
		err = pki(args[1], args[2], pairs)
	default:
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// expand replaces "{hostname}" in s by the host name.
func expand(s string) string {
	if !strings.Contains(s, "{hostname}") {
		return s
	}
	host, err := os.Hostname()
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: host name: %v\n", err)
		os.Exit(1)
	}
	return strings.ReplaceAll(s, "{hostname}", host)
}

func get(rawURL string) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", rawURL, resp.Status)
	}
	return nil
}

func execv(args []string) error {
	path, err := exec.LookPath(args[0])
	if err != nil {
		return err
	}
	argv := make([]string, len(args))
	for i, a := range args {
		argv[i] = expand(a)
	}
	return syscall.Exec(path, argv, os.Environ())
}

func mkbucket(ctx context.Context, endpoint, bucket string) error {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q: want http://host:port or https://host:port", endpoint)
	}
	access, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if access == "" || secret == "" {
		return errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
	}
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = "us-east-1"
	}
	cli, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(access, secret, ""), Secure: u.Scheme == "https",
		Region: region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		return err
	}
	for {
		exists, err := cli.BucketExists(ctx, bucket)
		if err == nil && exists {
			fmt.Printf("bucket %s exists at %s\n", bucket, endpoint)
			return nil
		}
		if err == nil {
			if err = cli.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region}); err == nil {
				fmt.Printf("bucket %s created at %s\n", bucket, endpoint)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bucket %s at %s: %w", bucket, endpoint, err)
		case <-time.After(time.Second):
		}
	}
}

// pki makes the cluster's certificates (tailor certs init) and gossip key
// in dir, each unless it is there: running it again (a second "docker
// compose up") keeps what the running processes use. A volume that lacks
// one of the pairs (made before it was asked for) gets a new CA and every
// pair.
func pki(dir, hosts, pairs string) error {
	missing := ""
	for _, p := range append([]string{"ca"}, strings.Split(pairs, ",")...) {
		if _, err := os.Stat(filepath.Join(dir, p+".pem")); errors.Is(err, os.ErrNotExist) {
			missing = p
		} else if err != nil {
			return err
		}
	}
	if missing != "" {
		tailor, err := exec.LookPath("tailor")
		if err != nil {
			return err
		}
		cmd := exec.Command(tailor, "certs", "init", "--force", "--dir", dir, "--hosts", hosts, "--pairs", pairs)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("tailor certs init: %w", err)
		}
		// the CA's key signs nothing more here; off the cluster's volume
		if err := os.Remove(filepath.Join(dir, "ca-key.pem")); err != nil {
			return err
		}
	} else {
		fmt.Printf("certificates in %s kept\n", dir)
	}
	key := filepath.Join(dir, "gossip.key")
	if _, err := os.Stat(key); err == nil {
		fmt.Printf("%s kept\n", key)
		return nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	f, err := os.OpenFile(key, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(hex.EncodeToString(b) + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(key)
	return nil
}
