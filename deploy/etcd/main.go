//go:build deploy

// Command etcd is etcd's own server main, built from the etcd module that
// tailor already depends on, so that the compose test can run a real etcd in
// a FROM-scratch image without pulling one. Build it with the deploy tag
// (deploy/build.sh does):
//
//	CGO_ENABLED=0 go build -tags deploy -o etcd ./deploy/etcd
//
// The tag keeps it out of `go build ./...` and `go test ./...`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
