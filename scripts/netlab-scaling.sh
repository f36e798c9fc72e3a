#!/usr/bin/env bash
# Runs the scaling rows of BENCHMARKS.md ("Scaling on an emulated network")
# one scenario at a time with cmd/netlab, and appends each row (and the
# load average before it) to ${OUT:-netlab-scaling.md}. Needs root. Every
# row: synthetic 64 px workers (a 210 ms step, tailor bench's median),
# time dilation 8, batch 32.
#   bash scripts/netlab-scaling.sh [ROWSET]   (ROWSET: core, variants, more, all)
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
if [ "$set_" = more ] || [ "$set_" = all ]; then
	# the one-worker baselines of the variants that change a step at N = 1
	row --workers 1 --servers 4 --rate 10e9 --steps 8 --mode async
	row --workers 1 --servers 4 --rate 10e9 --steps 8 --sync-bn=false
	# both fixes of the target row together: more servers, local BatchNorm
	row --workers 16 --servers 8 --rate 10e9 --steps 8 --sync-bn=false
	row --workers 32 --servers 4 --rate 10e9 --steps 8 --timeout 8m
	# 96 px: a 557 ms step (tailor bench's median), its own data set
	for n in 1 16; do
		echo "# $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): 96 px --workers $n --servers 4 --rate 10e9" >>"$out"
		"$dir/netlab" --dir "$dir" --size 96 --train 8192 --dilation 8 --step 557ms --workers "$n" --servers 4 --rate 10e9 --steps 6 \
			2>>"$out.log" | grep '^| [0-9]' | sed 's/$/ 96 px/' >>"$out" || echo "| failed: 96 px --workers $n |" >>"$out"
	done
fi
