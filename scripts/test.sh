#!/usr/bin/env bash
# Runs every test tier that CI runs: vet, the unit and integration tests with
# OpenBLAS (the build tailor ships), the net's tests again on the pure-Go BLAS,
# and each fuzz target's seed corpus (part of go test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
go vet -tags openblas ./...
go test -tags openblas -count=1 -timeout 20m ./...
go test -count=1 -timeout 10m ./model/ ./train/
