package cli

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/tailorml/tailor/serve"
)

func init() {
	register("serve", "answer inference requests over HTTP (Open Inference Protocol v2)", runServe)
}

func runServe(ctx context.Context, env *Env) int {
	c := serve.DefaultConfig()
	var (
		modelPath, run, etcd, listen string
		sec                          securityFlags
	)
	fs := newFlagSet(env, "serve", "--model FILE | --run R --etcd E", `
Serves a model over HTTP: the Open Inference Protocol v2 REST API
(/v2/health/live, /v2/health/ready, /v2, /v2/models/NAME[/ready],
POST /v2/models/NAME/infer with an FP32 input [N,3,H,W] normalised as the
model says, or a BYTES input of base64-encoded images), POST /v1/predict with
an image body or a multipart form of images (each image's labels,
probabilities and the labels above their thresholds), a page at / to try a
photo, and Prometheus /metrics.

Requests are gathered into batches of up to --max-batch images, waiting at
most --max-delay for requests still being read; more than --queue requests
at once are answered 429 with Retry-After. With --run and --etcd it follows
the run's best model (model.tailor in the run's output folder, or --model):
it looks again whenever the run's checkpoint pointer moves and every
--recheck, and swaps a new model in without failing a request; answers name
the model version. --tls-ca/--tls-cert/--tls-key serve HTTPS with mutual
TLS (the run's certificates). Ctrl-C finishes the requests in flight.`)
	fs.StringVar(&modelPath, "model", "", "model file (with --run: instead of the run's output folder's)")
	fs.StringVar(&run, "run", os.Getenv("TAILOR_RUN"), "follow this run's best model (env TAILOR_RUN)")
	fs.StringVar(&etcd, "etcd", os.Getenv("TAILOR_ETCD"), "etcd endpoints of --run, comma-separated (env TAILOR_ETCD)")
	fs.StringVar(&listen, "listen", "127.0.0.1:8080", "HTTP listen address host:port")
	fs.StringVar(&c.Name, "name", c.Name, "the model's name in /v2/models/NAME")
	fs.IntVar(&c.MaxBatch, "max-batch", c.MaxBatch, "largest batch of images run at once")
	fs.DurationVar(&c.MaxDelay, "max-delay", c.MaxDelay, "longest a batch waits for requests still being read")
	fs.IntVar(&c.QueueDepth, "queue", c.QueueDepth, "requests admitted at once; more get 429")
	fs.IntVar(&c.MaxImages, "max-images", c.MaxImages, "images per request")
	fs.Int64Var(&c.MaxBodyBytes, "max-body", c.MaxBodyBytes, "largest request body, bytes (413 above)")
	fs.Int64Var(&c.MaxImagePixels, "max-pixels", c.MaxImagePixels, "largest image width×height, checked before decoding")
	fs.DurationVar(&c.RequestTimeout, "timeout", c.RequestTimeout, "per-request time limit (503 after)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "longest wait for requests in flight at shutdown")
	fs.DurationVar(&c.Recheck, "recheck", c.Recheck, "look at the model file again this often (0: only on the run's changes)")
	sec.add(fs)
	if code, done := parse(env, fs); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "tailor serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if (run == "") != (etcd == "") || (modelPath == "" && run == "") {
		fmt.Fprintln(env.Stderr, "tailor serve: want --model FILE, or --run R and --etcd E")
		return 2
	}
	sec.absolute()
	tlsCfg, err := sec.wireTLS(env.Log)
	if err != nil {
		return fail(env, err)
	}
	c.TLS = tlsCfg
	src := serve.Source{Path: modelPath, Run: run}
	if run != "" {
		cf := clusterFlags{etcd: etcd, run: run, sec: sec}
		cli, err := sec.etcdClient(cf.endpoints())
		if err != nil {
			return fail(env, err)
		}
		defer cli.Close()
		src.Etcd = cli
	}
	s, err := serve.New(c, env.Log)
	if err != nil {
		return fail(env, err)
	}
	if run == "" { // a model file alone must load before the server listens
		m, err := serve.LoadModelFile(modelPath)
		if err != nil {
			return fail(env, err)
		}
		if err := s.SetModel(m); err != nil {
			return fail(env, err)
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fail(env, err)
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	what := modelPath
	if run != "" {
		what = "run " + run
	}
	fmt.Fprintf(env.Stdout, "tailor serve: %s (%s) on %s://%s/\n", c.Name, what, scheme, ln.Addr())
	if err := s.Run(ctx, ln, src); err != nil {
		return fail(env, err)
	}
	fmt.Fprintln(env.Stdout, "tailor serve: stopped")
	return 0
}
