#!/usr/bin/env bash
# The service goes away mid-run: N group-key devices (default 2,000) provision with `dps fleet`
# against a `dps-mock-broker` at QUOTA registrations a minute (default 12,000), which is stopped
# OUTAGE seconds (default 15) after the fleet starts plus AT seconds (default 3), and started
# again on the same address with the same certificates. Counts the fleet's connection attempts
# (strace, connect() calls) in each second of the outage, and checks the out file: every device
# assigned, none written twice.
#
#   bench/outage.sh [N]      OUTAGE=15 AT=3 QUOTA=12000 CONCURRENCY=250 PORT=18887
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-2000}"
outage="${OUTAGE:-15}"
at="${AT:-3}"
quota="${QUOTA:-12000}"
concurrency="${CONCURRENCY:-250}"
port="${PORT:-18887}"
command -v strace >/dev/null || { echo "needs strace"; exit 1; }

. bench/lib.sh
build_release
work="$(mktemp -d)"
target/release/dps-mock-broker pki --out "$work/pki" >/dev/null
broker() {
  target/release/dps-mock-broker --listen "127.0.0.1:$port" --no-ws \
    --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
    --device-ca "$work/pki/ca.pem" --group-key "$GROUP_KEY" --retry-after 1 \
    --quota-registrations-per-minute "$quota" --quota-polls-per-device 5 >>"$work/broker.log" 2>&1 &
  echo $!
}
pid=$(broker)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
wait_listening "$work/broker.log"
group_key_devices outage "$n" >"$work/devices.jsonl"

start=$(date +%s.%N)
strace -f -tt -e trace=connect -o "$work/connects" target/release/dps fleet \
  --endpoint "localhost:$port" --ca "$work/pki/ca.pem" --id-scope 0ne00000001 \
  --devices "$work/devices.jsonl" --out "$work/out.jsonl" --concurrency "$concurrency" \
  --rate 50 --min-interval-ms 1000 --timeout 120 >"$work/summary" 2>"$work/fleet.log" &
fleet=$!
sleep "$at"
kill "$pid"; wait "$pid" 2>/dev/null || true
down=$(date +%s.%N)
sleep "$outage"
up=$(date +%s.%N)
pid=$(broker)
wait "$fleet" || true
end=$(date +%s.%N)

echo "$(cat "$work/summary")"
[ -n "${KEEP:-}" ] && cp "$work/out.jsonl" "$KEEP" && cp "$work/fleet.log" "$KEEP.log" && cp "$work/connects" "$KEEP.connects" && cp "$work/broker.log" "$KEEP.broker"
# connect() calls to the broker's port during the outage, per second.
awk -v down="$down" -v up="$up" -v port="$port" '
  /connect\(/ && index($0, "htons(" port ")") {
    split($2, t, ":"); s = t[1] * 3600 + t[2] * 60 + t[3]
    times[++n] = s
  }
  END {
    # strace prints wall-clock times of day; the outage bounds are Unix times.
    cmd = "date -d @" int(down) " +%H:%M:%S"; cmd | getline d; close(cmd)
    split(d, dt, ":"); d0 = dt[1] * 3600 + dt[2] * 60 + dt[3] + (down - int(down))
    len = up - down
    for (i = 1; i <= n; i++) if (times[i] >= d0 && times[i] < d0 + len) { c++; per[int(times[i] - d0)]++ }
    printf "outage %.1f s: %d connection attempts (%.1f a second); per second:", len, c, c / len
    for (k = 0; k < int(len); k++) printf " %d", per[k] + 0
    printf "\n"
  }' "$work/connects"
lines=$(wc -l <"$work/out.jsonl")
assigned=$(grep -c '"outcome":"assigned"' "$work/out.jsonl" || true)
unique=$(grep '"outcome":"assigned"' "$work/out.jsonl" | sed -E 's/.*"registration_id":"([^"]+)".*/\1/' | sort -u | wc -l)
awk -v n="$n" -v start="$start" -v end="$end" -v lines="$lines" -v assigned="$assigned" -v unique="$unique" \
  'BEGIN { printf "| %d devices | %.1f s | %d lines, %d assigned, %d distinct |\n", n, end - start, lines, assigned, unique }'
