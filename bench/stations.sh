#!/usr/bin/env bash
# Stations sharing one quota: STATIONS `dps fleet` processes (default 3), N devices each
# (default 700), started together against one `dps-mock-broker` that enforces QUOTA
# registrations a minute (default 12,000: 200 a second, as a rate per sliding second) and 5
# polls per device per 10 s, retry-after 1. The pacers learn from 429s alone: no channel
# between the stations. Prints each station's wall time, the last device's time over the
# ideal (all devices / quota per second, plus the 1 s poll floor), the share of requests
# refused, and how far apart the stations finished.
#
#   bench/stations.sh [N]      STATIONS=3 QUOTA=12000 CONCURRENCY=250 RATE=50 PORT=18886
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-700}"
stations="${STATIONS:-3}"
quota="${QUOTA:-12000}"
concurrency="${CONCURRENCY:-250}"
rate="${RATE:-50}"
port="${PORT:-18886}"

. bench/lib.sh
build_release
work="$(mktemp -d)"
trap 'kill ${broker:-} 2>/dev/null || true; rm -rf "$work"' EXIT
start_quota_broker "$work" "$port" "$quota"
for s in $(seq "$stations"); do
  group_key_devices "station$s" "$n" >"$work/devices-$s.jsonl"
done

start=$(date +%s.%N)
pids=()
for s in $(seq "$stations"); do
  (
    target/release/dps fleet --endpoint "localhost:$port" --ca "$work/ca.pem" \
      --id-scope 0ne00000001 --devices "$work/devices-$s.jsonl" --out "$work/out-$s.jsonl" \
      --concurrency "$concurrency" --rate "$rate" --min-interval-ms 1000 \
      >"$work/summary-$s" 2>/dev/null || true
    echo "$(date +%s.%N)" >"$work/end-$s"
  ) &
  pids+=($!)
done
wait "${pids[@]}"

total=$((n * stations))
walls=()
registers=0; polls=0; refused=0; assigned=0
for s in $(seq "$stations"); do
  end=$(cat "$work/end-$s")
  walls+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')")
  summary=$(cat "$work/summary-$s")
  assigned=$((assigned + $(sed -E 's/^([0-9]+) assigned.*/\1/' <<<"$summary")))
  registers=$((registers + $(sed -E 's/.*; ([0-9]+) registers.*/\1/' <<<"$summary")))
  polls=$((polls + $(sed -E 's/.* ([0-9]+) polls.*/\1/' <<<"$summary")))
  refused=$((refused + $(sed -E 's/.* ([0-9]+) refused.*/\1/' <<<"$summary")))
done
printf '%s\n' "${walls[@]}" | sort -n | awk -v total="$total" -v q="$quota" -v reg="$registers" \
  -v polls="$polls" -v refused="$refused" -v assigned="$assigned" -v stations="$stations" '
  { w[NR] = $1 }
  END {
    ideal = total * 60 / q + 1
    last = w[NR]; first = w[1]
    printf "| %d stations x %d devices | quota %d/min | stations done in %s", stations, total / stations, q, w[1]
    for (i = 2; i <= NR; i++) printf " / %s", w[i]
    printf " s | last %.2f s (ideal %.1f s, %.2fx) | spread %.0f%% | %d assigned | %d registers + %d polls, %d refused (%.2f%%) |\n",
      last, ideal, last / ideal, 100 * (last - first) / last, assigned, reg, polls, refused, 100 * refused / (reg + polls)
  }'
