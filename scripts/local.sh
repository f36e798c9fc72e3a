#!/usr/bin/env bash
# The main job: a real training cluster on this machine. `tailor local`
# starts an embedded etcd and an embedded S3 server, a coordinator and a
# standby, 2 parameter servers and 3 workers as separate processes on
# 127.0.0.1, composes the Fashion-outfits data set on first use and ingests
# it into the S3 server, trains in sync mode with checkpoints in it,
# evaluates on the test split and leaves a model and a plot. Then it
# predicts three test images with the model. About 5 minutes on 2 cores.
# Everything goes to ${OUT:-out/local}; WORKERS, PS, EPOCHS, MODE, SIZE
# change the run, STORE=file keeps shards and checkpoints as files instead
# of in the S3 server; RESUME=1 continues an interrupted run from its newest
# checkpoint (with the same settings). AUGMENT=true turns the tutorial's
# augmentation on: in a run of 10 epochs on 4,000 images it costs 9 pt of
# validation mAP (BENCHMARKS.md, "Main command"), so the demo leaves it off. The terminal shows the run's status;
# each process's log is in $OUT/logs (VERBOSE=1 streams them instead).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-out/local}
mkdir -p bin
echo "== building tailor (OpenBLAS)"
go build -tags openblas -ldflags "$(bash scripts/ldflags.sh)" -o bin/tailor ./cmd/tailor
args=(local --out "$OUT" --workers "${WORKERS:-3}" --ps "${PS:-2}" --epochs "${EPOCHS:-18}"
	--mode "${MODE:-sync}" --size "${SIZE:-64}" --store "${STORE:-s3}" --standby --checkpoint-every 100
	--augment="${AUGMENT:-false}")
if [ -n "${RESUME:-}" ]; then args+=(--resume); fi
if [ -n "${VERBOSE:-}" ]; then args+=(--verbose); fi
echo "== bin/tailor ${args[*]}"
bin/tailor "${args[@]}"
echo "== predicting three test images"
mapfile -t imgs < <(find "$OUT/images/test" -name '*.png' | sort | head -3)
bin/tailor predict "$OUT/run/model.tailor" "${imgs[@]}"
echo "== done: model $OUT/run/model.tailor, plot $OUT/run/history.png, history $OUT/run/history.csv,"
echo "   TensorBoard: tensorboard --logdir $OUT/run/tensorboard; the processes' logs: $OUT/logs"
