#!/usr/bin/env bash
# Runs the rows of BENCHMARKS.md's "Scaling on an emulated network" one
# scenario at a time with cmd/netlab and appends each row (after a comment
# line with the time, the load average and the flags) to
# ${OUT:-netlab-scaling.md}; `go run ./cmd/netlab --plot PNG FILE` draws
# them. Needs root. Every row: synthetic workers (the median step of tailor
# bench: 210 ms at 64 px, 557 ms at 96 px), time dilation 8, batch 32.
#   bash scripts/netlab-scaling.sh [ROWSET]   (ROWSET: scaling, variants, 96, all)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-netlab-scaling.md}
dir=${NETLAB_DIR:-/tmp/netlab}
set_=${1:-all}
mkdir -p "$dir"
go build -o "$dir/netlab" ./cmd/netlab || exit 1
# row SIZE STEP TRAIN FLAGS...: one scenario
row() {
	local size=$1 step=$2 train=$3
	shift 3
	echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): --size $size $*" >>"$out"
	"$dir/netlab" --dir "$dir" --size "$size" --train "$train" --dilation 8 --step "$step" "$@" 2>>"$out.log" |
		grep '^| [0-9]' | sed "s/\$/ $size px/" >>"$out" || echo "| failed: --size $size $* |" >>"$out"
}
r64() { row 64 210ms 16384 "$@"; }
if [ "$set_" = scaling ] || [ "$set_" = all ]; then
	for n in 1 2 4 8 16 32; do r64 --workers "$n" --servers 4 --rate 10e9 --steps 8 --timeout 8m; done
	for n in 1 4 8 16; do r64 --workers "$n" --servers 4 --rate 1e9 --steps 4 --timeout 10m; done
fi
if [ "$set_" = variants ] || [ "$set_" = all ]; then
	for p in 1 2; do r64 --workers 16 --servers "$p" --rate 10e9 --steps 6; done
	r64 --workers 16 --servers 8 --rate 10e9 --steps 8
	for c in fp16 topk; do r64 --workers 16 --servers 4 --rate 10e9 --steps 8 --compression "$c"; done
	for n in 1 16; do r64 --workers "$n" --servers 4 --rate 10e9 --steps 8 --overlap=false; done
	for n in 1 16; do r64 --workers "$n" --servers 4 --rate 10e9 --steps 8 --mode async; done
	r64 --workers 1 --servers 4 --rate 10e9 --steps 8 --sync-bn=false
	for p in 4 8; do r64 --workers 16 --servers "$p" --rate 10e9 --steps 8 --sync-bn=false; done
fi
if [ "$set_" = 96 ] || [ "$set_" = all ]; then
	for n in 1 16; do row 96 557ms 8192 --workers "$n" --servers 4 --rate 10e9 --steps 6; done
fi
