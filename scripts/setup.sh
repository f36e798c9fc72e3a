#!/usr/bin/env bash
# Installs what tailor needs on a fresh Debian 12 machine (idempotent).
#   scripts/setup.sh          Fashion-MNIST and OpenBLAS: enough to build and run tailor
#   scripts/setup.sh --test   also PyTorch and the onnx package (parity tests, ONNX export checks, baselines), jq, iproute2 (the compose test),
#                             protoc and python3-protobuf (TensorBoard event files read with TensorBoard's protos),
#                             chromium (the dashboard's end-to-end test drives it headless)
# Go 1.26 must already be on PATH; Go modules come from the module proxy.
set -euo pipefail
pkgs=(dataset-fashion-mnist libopenblas-dev gcc git ca-certificates)
[ "${1:-}" = "--test" ] && pkgs+=(python3-torch python3-onnx python3-numpy python3-pil jq iproute2 protobuf-compiler python3-protobuf chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v go >/dev/null || { echo "setup: Go 1.26 is not on PATH (https://go.dev/dl/)" >&2; exit 1; }
