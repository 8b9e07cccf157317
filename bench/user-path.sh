#!/usr/bin/env bash
# The user's path, side by side in one run: `dps fleet` (devices read from a JSON Lines file of
# X.509 certificate and key paths, outcomes written durably) and the official Node SDK
# (bench/node/bench.js) provisioning the same N devices (default 1,000) at the same concurrency
# against a fresh `dps-mock-broker` each, retry-after 0, no quota. Prints each side's wall
# time, process CPU (user + sys, /usr/bin/time) per registration and peak RSS, and the ratios;
# then two floors with the same mock: `dps bench --floor --broker`, the client's side of as many
# bare TLS handshakes over TCP, and with `--exchange` each of them carrying DPS's whole MQTT
# exchange written by hand on one thread (no actors, no MQTT library, no files): the least any
# client on rustls could spend on a registration.
# With PERF=1 it also records where `dps fleet`'s CPU goes (perf record -g) into
# bench/results/user-path.perf.txt.
#
#   bench/user-path.sh [N]     CONCURRENCY=50 MIN_INTERVAL_MS=0 RUNTIMES=0 PORT=18890 PERF=0
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-1000}"
concurrency="${CONCURRENCY:-50}"
min_interval="${MIN_INTERVAL_MS:-0}"
port="${PORT:-18890}"
scope=0ne00000001

. bench/lib.sh
build_release
[ -d bench/node/node_modules ] || bench/install-node-sdk.sh >/dev/null
work="$(mktemp -d)"
trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
x509_devices "$work" "$n" >"$work/devices.jsonl"
start_broker() {
  target/release/dps-mock-broker --listen "127.0.0.1:$port" --no-ws --retry-after 0 \
    --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
    --device-ca "$work/pki/ca.pem" --id-scope "$scope" >"$work/broker.log" 2>&1 &
  broker=$!
  wait_listening "$work/broker.log"
}
stop_broker() { kill -INT "$broker"; wait "$broker" || true; }

start_broker
fleet=(target/release/dps fleet --endpoint "localhost:$port" --ca "$work/pki/ca.pem" --id-scope "$scope"
  --devices "$work/devices.jsonl" --out "$work/out.jsonl" --concurrency "$concurrency" --min-interval-ms "$min_interval"
  --runtimes "${RUNTIMES:-0}")
/usr/bin/time -f "%e %U %S %M" -o "$work/time" "${fleet[@]}" >/dev/null 2>&1 || true
read -r ours_wall ours_user ours_sys ours_rss <"$work/time"
ours_assigned=$(grep -c '"assigned"' "$work/out.jsonl" || true)
if [ "${PERF:-0}" = 1 ]; then
  rm -f "$work/out.jsonl"
  mkdir -p bench/results
  perf record -q -g -o "$work/perf.data" "${fleet[@]}" >/dev/null 2>&1 || true
  { perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -12
    perf report -i "$work/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v "^#" | grep -v "^$" | head -40; } >bench/results/user-path.perf.txt
fi
# The floor over the wire: the client's side of bare TLS handshakes with the same mock, the
# same certificates, concurrency and count; no MQTT, no files.
floor=(target/release/dps bench --floor --broker "localhost:$port" --id-scope "$scope" --ca "$work/pki/ca.pem"
  --device-ca-cert "$work/pki/ca.pem" --device-ca-key "$work/pki/ca.key" --devices "$n"
  --concurrency "$concurrency" --json)
"${floor[@]}" >"$work/floor.json"
floor_cpu=$(grep -o '"cpu_seconds":[0-9.]*' "$work/floor.json" | cut -d: -f2)
"${floor[@]}" --exchange >"$work/exchange.json"
exchange_cpu=$(grep -o '"cpu_seconds":[0-9.]*' "$work/exchange.json" | cut -d: -f2)
stop_broker

start_broker
NODE_EXTRA_CA_CERTS="$work/pki/ca.pem" /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
  node bench/node/bench.js --endpoint "localhost:$port" --id-scope "$scope" --certs "$work/pki" \
  --devices "$n" --concurrency "$concurrency" >"$work/node.json" 2>&1 || true
read -r node_wall node_user node_sys node_rss <"$work/time"
stop_broker

awk -v n="$n" -v fc="$floor_cpu" -v xc="$exchange_cpu" -v c="$concurrency" -v ow="$ours_wall" -v ou="$ours_user" -v os="$ours_sys" -v orss="$ours_rss" \
  -v oa="$ours_assigned" -v nw="$node_wall" -v nu="$node_user" -v ns="$node_sys" -v nrss="$node_rss" 'BEGIN {
  ocpu = ou + os; ncpu = nu + ns
  printf "| %d X.509 devices from files, concurrency %d | dps fleet: %.2f s, CPU %.2f s (%.2f ms a registration), peak RSS %.1f MiB, %d assigned | Node SDK: %.2f s, CPU %.2f s (%.2f ms), peak RSS %.1f MiB | CPU %.1fx less, RSS %.1fx less |\n",
    n, c, ow, ocpu, 1000 * ocpu / n, orss / 1024, oa, nw, ncpu, 1000 * ncpu / n, nrss / 1024, ncpu / ocpu, nrss / orss
  if (fc > 0) printf "bare TLS client over TCP (the floor): CPU %.2f s (%.2f ms a handshake); Node SDK / floor %.1fx, dps fleet / floor %.1fx\n", fc, 1000 * fc / n, ncpu / fc, ocpu / fc
  if (xc > 0) printf "with the whole MQTT exchange by hand (the floor of a registration): CPU %.2f s (%.2f ms a registration); Node SDK / floor %.1fx, dps fleet / floor %.2fx\n", xc, 1000 * xc / n, ncpu / xc, ocpu / xc
}'
grep -o '"failed":[0-9]*' "$work/node.json" | sed 's/^/Node SDK /' || true
