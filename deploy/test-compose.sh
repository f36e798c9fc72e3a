#!/usr/bin/env bash
# The compose cluster, for real, on a Docker host without any registry:
# builds static binaries and FROM-scratch images (deploy/build.sh,
# deploy/scratch/Dockerfile), brings up docker-compose.yml with
# deploy/compose.scratch.yml and 3 workers, and trains a short run from data
# made and ingested into S3 (versitygw) by the compose jobs. While it trains:
#
#   1. one worker is killed (docker kill): the coordinator must log it lost;
#   2. another is cut off the network (docker network disconnect): it must be
#      logged lost and leave the membership (its etcd lease expires), then,
#      reconnected, come back (same process, or restarted by its restart
#      policy after it gave up) and train again (its step count grows);
#
# The roles talk over mutual TLS with the role certificates of the certs job,
# etcd over TLS with client certificates, and gossip with its key; the test
# checks that tailor status reads the parameter servers with the admin
# certificate, is refused by them with a worker's (a role that may not read
# their counters) and by etcd without any. The run must end: state done in etcd, the
# coordinators exit 0, and the
# model it wrote scores the test split (tailor eval). Everything the test
# made (containers, network, volumes, images) is removed at the end, also on
# failure or Ctrl-C.
#
#   bash deploy/test-compose.sh
#
# Environment: TAILOR_SKIP_BUILD=1 reuses deploy/scratch/ctx/ as it is;
# TAILOR_TEST_PARTITION=0 skips the network cut (step 2);
# TAILOR_PURE_GO=1 builds tailor without OpenBLAS; TAILOR_TEST_KEEP=1 leaves
# the cluster up for a look (then remove it with the printed command).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

project="tailortest$(date +%s)$$"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "test-compose: neither 'docker compose' nor docker-compose is installed" >&2
  exit 1
fi
tmp=$(mktemp -d)
# The network gets a subnet of its own so that the worker cut off below can
# be reconnected at the address it had, as after a real partition (docker
# network connect would otherwise hand out a new one, which the running
# process does not learn: see deploy/README.md, "Known problems"). A /24 in
# 172.30.0.0/16 that overlaps no Docker network and no route of this host.
subnet=$(
  { docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'; ip -4 route 2>/dev/null | awk '{print $1}'; } |
    python3 -c '
import ipaddress, random, sys
used = [ipaddress.ip_network(w, strict=False) for w in sys.stdin.read().split() if w[0].isdigit()]
for x in random.sample(range(16, 250), 234):
    n = ipaddress.ip_network(f"172.30.{x}.0/24")
    if not any(n.overlaps(u) for u in used):
        print(n)
        break'
)
[ -n "$subnet" ] || { echo "test-compose: no free /24 in 172.30.0.0/16 for the test network" >&2; exit 1; }
printf 'networks:\n  tailor:\n    ipam:\n      config:\n        - subnet: %s\n' "$subnet" >"$tmp/net.yml"
dc() { "${compose[@]}" -p "$project" -f docker-compose.yml -f deploy/compose.scratch.yml -f "$tmp/net.yml" "$@"; }

log() { printf '[%4ds] %s\n' "$(($(date +%s) - start))" "$*"; }
die() {
  local at=""
  [ -z "${ps0:-}" ] || at=$(status | jq -c '{state, step: .progress.step, workers: .progress.workers}' 2>/dev/null) || true
  log "FAIL: $*${at:+ (run: $at)}"
  exit 1
}

# --- the run: small and short, but long enough for the faults below ------
export TAILOR_RUN=compose-test
export TAILOR_SIZE=32 TAILOR_TRAIN=960 TAILOR_VAL=192 TAILOR_TEST=192
export TAILOR_EPOCHS=${TAILOR_TEST_EPOCHS:-20} TAILOR_BATCH=16 TAILOR_UNIT_SIZE=32
# a stuck sync step ends after this (see deploy/README.md, "Known problems")
export TAILOR_STEP_DEADLINE=20s
export TAILOR_S3_ACCESS_KEY="test$RANDOM$RANDOM" TAILOR_S3_SECRET_KEY="secret$RANDOM$RANDOM$RANDOM"
# every published port on a free port of 127.0.0.1
export TAILOR_PUBLISH=127.0.0.1
export TAILOR_ETCD_PORT= TAILOR_S3_PORT= TAILOR_COORDINATOR_METRICS_PORT= TAILOR_STANDBY_METRICS_PORT=
export TAILOR_PS0_METRICS_PORT= TAILOR_PS1_METRICS_PORT=
images=(etcd s3 tailor)
export ETCD_IMAGE="$project/etcd:test" MINIO_IMAGE="$project/s3:test" MC_IMAGE="$project/s3:test" TAILOR_IMAGE="$project/tailor:test"

failed=1
cleanup() {
  local rc=$?
  if [ "$failed" = 1 ] && [ -n "${up:-}" ]; then
    log "logs (last lines of each service):"
    dc logs --no-color --tail=25 2>&1 | sed 's/^/    /' || true
  fi
  if [ "${TAILOR_TEST_KEEP:-}" = 1 ]; then
    log "kept: ${compose[*]} -p $project -f docker-compose.yml -f deploy/compose.scratch.yml -f $tmp/net.yml down -v --rmi all"
    return
  fi
  dc down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  rm -rf "$tmp"
  for i in "${images[@]}"; do docker rmi -f "$project/$i:test" >/dev/null 2>&1 || true; done
  local left
  left=$(
    docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "label=com.docker.compose.project=$project"
    docker volume ls -q --filter "label=com.docker.compose.project=$project"
  )
  if [ -n "$left" ]; then
    log "FAIL: left behind: $left"
    rc=1
  else
    log "removed every container, network, volume and image of $project"
  fi
  log "$([ "$rc" = 0 ] && echo PASS || echo FAIL) in $(($(date +%s) - start)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ---------------------------------------------------------------
if [ "${TAILOR_SKIP_BUILD:-}" != 1 ] || [ ! -x deploy/scratch/ctx/bin/tailor ]; then
  log "building binaries (deploy/build.sh)"
  bash deploy/build.sh
fi
for i in "${images[@]}"; do
  docker build -q -f deploy/scratch/Dockerfile --target "$i" -t "$project/$i:test" deploy/scratch/ctx >/dev/null 2>&1 ||
    die "docker build --target $i"
done
log "images: $(docker images --format '{{.Repository}} {{.Size}}' | grep "^$project/" | tr '\n' ' ')"

# --- up ------------------------------------------------------------------
up=1
log "up: etcd, s3, bucket, certs, data, ingest, submit, coordinator, standby, ps0, ps1, 3 workers"
dc up -d --no-build --scale worker=3 >/dev/null 2>&1 || {
  dc ps
  die "docker compose up"
}
cid() { dc ps -q "$1" | awk 'NR == 1'; }
ps0=$(cid ps0)
[ -n "$ps0" ] || die "no ps0 container"
mapfile -t workers < <(dc ps -q worker)
[ "${#workers[@]}" = 3 ] || die "want 3 worker containers, got ${#workers[@]}"
wid() { docker inspect -f '{{.Config.Hostname}}' "$1"; } # a worker's id is its host name
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$ps0")
log "up; network $net; workers $(for w in "${workers[@]}"; do printf '%s ' "$(wid "$w")"; done)"

certs_vol=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/certs"}}{{.Name}}{{end}}{{end}}' "$ps0")
[ -n "$certs_vol" ] || die "ps0 has no /certs volume"

# status as the cluster sees it: tailor status --json, from a throwaway
# container on the cluster's network (the servers exit once the run is
# done), with the operator's certificate (admin: it reads etcd and dials the
# parameter servers over mutual TLS); status_as PAIR uses another pair,
# plain_status none
status_as() {
  docker run --rm --network "$net" -e TAILOR_ETCD=https://etcd:2379 -e TAILOR_RUN="${TAILOR_RUN:-compose-test}" \
    -v "$certs_vol:/certs:ro" -e TAILOR_TLS_CA=/certs/ca.pem -e TAILOR_TLS_CERT="/certs/$1.pem" -e TAILOR_TLS_KEY="/certs/$1-key.pem" \
    "$TAILOR_IMAGE" status --json --timeout 5s 2>/dev/null
}
status() { status_as admin; }
plain_status() {
  docker run --rm --network "$net" -e TAILOR_ETCD=https://etcd:2379 -e TAILOR_RUN="${TAILOR_RUN:-compose-test}" \
    "$TAILOR_IMAGE" status --json --timeout 5s 2>&1
}
# wait_for DESC SECONDS CMD...: poll CMD every second until it succeeds
wait_for() {
  local desc=$1 secs=$2
  shift 2
  local until=$(($(date +%s) + secs))
  until "$@"; do
    [ "$(date +%s)" -lt "$until" ] || die "timed out after ${secs}s waiting for: $desc"
    sleep 1
  done
}
step_now() { status | jq -e -r '.progress.step // empty'; }
step_at_least() { local s; s=$(step_now) && [ "$s" -ge "$1" ]; }
running() { [ "$(status | jq -r .state)" = running ]; }
leader_logs() { dc logs --no-color coordinator standby 2>/dev/null; }
lost_logged() { leader_logs | grep "msg=\"worker lost\".* worker=$1 " >/dev/null; }
member() { status | jq -e --arg id "$1" '.members[] | select(.role == "worker" and .id == $id)' >/dev/null; }
not_member() { s=$(status) && ! jq -e --arg id "$1" '.members[] | select(.role == "worker" and .id == $id)' <<<"$s" >/dev/null; }
worker_steps() { status | jq -e -r --arg id "$1" '.members[] | select(.role == "worker" and .id == $id) | .worker.steps // empty'; }
steps_above() { local s; s=$(worker_steps "$1") && awk -v s="$s" -v m="$2" 'BEGIN { exit !(s > m) }'; }

wait_for "training to start (step 20)" 240 step_at_least 20
log "training: $(status | jq -c '.progress | {epoch, epochs, step, loss, workers}')"

# the published ports reach the services
port=$(dc port coordinator 9100 | tail -n1)
curl -fsS "http://$port/metrics" >/dev/null || die "coordinator /metrics on the published port $port"
# etcd answers over TLS with a certificate of the cluster, and only so
port=$(dc port etcd 2379 | tail -n1)
for f in ca.pem admin.pem admin-key.pem; do docker cp "$ps0:/certs/$f" "$tmp/$f" >/dev/null || die "docker cp /certs/$f"; done
curl -fsS --cacert "$tmp/ca.pem" --cert "$tmp/admin.pem" --key "$tmp/admin-key.pem" "https://$port/health" | grep true >/dev/null ||
  die "etcd /health over TLS on the published port $port"
curl -fsS --cacert "$tmp/ca.pem" "https://$port/health" >/dev/null 2>&1 && die "etcd answered a client without a certificate"
curl -fsS "http://$port/health" >/dev/null 2>&1 && die "etcd answered plain HTTP"
log "published ports answer (coordinator /metrics, etcd /health over TLS with a client certificate; not without one)"

# TLS is on: the servers publish their service names (--advertise, the
# names in their certificate) and answer tailor status with the admin
# certificate; with a worker's they refuse it (a worker may not read their
# counters: a status problem per server), and without one etcd refuses it
s=$(status)
jq -e '[.members[] | select(.role == "paramserver") | .addrs.grpc] | sort == ["ps0:7000", "ps1:7000"]' <<<"$s" >/dev/null ||
  die "the parameter servers publish $(jq -c '[.members[] | select(.role == "paramserver") | .addrs.grpc]' <<<"$s"), want ps0:7000 and ps1:7000"
jq -e '[.members[] | select(.role == "paramserver") | .paramserver.version] | length == 2 and all(. != null)' <<<"$s" >/dev/null ||
  die "tailor status with the certificates got no answer of the parameter servers: $(jq -c .problems <<<"$s")"
p=$(status_as worker) || true
jq -e '[.problems[]? | select(test("paramserver ps[01]: .*PermissionDenied"))] | length == 2' <<<"$p" >/dev/null &&
  jq -e '[.members[] | select(.role == "paramserver") | .paramserver] | all(. == null)' <<<"$p" >/dev/null ||
  die "tailor status with a worker's certificate was answered by the parameter servers: $p"
log "role certificates: status as admin reads ps0:7000 and ps1:7000; as a worker refused: $(jq -r '.problems[0]' <<<"$p" | cut -c1-160)"
p=$(plain_status) && die "tailor status without a certificate read etcd: $p"
log "etcd over TLS: status without a certificate refused: $(tail -n1 <<<"$p" | cut -c1-160)"
if dc logs --no-color ps0 2>/dev/null | grep -qi 'no installed keys'; then
  die "ps0 logs gossip it could not decrypt: the members do not share the key"
fi

# --- 1. kill a worker ----------------------------------------------------
victim=${workers[2]} victim_id=$(wid "${workers[2]}")
at=$(step_now)
log "kill: docker kill worker $victim_id at step $at"
docker kill "$victim" >/dev/null
wait_for "the coordinator to log worker $victim_id lost" 30 lost_logged "$victim_id"
wait_for "training to go on after the kill (step $((at + 10)))" 120 step_at_least $((at + 10))
running || die "the run ended before the network cut could be tested: make it longer (TAILOR_TEST_EPOCHS)"
log "worker $victim_id lost, training goes on: step $(step_now)"

# --- 2. cut a worker off the network, then reconnect it ------------------
if [ "${TAILOR_TEST_PARTITION:-1}" = 0 ]; then
  log "partition: skipped (TAILOR_TEST_PARTITION=0)"
else
  cut=${workers[1]} cut_id=$(wid "${workers[1]}")
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$cut")
  log "partition: docker network disconnect $net worker $cut_id ($ip) at step $(step_now)"
  docker network disconnect "$net" "$cut" >/dev/null
  wait_for "the coordinator to log worker $cut_id lost" 30 lost_logged "$cut_id"
  log "worker $cut_id logged lost"
  wait_for "worker $cut_id to leave the membership (lease expired)" 30 not_member "$cut_id"
  at=$(step_now)
  wait_for "training to go on without $cut_id (step $((at + 5)))" 120 step_at_least $((at + 5))
  running || die "the run ended before the reconnection could be tested: make it longer (TAILOR_TEST_EPOCHS)"
  log "worker $cut_id dropped (lost, lease gone), training goes on: step $(step_now)"
  docker network connect --ip "$ip" "$net" "$cut" >/dev/null
  log "reconnected worker $cut_id at $ip"
  wait_for "worker $cut_id to rejoin the membership" 60 member "$cut_id"
  s0=$(worker_steps "$cut_id" || echo 0)
  wait_for "worker $cut_id to train again (steps > $s0)" 90 steps_above "$cut_id" "$s0"
  log "worker $cut_id rejoined and trains: $(worker_steps "$cut_id") steps; restarts: $(docker inspect -f '{{.RestartCount}}' "$cut")"
fi

# --- the run must end ----------------------------------------------------
# done within 6 minutes, and never 2 minutes without a step (a sync step
# deadline is 20 s here)
last_step=-1 last_change=$(date +%s) until=$(($(date +%s) + 360))
while :; do
  s=$(status) || s='{}'
  [ "$(jq -r .state <<<"$s")" = done ] && break
  step=$(jq -r '.progress.step // -1' <<<"$s")
  now=$(date +%s)
  if [ "$step" != "$last_step" ]; then
    last_step=$step last_change=$now
  elif [ $((now - last_change)) -ge 120 ]; then
    die "the run is stuck at step $step: no step for $((now - last_change)) s (see deploy/README.md, Known problems)"
  fi
  [ "$now" -lt "$until" ] || die "timed out after 360s waiting for the run to finish (at step $step)"
  sleep 2
done
final=$(status)
log "run done: $(jq -c '{leader, model, progress: (.progress | {epoch, epochs, step, loss})}' <<<"$final")"
[ "$(jq -r .progress.epoch <<<"$final")" = "$TAILOR_EPOCHS" ] || die "the run stopped at epoch $(jq -r .progress.epoch <<<"$final") of $TAILOR_EPOCHS"
exited0() { [ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$1")" = "exited 0" ]; }
for c in coordinator standby; do
  wait_for "$c to exit 0" 60 exited0 "$(cid "$c")"
done
leader_logs | grep 'msg=test ' >/dev/null || die "the leader logged no test-split score"
log "leader's last epochs: $(leader_logs | grep 'msg=epoch ' | tail -n2 | sed 's/.*msg=epoch //' | tr '\n' '|')"

# the model file: the coordinator's service (its /out volume, S3 settings)
# runs tailor eval on it
model=$(jq -r .model <<<"$final")
evaljson=$(dc run --rm --no-deps -T coordinator eval --json --model "$model" --data s3://tailor/fashion 2>/dev/null) ||
  die "tailor eval --model $model"
jq -e . <<<"$evaljson" >/dev/null || die "tailor eval printed no JSON: $evaljson"
log "tailor eval of $model on the test split: $(jq -c '{map: (.map // .mAP // .MAP), micro_f1: (.micro_f1 // .MicroF1)}' <<<"$evaljson" 2>/dev/null || echo ok)"

failed=0
log "killed worker $victim_id: $(docker inspect -f '{{.State.Status}}, restarts {{.RestartCount}}' "$victim")"
log "cluster test passed"
