#!/usr/bin/env bash
# The demo: compose a multi-label clothing data set from Debian's Fashion-MNIST,
# ingest it into shards, train SmallerVGGNet, evaluate it on the test split and
# predict a few test images. About 10 minutes on 2 cores.
# Everything goes to ${OUT:-out/demo}; set EPOCHS, TRAIN, SIZE to change the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-out/demo}
EPOCHS=${EPOCHS:-10}
TRAIN=${TRAIN:-4000}
SIZE=${SIZE:-64}
mkdir -p bin "$OUT"
echo "== building tailor (OpenBLAS)"
go build -tags openblas -ldflags "$(bash scripts/ldflags.sh)" -o bin/tailor ./cmd/tailor
echo "== composing the Fashion-outfits data set: $OUT/images"
bin/tailor data fashion --force --size "$SIZE" --train "$TRAIN" --val 1000 --test 1000 "$OUT/images"
echo "== ingesting into shards: $OUT/shards"
bin/tailor shard build --overwrite --size "$SIZE" "$OUT/images" "$OUT/shards"
echo "== training $EPOCHS epochs: $OUT/run"
bin/tailor train --data "$OUT/shards" --out "$OUT/run" --epochs "$EPOCHS"
echo "== evaluating on the test split"
bin/tailor eval --model "$OUT/run/model.tailor" --data "$OUT/shards" --split test
echo "== predicting three test images"
mapfile -t imgs < <(find "$OUT/images/test" -name '*.png' | sort | head -3)
bin/tailor predict "$OUT/run/model.tailor" "${imgs[@]}"
echo "== done: model $OUT/run/model.tailor, plot $OUT/run/history.png, history $OUT/run/history.csv"
