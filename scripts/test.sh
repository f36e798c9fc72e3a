#!/usr/bin/env bash
# Runs every test tier that CI runs: go.mod tidiness, staticcheck, vet, the unit and integration tests with
# OpenBLAS (the build tailor ships), the net's tests again on the pure-Go BLAS,
# each fuzz target's seed corpus (part of go test; the end-to-end tests include the
# dashboard driven in headless chromium), the chaos suite, the
# soak suite, the network lab (netlab, root), the static checks of the deployment files, the Helm chart's render checks
# (deploy/helm/charttest), and the compose cluster test on this
# machine's Docker engine (FROM-scratch images built here; TAILOR_SKIP_DOCKER=1
# leaves it out on a machine without Docker, and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# hygiene: go.mod and go.sum are tidy, staticcheck (pinned) finds nothing
# what comes from the network (the module proxy) is tried three times: a
# name lookup that times out once should not fail the run
retry() {
  local try
  for try in 1 2 3; do
    "$@" && return 0
    [ "$try" = 3 ] && return 1
    echo "test.sh: '$*' failed (try $try of 3); again in $((try * 10)) s" >&2
    sleep $((try * 10))
  done
}
retry go mod download
go mod tidy -diff
retry go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
"$(go env GOPATH)/bin/staticcheck" -tags 'openblas chaos soak netlab' ./...
go vet -tags openblas ./...
go test -tags openblas -count=1 -timeout 20m ./...
go test -count=1 -timeout 10m ./model/ ./eval/ ./train/
# the chaos suite: random kills of a worker, a parameter server and the leader
go vet -tags 'openblas chaos' ./internal/e2e/
go test -tags 'openblas chaos' -count=1 -timeout 15m -run TestChaos -v ./internal/e2e/
# the soak: a fault every few seconds over every role, progress after each
# (scripts/soak.sh runs it for an hour)
go vet -tags 'openblas soak' ./internal/e2e/
go test -tags 'openblas soak' -count=1 -timeout 20m -run TestSoak -v ./internal/e2e/
# the network lab: 4 synthetic workers, 2 parameter servers, etcd and the
# coordinator, each a process in a network namespace of its own, on 1 Gbit/s
# token-bucket links, a few steps; then no namespace may be left (needs root)
go vet -tags 'openblas netlab' ./netlab/
go test -tags 'openblas netlab' -count=1 -timeout 15m -run TestLab -v ./netlab/
bash deploy/check.sh
# the Helm chart: rendered for several values files with Helm's Go library
# (no helm binary, no cluster), every object decoded strictly into the
# Kubernetes API types and checked, and helm lint's rules. A module of its
# own, so the main module does not depend on Helm and Kubernetes; go test
# ./... above does not descend into it.
(
  cd deploy/helm/charttest
  go mod tidy -diff
  "$(go env GOPATH)/bin/staticcheck" ./...
  go vet ./...
  go test -count=1 ./...
)
if [ -n "${TAILOR_SKIP_DOCKER:-}" ]; then
  echo "test.sh: TAILOR_SKIP_DOCKER is set: the compose cluster test (deploy/test-compose.sh) did NOT run"
else
  bash deploy/test-compose.sh
fi
