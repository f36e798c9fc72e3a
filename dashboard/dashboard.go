// Package dashboard serves a read-only web page of cluster runs (`tailor
// dashboard`, and the one `tailor local` starts): the runs in etcd with
// their state and best validation mAP, and for one run its live curves,
// the latest evaluation per label, the members with their leases, gossip
// contact and where each worker's time goes, the parameter servers'
// counters, the checkpoints and the event log the leaders keep
// (coordinator.EventLog, coordinator.History). Pages are rendered on the
// server with html/template, curves as inline SVG; a little plain
// JavaScript (embedded, like the stylesheet) fetches the run's sections
// again every second. It never writes to etcd or the members.
package dashboard

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tailorml/tailor/checkpoint"
	"github.com/tailorml/tailor/runstatus"
)

// DefaultListen is the dashboard's address unless told otherwise:
// loopback only.
const DefaultListen = "127.0.0.1:8090"

// Config is one dashboard server.
type Config struct {
	// Listen is the HTTP address (DefaultListen).
	Listen string
	// Run, if set, is the run the front page opens; the others are listed.
	Run string
	// Etcd is the client the runs are read with (required).
	Etcd *clientv3.Client
	// WireTLS is the roles' mutual TLS, to ask the parameter servers for
	// their counters (nil: plaintext).
	WireTLS *tls.Config
	// ServerTLS, if set, serves HTTPS with it; with ClientCAs and
	// RequireAndVerifyClientCert only holders of a client certificate get
	// a page (--secure).
	ServerTLS *tls.Config
	// TokenFile, if set, holds a bearer token every request must carry
	// (Authorization: Bearer, or the cookie the login form sets).
	TokenFile string
	// Checkpoints, if set, is a checkpoint store (the folder or URL that
	// holds checkpoints/<run>/<job>/...) whose runs are shown from their
	// manifests when etcd no longer has them: the curves of the newest
	// manifest's validation history, the checkpoint timeline.
	Checkpoints *checkpoint.Location
	// Refresh is how often the page fetches its sections again.
	Refresh time.Duration
	// Timeout bounds the reads behind one page.
	Timeout time.Duration
	Log     *slog.Logger
}

// DefaultConfig is a dashboard on DefaultListen, refreshing every second.
func DefaultConfig() Config {
	return Config{Listen: DefaultListen, Refresh: time.Second, Timeout: 4 * time.Second}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Etcd == nil {
		errs = append(errs, errors.New("dashboard: no etcd client"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("dashboard: listen address %q: %w", c.Listen, err))
	}
	if c.Refresh < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("dashboard: refresh %v is below 100ms", c.Refresh))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("dashboard: timeout %v", c.Timeout))
	}
	if c.TokenFile != "" {
		if _, err := readToken(c.TokenFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Server is the dashboard's HTTP handler.
type Server struct {
	cfg   Config
	col   *collector
	pages *template.Template
	token string
	mux   *http.ServeMux
}

// New makes the handler of cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, col: &collector{cli: cfg.Etcd, archive: cfg.Checkpoints, opts: runstatus.Options{TLS: cfg.WireTLS}}, pages: t, mux: http.NewServeMux()}
	if cfg.TokenFile != "" {
		if s.token, err = readToken(cfg.TokenFile); err != nil {
			return nil, err
		}
	}
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("GET /runs", s.runsFragment)
	s.mux.HandleFunc("GET /run/{run}", s.runPage)
	s.mux.HandleFunc("GET /run/{run}/live", s.runFragment)
	s.mux.HandleFunc("GET /compare", s.compare)
	s.mux.HandleFunc("GET /api/runs", s.apiRuns)
	s.mux.HandleFunc("GET /api/run/{run}", s.apiRun)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("GET /login", s.loginForm)
	s.mux.HandleFunc("POST /login", s.login)
	return s, nil
}

// ServeHTTP answers GETs only, after the token check (if any).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !(r.Method == http.MethodPost && r.URL.Path == "/login") {
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	if s.token != "" && !strings.HasPrefix(r.URL.Path, "/login") && !strings.HasPrefix(r.URL.Path, "/static/") && r.URL.Path != "/healthz" && !s.authorised(r) {
		if strings.HasPrefix(r.URL.Path, "/api/") || r.Header.Get("X-Requested-With") != "" {
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Serve answers on lis until ctx ends, then shuts down within a second.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, TLSConfig: s.cfg.ServerTLS,
		ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.ServerTLS != nil {
			errc <- hs.ServeTLS(lis, "", "")
		} else {
			errc <- hs.Serve(lis)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	<-errc
	return nil
}

// URL is the address to open a dashboard listening on lis at.
func URL(lis net.Listener, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + lis.Addr().String() + "/"
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("dashboard: token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("dashboard: token file %s: want a token of at least 16 characters", path)
	}
	return t, nil
}

const tokenCookie = "tailor_dashboard_token"

func (s *Server) authorised(r *http.Request) bool {
	got := ""
	if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = strings.TrimSpace(a)
	} else if c, err := r.Cookie(tokenCookie); err == nil {
		got = c.Value
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, "login.html", map[string]any{"Failed": r.URL.Query().Get("failed") != ""})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
		http.Redirect(w, r, "/login?failed=1", http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.Timeout)
}

// page is what every page template gets.
type page struct {
	Title   string
	Refresh int64 // milliseconds
	Run     string
	Runs    []RunSummary
	View    *RunView
	Charts  []chart
	Compare *comparison
	Err     string
	Now     time.Time
}

func (s *Server) newPage(title string) page {
	return page{Title: title, Refresh: s.cfg.Refresh.Milliseconds(), Now: time.Now()}
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Run != "" && r.URL.Query().Get("all") == "" {
		http.Redirect(w, r, "/run/"+url.PathEscape(s.cfg.Run), http.StatusSeeOther)
		return
	}
	s.render(w, "index.html", s.runsPage(r, "runs"))
}

func (s *Server) runsFragment(w http.ResponseWriter, r *http.Request) {
	s.render(w, "runs", s.runsPage(r, "runs"))
}

// runsPage is a page titled title with the list of runs, or the error
// that kept it from being read.
func (s *Server) runsPage(r *http.Request, title string) page {
	p := s.newPage(title)
	ctx, cancel := s.ctx(r)
	defer cancel()
	runs, err := s.col.ListRuns(ctx)
	if err != nil {
		p.Err = err.Error()
	}
	p.Runs = runs
	return p
}

func (s *Server) runView(w http.ResponseWriter, r *http.Request) (page, bool) {
	run := r.PathValue("run")
	p := s.newPage(run)
	p.Run = run
	ctx, cancel := s.ctx(r)
	defer cancel()
	v, err := s.col.View(ctx, run)
	if errors.Is(err, runstatus.ErrNotSubmitted) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return p, false
	}
	if err != nil {
		p.Err = err.Error()
		return p, true
	}
	p.View = &v
	p.Charts = runCharts(v)
	return p, true
}

func (s *Server) runPage(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.runView(w, r); ok {
		s.render(w, "run.html", p)
	}
}

func (s *Server) runFragment(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.runView(w, r); ok {
		s.render(w, "live", p)
	}
}

func (s *Server) compare(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a, b := q.Get("a"), q.Get("b")
	p := s.runsPage(r, "compare")
	ctx, cancel := s.ctx(r)
	defer cancel()
	if a != "" && b != "" {
		c, err := s.col.compare(ctx, a, b)
		if err != nil {
			p.Err = err.Error()
		} else {
			p.Compare = &c
		}
	}
	s.render(w, "compare.html", p)
}

func (s *Server) apiRuns(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.ctx(r)
	defer cancel()
	runs, err := s.col.ListRuns(ctx)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, runs)
}

func (s *Server) apiRun(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.ctx(r)
	defer cancel()
	v, err := s.col.View(ctx, r.PathValue("run"))
	switch {
	case errors.Is(err, runstatus.ErrNotSubmitted):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.pages.ExecuteTemplate(w, name, data); err != nil {
		s.cfg.Log.Warn("dashboard page", "page", name, "err", err)
	}
}
