#!/usr/bin/env bash
# Runs the scaling rows of BENCHMARKS.md ("Scaling on an emulated network")
# one scenario at a time with cmd/netlab, and appends each row (and the
# load average before it) to ${OUT:-netlab-scaling.md}. Needs root. Every
# row: synthetic 64 px workers (a 210 ms step, tailor bench's median),
# time dilation 8, batch 32.
#   bash scripts/netlab-scaling.sh [ROWSET]   (ROWSET: core, variants, all)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-netlab-scaling.md}
dir=${NETLAB_DIR:-/tmp/netlab}
set_=${1:-all}
go build -o "$dir/netlab" ./cmd/netlab
row() {
	echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): $*" >>"$out"
	"$dir/netlab" --dir "$dir" --train 16384 --dilation 8 --step 210ms "$@" 2>>"$out.log" | grep '^| [0-9]' >>"$out" ||
		echo "| failed: $* |" >>"$out"
}
if [ "$set_" = core ] || [ "$set_" = all ]; then
	for n in 1 2 4 8 16 32; do row --workers "$n" --servers 4 --rate 10e9 --steps 8; done
	for n in 1 2 4 8 16; do row --workers "$n" --servers 4 --rate 1e9 --steps 4 --timeout 10m; done
fi
if [ "$set_" = variants ] || [ "$set_" = all ]; then
	for p in 1 2 8; do row --workers 16 --servers "$p" --rate 10e9 --steps 6; done
	for c in fp16 topk; do row --workers 16 --servers 4 --rate 10e9 --steps 8 --compression "$c"; done
	row --workers 16 --servers 4 --rate 10e9 --steps 8 --overlap=false
	row --workers 16 --servers 4 --rate 10e9 --steps 8 --sync-bn=false
	row --workers 16 --servers 4 --rate 10e9 --steps 8 --mode async
	for c in fp16 topk; do row --workers 16 --servers 4 --rate 1e9 --steps 4 --timeout 10m --compression "$c"; done
fi
