#!/usr/bin/env bash
# The mock at fleet scale: one `dps-mock-broker` holding N device connections at once (default
# 10,000, from `dps bench --hold`, group-key SAS devices, each connected with its register
# sent), while a good device provisions with `dps provision` now and then. Prints the broker's
# open-file limit, its resident memory idle and with every device connected (and per
# connection), and the good device's provisioning time idle and under the load.
#
#   bench/mock-scale.sh [N]      CONCURRENCY=500 PORT=18888 HOLD=25 (retry-after 0, so the
# good device's time is the broker's, not a wait)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-10000}"
concurrency="${CONCURRENCY:-500}"
port="${PORT:-18888}"
hold="${HOLD:-25}"
scope=0ne00000001

. bench/lib.sh
build_release
work="$(mktemp -d)"
target/release/dps-mock-broker --listen "127.0.0.1:$port" --no-ws --ca-out "$work/ca.pem" \
  --group-key "$GROUP_KEY" --retry-after 0 2>"$work/broker.err" >"$work/broker.out" &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
wait_listening "$work/broker.out"
rss() { awk '/VmRSS/ { print $2 }' "/proc/$broker/status"; }
fds() { ls "/proc/$broker/fd" | wc -l; }
# One good device's provisioning, in milliseconds.
good() {
  local t0 t1
  t0=$(date +%s%N)
  target/release/dps provision --endpoint "localhost:$port" --ca "$work/ca.pem" --id-scope "$scope" \
    --registration-id "good-$1" --group-key "$GROUP_KEY" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

idle_rss=$(rss)
idle=$(for i in 1 2 3 4 5; do good "idle-$i"; done | median)

target/release/dps bench --hold --hold-for "$hold" --devices "$n" --concurrency "$concurrency" \
  --auth sas --group-key "$GROUP_KEY" --broker "localhost:$port" --ca "$work/ca.pem" --id-scope "$scope" \
  >"$work/bench.out" 2>"$work/bench.err" &
bench=$!
# Until every device is connected (the bench says so), or the bench ends.
while kill -0 "$bench" 2>/dev/null && ! grep -q holding "$work/bench.err"; do sleep 0.2; done
held_rss=$(rss)
held_fds=$(fds)
loaded=$(for i in 1 2 3 4 5; do good "loaded-$i"; done | median)
wait "$bench" || true

echo "$(head -1 "$work/broker.err")"
awk -v n="$n" -v fds="$held_fds" -v idle_rss="$idle_rss" -v held_rss="$held_rss" -v idle="$idle" -v loaded="$loaded" 'BEGIN {
  printf "| %d devices held | broker files open %d | RSS %.1f MiB idle, %.1f MiB held: %.1f KiB a connection | a good device %d ms idle, %d ms under load (%.2fx) |\n",
    n, fds, idle_rss / 1024, held_rss / 1024, (held_rss - idle_rss) / n, idle, loaded, loaded / idle
}'
grep -E 'failed|error' "$work/bench.out" "$work/bench.err" | head -3 || true
