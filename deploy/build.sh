#!/usr/bin/env bash
# Fills deploy/scratch/ctx/, the build context of deploy/scratch/Dockerfile:
# static binaries of tailor, etcd, versitygw and the helper, the Fashion-MNIST
# subset of fashion/testdata, /etc/nsswitch.conf and an empty /tmp.
#
#   bash deploy/build.sh
#
# tailor is linked statically against Debian's OpenBLAS (libopenblas-dev,
# installed by scripts/setup.sh); TAILOR_PURE_GO=1, or a failing static link,
# builds the pure-Go tailor instead (about 3x slower training). Builds run one
# at a time (2 cores). Go's build cache makes a second run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ctx=deploy/scratch/ctx
mkdir -p "$ctx/bin" "$ctx/etc" "$ctx/tmp" "$ctx/fashion-mnist"
chmod 1777 "$ctx/tmp"
export GOFLAGS="${GOFLAGS:-} -trimpath"

step() { printf 'build: %s\n' "$*" >&2; }

# the commit into `tailor version` (-trimpath builds here stamp none from a worktree)
vflags=$(bash scripts/ldflags.sh)

step "tailor (static)"
if [ "${TAILOR_PURE_GO:-}" != 1 ] && [ -e /usr/lib/x86_64-linux-gnu/libopenblas.a ] &&
  CGO_ENABLED=1 go build -tags openblas,netgo,osusergo \
    -ldflags "-s -w $vflags -linkmode external -extldflags \"-static -lm -lpthread\"" \
    -o "$ctx/bin/tailor.new" ./cmd/tailor; then
  step "tailor: static, with OpenBLAS"
else
  step "tailor: pure Go (no static OpenBLAS: set up libopenblas-dev, or TAILOR_PURE_GO was set)"
  CGO_ENABLED=0 go build -ldflags "-s -w $vflags" -o "$ctx/bin/tailor.new" ./cmd/tailor
fi
mv "$ctx/bin/tailor.new" "$ctx/bin/tailor"

step "helper"
CGO_ENABLED=0 go build -tags deploy -ldflags '-s -w' -o "$ctx/bin/helper" ./deploy/helper

step "etcd (go.etcd.io/etcd/server/v3/etcdmain)"
CGO_ENABLED=0 go build -tags deploy -ldflags '-s -w' -o "$ctx/bin/etcd" ./deploy/etcd

# versitygw's main cannot be built inside this module (its dependencies are
# not all in go.sum); go install builds it in module mode at its own version
# (the module proxy and its checksum database are on the network: a failed
# lookup is tried again, three times in all)
step "versitygw v1.8.0"
for try in 1 2 3; do
  if GOBIN="$PWD/$ctx/bin" CGO_ENABLED=0 go install -ldflags '-s -w' github.com/versity/versitygw/cmd/versitygw@v1.8.0; then
    break
  fi
  [ "$try" = 3 ] && exit 1
  step "versitygw: go install failed (try $try of 3); again in $((try * 10)) s"
  sleep $((try * 10))
done

cp fashion/testdata/*.gz fashion/testdata/LICENSE-fashion-mnist.txt "$ctx/fashion-mnist/"
printf 'hosts: files dns\n' >"$ctx/etc/nsswitch.conf"
ls -l "$ctx/bin" >&2
