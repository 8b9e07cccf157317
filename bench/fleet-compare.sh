#!/usr/bin/env bash
# A fleet at the service's quota, side by side: `dps fleet` and the official Node SDK (2,000
# `ProvisioningDeviceClient`s, bench/node/bench.js) provisioning the same N X.509 devices at
# the same concurrency, each against a fresh `dps-mock-broker` process that enforces QUOTA
# registrations a minute (a rate per sliding second) and 5 polls per device per 10 s, with
# retry-after 1. The broker counts the requests it admitted and refused (429).
#
#   bench/fleet-compare.sh [N]     CONCURRENCY=500 QUOTA=12000 PORT=18885
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-2000}"
quota="${QUOTA:-12000}"
concurrency="${CONCURRENCY:-500}"
port="${PORT:-18885}"
scope=0ne00000001

. bench/lib.sh
build_release
[ -d bench/node/node_modules ] || bench/install-node-sdk.sh >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
x509_devices "$work" "$n" >"$work/devices.jsonl"

start_broker() {
  target/release/dps-mock-broker --listen "127.0.0.1:$port" --no-ws --retry-after 1 \
    --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
    --device-ca "$work/pki/ca.pem" --id-scope "$scope" \
    --quota-registrations-per-minute "$quota" --quota-polls-per-device 5 >"$work/broker.log" 2>&1 &
  broker=$!
  wait_listening "$work/broker.log"
}
stop_broker() { # prints the broker's quota summary
  kill -INT "$broker"; wait "$broker" || true
  grep '^quotas:' "$work/broker.log" | sed 's/^quotas: //'
}
row() { # NAME WALL CPU RSS_KIB SUMMARY
  awk -v name="$1" -v wall="$2" -v cpu="$3" -v rss="$4" -v n="$n" -v q="$quota" -v s="$5" 'BEGIN {
    split(s, f, /[^0-9]+/); # registrations accepted, throttled; polls accepted, throttled
    sent = f[2] + f[3] + f[4] + f[5]; refused = f[3] + f[5]
    printf "| %s | %.2f s (%.2fx) | %d | %d (%.2f%%) | %.2f s | %.1f MiB |\n",
      name, wall, wall / (n * 60 / q), sent, refused, 100 * refused / sent, cpu, rss / 1024
  }'
}

echo "| implementation | wall time (over the ideal $(awk -v n="$n" -v q="$quota" 'BEGIN{print n*60/q}') s) | requests | refused (429) | client CPU | client peak RSS |"
echo "|---|---|---|---|---|---|"
start_broker
/usr/bin/time -f "%e %U %S %M" -o "$work/time" target/release/dps fleet \
  --endpoint "localhost:$port" --ca "$work/pki/ca.pem" --id-scope "$scope" \
  --devices "$work/devices.jsonl" --out "$work/out.jsonl" --concurrency "$concurrency" \
  --min-interval-ms 1000 >/dev/null 2>&1 || true
read -r wall user sys rss <"$work/time"
row "dps fleet" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')" "$rss" "$(stop_broker)"

start_broker
NODE_EXTRA_CA_CERTS="$work/pki/ca.pem" /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
  node bench/node/bench.js --endpoint "localhost:$port" --id-scope "$scope" --certs "$work/pki" \
  --devices "$n" --concurrency "$concurrency" >"$work/node.json" 2>&1 || true
read -r wall user sys rss <"$work/time"
row "Node SDK $(node -e 'console.log(require("./bench/node/node_modules/azure-iot-provisioning-device/package.json").version)')" \
  "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')" "$rss" "$(stop_broker)"
grep -o '"failed":[0-9]*' "$work/node.json" | sed 's/^/Node SDK /' || true
