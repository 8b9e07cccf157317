#!/usr/bin/env bash
# A fleet at the service's quota: N devices (default 2,000) provisioned with `dps fleet`
# against one `dps-mock-broker` process that enforces DPS's limits: QUOTA registrations a
# minute (default 12,000, i.e. 200 a second) and 5 polls per device per 10 s. The ideal time
# is N / (QUOTA / 60) seconds. Prints the wall time over the ideal, the requests sent and
# refused, and the client's CPU and peak RSS.
#
#   bench/fleet.sh [N]        CONCURRENCY=500 RATE=50 QUOTA=12000 PORT=18884
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-2000}"
quota="${QUOTA:-12000}"
concurrency="${CONCURRENCY:-500}"
rate="${RATE:-50}"
port="${PORT:-18884}"

. bench/lib.sh
build_release
work="$(mktemp -d)"
trap 'kill ${broker:-} 2>/dev/null || true; rm -rf "$work"' EXIT
start_quota_broker "$work" "$port" "$quota"
group_key_devices fleet "$n" >"$work/devices.jsonl"

/usr/bin/time -f "%e %U %S %M" -o "$work/time" target/release/dps fleet \
  --endpoint "localhost:$port" --ca "$work/ca.pem" --id-scope 0ne00000001 \
  --devices "$work/devices.jsonl" --out "$work/out.jsonl" \
  --concurrency "$concurrency" --rate "$rate" --min-interval-ms 1000 >"$work/summary" 2>"$work/stderr" || true
read -r wall user sys rss <"$work/time"
summary="$(cat "$work/summary")"; [ -n "${KEEP:-}" ] && cp "$work/stderr" "$KEEP"
echo "$summary"
registers=$(sed -E 's/.*; ([0-9]+) registers.*/\1/' <<<"$summary")
polls=$(sed -E 's/.* ([0-9]+) polls.*/\1/' <<<"$summary")
refused=$(sed -E 's/.* ([0-9]+) refused.*/\1/' <<<"$summary")
awk -v n="$n" -v q="$quota" -v wall="$wall" -v user="$user" -v sys="$sys" -v rss="$rss" \
  -v reg="$registers" -v polls="$polls" -v refused="$refused" -v c="$concurrency" 'BEGIN {
  ideal = n * 60 / q
  printf "| %d devices | quota %d/min | concurrency %d | %.2f s (ideal %.1f s, %.2fx) | %d registers + %d polls | %d refused (%.2f%%) | CPU %.2f s | peak RSS %.1f MiB |\n",
    n, q, c, wall, ideal, wall / ideal, reg, polls, refused, 100 * refused / (reg + polls), user + sys, rss / 1024
}'
