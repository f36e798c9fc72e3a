package identity

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
)

func TestOf(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	c := &x509.Certificate{URIs: []*url.URL{
		u("tailor://role/worker"), u("tailor://run/r1"), u("spiffe://role/admin"), u("tailor://role/"), u("tailor://other/x"),
	}}
	id := Of(c)
	if got := id.String(); got != "roles=worker runs=r1" {
		t.Errorf("Of = %s, want roles=worker runs=r1", got)
	}
	again := Of(&x509.Certificate{URIs: (Identity{Roles: []Role{Worker, Admin}, Runs: []string{"a", "b"}}).URIs()})
	if got := again.String(); got != "roles=worker,admin runs=a,b" {
		t.Errorf("URIs and back: %s", got)
	}
}

func TestCheck(t *testing.T) {
	worker := Identity{Roles: []Role{Worker}, Runs: []string{"r"}}
	anyRunWorker := Identity{Roles: []Role{Worker}}
	ps := Identity{Roles: []Role{ParamServer}, Runs: []string{"r"}}
	node := Identity{}
	tests := []struct {
		name       string
		self, peer Identity
		run        string
		roles      []Role
		want       error
	}{
		{"allowed role and run", ps, worker, "r", []Role{Worker}, nil},
		{"a certificate of every run", ps, anyRunWorker, "r", []Role{Worker}, nil},
		{"another role", ps, worker, "r", []Role{Coordinator}, ErrRole},
		{"another run", ps, worker, "r2", []Role{Worker}, ErrRun},
		{"a peer without role", ps, node, "r", []Role{Worker}, ErrRole},
		{"a checker without role checks nothing", node, node, "r", []Role{Coordinator}, nil},
		{"nor the run", node, worker, "r2", []Role{Coordinator}, nil},
		{"several roles, one allowed", ps, Identity{Roles: []Role{Admin, Coordinator}}, "r", []Role{Coordinator}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.self, tt.peer, tt.run, tt.roles...)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}
