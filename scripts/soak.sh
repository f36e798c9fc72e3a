#!/usr/bin/env bash
# The long soak: `tailor local` (3 workers, 2 parameter servers, a standby
# coordinator, an etcd of the test's own) under one fault a minute for an
# hour, in rotation over every role: a worker killed, a worker stopped for
# 5 s, a parameter server killed (back on a new port), the leader killed,
# etcd stopped for 3 s. After every fault a batch must be consumed within
# TAILOR_SOAK_BOUND (90s); at the end every record was consumed once per
# epoch. The figures (faults survived, longest stall, RSS per role at the
# start and the end, test mAP) go to out/soak/report-*.json and the log to
# out/soak/soak-*.log. TAILOR_SOAK (1h) and TAILOR_SOAK_EVERY (1m) change
# the length and the pace; the CI runs the short soak (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export TAILOR_SOAK="${TAILOR_SOAK:-1h}" TAILOR_SOAK_EVERY="${TAILOR_SOAK_EVERY:-1m}"
mkdir -p out/soak
stamp=$(date -u +%Y%m%dT%H%M%SZ)
export TAILOR_SOAK_REPORT="$PWD/out/soak/report-$stamp.json"
echo "== soak: faults for $TAILOR_SOAK, one every $TAILOR_SOAK_EVERY; log out/soak/soak-$stamp.log"
go test -tags 'openblas soak' -count=1 -v -timeout "${SOAK_TIMEOUT:-3h}" -run TestSoak ./internal/e2e/ 2>&1 | tee "out/soak/soak-$stamp.log"
echo "== report: $TAILOR_SOAK_REPORT"
cat "$TAILOR_SOAK_REPORT"
