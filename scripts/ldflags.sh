#!/usr/bin/env bash
# Prints the -ldflags settings that put this tree's commit into
# `tailor version` and every member's record (internal/version), for builds
# where the Go toolchain stamps none (GOFLAGS=-buildvcs=false, a git
# worktree); prints nothing outside a git checkout.
#
#   go build -ldflags "$(bash scripts/ldflags.sh)" ./cmd/tailor
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=github.com/tailorml/tailor/internal/version
commit=$(git rev-parse --short HEAD 2>/dev/null) || exit 0
flags="-X $pkg.commit=$commit"
# as the toolchain's vcs.modified: any change, untracked files included
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
	flags+=" -X $pkg.modified=true"
fi
printf '%s\n' "$flags"
