#!/usr/bin/env bash
# Side by side, against the same mock broker (another process) with the same PKI and
# retry-after 0: `dps bench` (this project) and the official Node SDK provisioning the same N
# devices at the same concurrency, plus the bare rustls handshake floor.
#
#   bench/compare.sh [N ...]          default: 100 1000 10000
#   CONCURRENCY=50 bench/compare.sh   default concurrency: 50
#   MEMORY=1000 bench/compare.sh      also M devices held connected (--hold), for memory per
#                                     connected device (default 1000; 0 skips)
#
# Writes one JSON line per run to bench/results/<date>.jsonl and prints a Markdown table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 10000)
concurrency="${CONCURRENCY:-50}"
memory="${MEMORY:-1000}"
port="${PORT:-18883}"
scope=0ne00000001

cargo build --release -q -p dps-harness -p dps-mock-broker
[ -d bench/node/node_modules ] || bench/install-node-sdk.sh

work="$(mktemp -d)"
max=0
for n in "${sizes[@]}" "$memory"; do [ "$n" -gt "$max" ] && max=$n; done
target/release/dps-mock-broker pki --out "$work/pki" --count "$max" >/dev/null

target/release/dps-mock-broker --listen "127.0.0.1:$port" --no-ws --retry-after 0 \
  --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
  --device-ca "$work/pki/ca.pem" --id-scope "$scope" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q listening "$work/broker.log" && break; sleep 0.1; done

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%dT%H%M).jsonl"
: >"$out"
# The broker's CPU time (user + system, in seconds) so far, to charge each run its share.
broker_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$broker/stat"; }
charged() { # KIND N SECONDS_BEFORE: one JSON line with the broker CPU the run cost
  awk -v kind="$1" -v n="$2" -v now="$(broker_cpu)" -v before="$3" 'BEGIN {
    printf "{\"kind\":\"broker-cpu\",\"for\":\"%s\",\"devices\":%d,\"cpu_seconds\":%.2f}\n", kind, n, now - before
  }' >>"$out"
}
rust() { # N C [--hold]
  local before; before=$(broker_cpu)
  target/release/dps bench --devices "$1" --concurrency "$2" --json \
    --broker "127.0.0.1:$port" --id-scope "$scope" --ca "$work/pki/ca.pem" \
    --device-ca-cert "$work/pki/ca.pem" --device-ca-key "$work/pki/ca.key" ${3:-} | tee -a "$out"
  charged "transport${3:+-hold}" "$1" "$before"
}
node_sdk() { # N C [--hold]
  local before; before=$(broker_cpu)
  NODE_EXTRA_CA_CERTS="$work/pki/ca.pem" node bench/node/bench.js --endpoint "127.0.0.1:$port" \
    --id-scope "$scope" --certs "$work/pki" --devices "$1" --concurrency "$2" ${3:-} \
    | tee -a "$out" || true
  charged "node-sdk${3:+-hold}" "$1" "$before"
}
for n in "${sizes[@]}"; do
  echo "N=$n: dps bench" >&2; rust "$n" "$concurrency"
  echo "N=$n: node sdk" >&2; node_sdk "$n" "$concurrency"
  echo "N=$n: rustls floor" >&2; target/release/dps bench --floor --devices "$n" --json | tee -a "$out"
done
if [ "$memory" -gt 0 ]; then
  echo "memory: $memory devices held connected" >&2
  rust "$memory" "$concurrency" --hold; node_sdk "$memory" "$concurrency" --hold
fi

python3 - "$out" "$concurrency" "$memory" "${sizes[@]}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [x for x in rows if "devices" in x]
concurrency, memory = int(sys.argv[2]), int(sys.argv[3])
sizes = [int(s) for s in sys.argv[4:]]
print("| N | implementation | registrations/s | p50 ms | p95 ms | p99 ms | failed | peak RSS MiB | CPU s | broker CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for n in sizes:
    for kind in ("transport", "node-sdk", "rustls-floor"):
        r = [x for x in rows if x["devices"] == n and x["kind"] == kind and (kind == "rustls-floor" or x["concurrency"] == concurrency)]
        if not r:
            continue
        r = r[-1]
        b = [x for x in rows if x["kind"] == "broker-cpu" and x["for"] == kind and x["devices"] == n]
        broker = f"{b[-1]['cpu_seconds']:.2f}" if b else "-"
        print(f"| {n} | {kind} | {r['registrations_per_sec']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['failed']} | {r['peak_rss_mib']:.1f} | {r['cpu_seconds']:.2f} | {broker} |")
if memory:
    print()
    print(f"| implementation | RSS before connecting | RSS, {memory} connected | per connected device |")
    print("|---|---|---|---|")
    for kind in ("transport-hold", "node-sdk-hold"):
        r = [x for x in rows if x["kind"] == kind and x["devices"] == memory]
        if r:
            r = r[-1]
            print(f"| {kind} | {r['before_rss_mib']:.1f} MiB | {r['connected_rss_mib']:.1f} MiB | {r['kib_per_connected_device']:.1f} KiB |")
PY
