// Package localcluster runs a whole training cluster on this machine, as
// `tailor local` does: an etcd (embedded, or one given), an object store
// (an S3 server embedded in this process, or files), the run's spec
// submitted to etcd, and a coordinator (and a standby), the parameter
// servers and the workers, each a separate tailor process on 127.0.0.1,
// started again when it fails. With Secure the processes talk over mutual
// TLS, gossip is encrypted and etcd requires TLS and a user, from
// certificates, keys and passwords it makes. Run returns when the leader
// records the run done.
package localcluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/tailorml/tailor/dashboard"
	"github.com/tailorml/tailor/internal/certs"
	"github.com/tailorml/tailor/internal/job"
)

// Config is a local cluster's settings: those of `tailor local`.
type Config struct {
	// Out is the cluster's folder: etcd's data (Out/etcd), the embedded S3
	// server's (Out/s3), with StoreFile the shards and checkpoints
	// (Out/shards, Out/checkpoints), a composed set's images
	// (Out/images), Secure's certificates and keys (Out/certs), each
	// process's log (Out/logs), and by default the run's model and history
	// (Out/run).
	Out string
	// Spec is the run's spec. Its Workers is set to Workers (the first
	// step waits for all of them: reproducible sync runs). Empty Out is
	// Out/run; empty Data is the Fashion-outfits set, composed and
	// ingested on first use; a Data folder is copied into the embedded S3
	// server (StoreS3) or read in place (StoreFile); a Data URL is used as
	// it is, and nothing is embedded. Empty Checkpoints are the run's own,
	// in its store, removed when a new run starts.
	Spec job.Spec
	// Workers is how many worker processes run; Standby adds a second
	// coordinator, waiting in the election.
	Workers int
	Standby bool
	// Size, Train, Val and Test are the image size and split sizes of a
	// composed Fashion-outfits set.
	Size, Train, Val, Test int
	// Resume goes on with the run in Out from its newest checkpoint (Out's
	// etcd data and checkpoints are kept); Spec must be the run's.
	Resume bool
	// Store is where the shards and checkpoints live: StoreS3 or
	// StoreFile.
	Store string
	// Etcd are the endpoints of an etcd to use; empty: an etcd embedded in
	// this process, its data in Out/etcd.
	Etcd []string
	// Secure runs the cluster over mutual TLS with encrypted gossip, and
	// the embedded etcd over TLS with client certificates and a user. A
	// development CA, a certificate for etcd and a role certificate per
	// role (each process presents its role's), a gossip key and etcd's passwords
	// are made in Out/certs (private files 0600) and kept for the next
	// run; Security's and GossipKeyFile's files, where given, are used
	// instead.
	Secure bool
	// Security are the TLS and etcd settings the processes are given. With
	// an embedded etcd its etcd settings are ignored (that etcd is the
	// run's own).
	Security Security
	// GossipKeyFile holds the processes' hex gossip key ("": none, or with
	// Secure Out/certs/gossip.key).
	GossipKeyFile string
	// RestartLimit is how often each process is started again within
	// RestartWindow before it is given up (0: never). A worker, the
	// standby or the first coordinator with a standby may stay down; any
	// other process given up ends the run with an error naming it.
	RestartLimit  int
	RestartWindow time.Duration
	// Executable is the tailor binary the processes run (""; this
	// process's).
	Executable string
	// Stdout gets the line that names the run's etcd and how to watch it
	// and, without Verbose, the run's status while it trains (on a
	// terminal one block redrawn in place; elsewhere a line when the state
	// or the epoch changes and every 10 s) and the supervisor's lines
	// about the processes (exits, restarts) (nil: discarded).
	Stdout io.Writer
	// Stderr gets, with Verbose, the processes' output, each line prefixed
	// with the process's name, and the progress of ingesting a composed
	// set (nil: discarded).
	Stderr io.Writer
	// Verbose streams the processes' output to Stderr as well as to their
	// log files (Out/logs/ROLE-ID.log), instead of the status on Stdout.
	Verbose bool
	// Dashboard is the listen address of the run's dashboard (package
	// dashboard), whose URL is printed to Stdout at the start; "" starts
	// none. When its port is taken, a free loopback port is used instead.
	// With Secure, it asks for the token in Out/certs/dashboard.token.
	Dashboard string
	// Log gets the cluster's progress: the store, etcd, the certificates
	// (nil: discarded).
	Log *slog.Logger
}

// DefaultConfig returns the settings of `tailor local` without flags: 3
// workers and 2 parameter servers training 10 epochs in sync mode on a
// composed 64 px Fashion-outfits set (4000/1000/1000 images), in an
// embedded S3 server, under out/local; every process restarted up to 10
// times in 10 minutes.
func DefaultConfig() Config {
	s := job.DefaultSpec("local", "")
	s.Epochs, s.Out = 10, ""
	return Config{
		Out:           filepath.Join("out", "local"),
		Spec:          s,
		Workers:       3,
		Size:          64,
		Train:         4000,
		Val:           1000,
		Test:          1000,
		Store:         StoreS3,
		RestartLimit:  10,
		RestartWindow: 10 * time.Minute,
		Dashboard:     dashboard.DefaultListen,
	}
}

// Validate reports the first setting that cannot work. (The spec is
// checked when it is submitted, after Run fills in its data and
// checkpoints.)
func (c Config) Validate() error {
	switch {
	case c.Out == "":
		return errors.New("localcluster: out: want a folder")
	case c.Spec.Run == "":
		return errors.New("localcluster: spec: want a run id")
	case c.Workers < 1:
		return fmt.Errorf("localcluster: workers %d: want at least 1", c.Workers)
	case c.RestartLimit < 0:
		return fmt.Errorf("localcluster: restart limit %d: want 0 or more", c.RestartLimit)
	case c.RestartLimit > 0 && c.RestartWindow <= 0:
		return fmt.Errorf("localcluster: restart window %v: want a positive duration", c.RestartWindow)
	case c.Store != StoreS3 && c.Store != StoreFile:
		return fmt.Errorf("localcluster: store %q: want %s or %s", c.Store, StoreS3, StoreFile)
	}
	if c.Dashboard != "" {
		if _, _, err := net.SplitHostPort(c.Dashboard); err != nil {
			return fmt.Errorf("localcluster: dashboard address %q: %w", c.Dashboard, err)
		}
	}
	return nil
}

// Security is how the processes prove themselves to each other and to
// etcd, as files: never a secret itself. It becomes the processes' --tls-*
// and --etcd-* flags.
type Security struct {
	// TLS is the mutual TLS between the roles (--tls-ca, --tls-cert,
	// --tls-key).
	TLS certs.Files
	// EtcdTLS is etcd's (--etcd-ca, --etcd-cert, --etcd-key); empty: TLS,
	// when an endpoint is https://.
	EtcdTLS certs.Files
	// EtcdUser is etcd's user name, and EtcdPasswordFile holds its
	// password; without the file the password is the environment's
	// TAILOR_ETCD_PASSWORD, which the processes inherit.
	EtcdUser, EtcdPasswordFile string
}

// Args are the flags of the processes for s: those of the files and the
// user name that are set.
func (s Security) Args() []string {
	var a []string
	for _, f := range []struct{ name, v string }{
		{"tls-ca", s.TLS.CA}, {"tls-cert", s.TLS.Cert}, {"tls-key", s.TLS.Key},
		{"etcd-ca", s.EtcdTLS.CA}, {"etcd-cert", s.EtcdTLS.Cert}, {"etcd-key", s.EtcdTLS.Key},
		{"etcd-user", s.EtcdUser}, {"etcd-password-file", s.EtcdPasswordFile},
	} {
		if f.v != "" {
			a = append(a, "--"+f.name, f.v)
		}
	}
	return a
}

// absolute is s with absolute file names, which name the same files
// whatever a process's working directory.
func (s Security) absolute() Security {
	for _, p := range []*string{&s.TLS.CA, &s.TLS.Cert, &s.TLS.Key, &s.EtcdTLS.CA, &s.EtcdTLS.Cert, &s.EtcdTLS.Key, &s.EtcdPasswordFile} {
		*p = abs(*p)
	}
	return s
}

// abs is p made absolute; "" stays "".
func abs(p string) string {
	if p == "" {
		return ""
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
