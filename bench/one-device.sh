#!/usr/bin/env bash
# One device on a small gateway, side by side: this transport's `one_device` example built with
# the size-optimised `small` profile and no default features (MQTT over TLS only), the `dps
# provision` command (release build), the official Node SDK (bench/node, one device) and the
# official Python SDK (bench/python, installed with pip into a local virtualenv), each
# provisioning the same X.509 device against one mock broker process on 127.0.0.1:8883 (the
# Python SDK only speaks to port 8883). Prints size, wall time, CPU and peak RSS of each.
#
#   bench/one-device.sh          RUNS=3
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runs="${RUNS:-3}"
scope=0ne00000001
id=bench-0001

# MQTT over TLS only: no WebSocket, proxy, issuance or platform trust store.
cargo build --profile small -q -p dps-transport-actor --example one_device --no-default-features
cargo build --release -q -p dps-mock-broker -p dps-harness
[ -d bench/node/node_modules ] || bench/install-node-sdk.sh >/dev/null
if [ ! -x bench/python/.venv/bin/python ]; then
  python3 -m venv bench/python/.venv
  bench/python/.venv/bin/pip install -q -r bench/python/requirements.txt
fi

work="$(mktemp -d)"
target/release/dps-mock-broker pki --out "$work/pki" --count 1 >/dev/null
target/release/dps-mock-broker --listen 127.0.0.1:8883 --no-ws --retry-after 1 \
  --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
  --device-ca "$work/pki/ca.pem" --id-scope "$scope" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q listening "$work/broker.log" && break; sleep 0.1; done

measure() { # NAME COMMAND...: one table row per run
  local name=$1; shift
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    read -r wall user sys rss <"$work/time"
    awk -v n="$name" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" \
      'BEGIN { printf "| %s | %.2f s | %.3f s | %.1f MiB |\n", n, w, u + s, r / 1024 }'
  done
}

size() { du -sb "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'; }
echo "sizes: this transport $(size target/small/examples/one_device) (one binary);" \
  "Node SDK $(size bench/node/node_modules) (node_modules, plus node itself);" \
  "Python SDK $(size bench/python/.venv/lib) (site-packages, plus python itself)"
echo "| implementation | wall time | CPU (user + system) | peak RSS |"
echo "|---|---|---|---|"
DPS_ENDPOINT=mqtts://localhost:8883 DPS_ID_SCOPE=$scope DPS_REGISTRATION_ID=$id \
  DPS_CERT_FILE="$work/pki/$id.pem" DPS_KEY_FILE="$work/pki/$id.key" DPS_CA_FILE="$work/pki/ca.pem" \
  measure "this transport (small profile)" target/small/examples/one_device
measure "dps provision" target/release/dps provision --endpoint localhost:8883 --id-scope "$scope" \
  --registration-id "$id" --cert "$work/pki/$id.pem" --key "$work/pki/$id.key" --ca "$work/pki/ca.pem"
NODE_EXTRA_CA_CERTS="$work/pki/ca.pem" measure "Node SDK" node bench/node/bench.js \
  --endpoint localhost:8883 --id-scope "$scope" --certs "$work/pki" --devices 1 --concurrency 1
measure "Python SDK" bench/python/.venv/bin/python bench/python/one_device.py localhost "$scope" \
  "$id" "$work/pki/$id.pem" "$work/pki/$id.key" "$work/pki/ca.pem"
