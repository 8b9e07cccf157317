#!/usr/bin/env bash
# Hours at the limit, in small: DURATION seconds (default 1,800) of `dps fleet` rounds at the
# quota against one long-lived `dps-mock-broker` (QUOTA registrations a minute, default 12,000:
# 200 a second; 5 polls per device per 10 s; retry-after 1). Each round provisions the same N
# devices (default 2,000) again with a fresh out file, so every device re-registers (the mock's
# reprovision path, its registration records kept). Every INTERVAL seconds (default 60) it
# samples the broker's and the running client's resident memory, open files and threads, and
# each round's client peak RSS (/usr/bin/time). The first WARMUP minutes (default 6: finished
# operations are kept 5 minutes) are warm-up. Writes soak.csv, rounds.csv and soak.png (matplotlib,
# installed with pip if missing) into OUT (default bench/results/soak) and prints the drift of
# each series after the first INTERVAL (warm-up). Not part of `.ci/run`.
#
#   bench/soak.sh      DURATION=1800 INTERVAL=60 N=2000 QUOTA=12000 PORT=18889 OUT=bench/results/soak
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
duration="${DURATION:-1800}"
interval="${INTERVAL:-60}"
n="${N:-2000}"
quota="${QUOTA:-12000}"
port="${PORT:-18889}"
out="${OUT:-bench/results/soak}"
mkdir -p "$out"

. bench/lib.sh
build_release
work="$(mktemp -d)"
trap 'kill ${broker:-} 2>/dev/null || true; rm -rf "$work"' EXIT
start_quota_broker "$work" "$port" "$quota"
group_key_devices soak "$n" >"$work/devices.jsonl"

proc() { # pid -> rss_kib,files,threads
  local pid=$1
  [ -d "/proc/$pid" ] || { echo "NA,NA,NA"; return; }
  echo "$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status"),$(ls "/proc/$pid/fd" 2>/dev/null | wc -l),$(awk '/Threads/ { print $2 }' "/proc/$pid/status")"
}

# The rounds, back to back, until the time is up. Once a minute (INTERVAL), 5 s into a round,
# when the load is at its steady middle, both processes are sampled; each round's client peak
# RSS (KiB), wall time and assigned count are recorded.
echo "minute,broker_rss_kib,broker_files,broker_threads,client_rss_kib,client_files,client_threads" >"$out/soak.csv"
echo "round,client_peak_rss_kib,wall_s,assigned" >"$out/rounds.csv"
start=$(date +%s)
end=$((start + duration))
last_sample=$((start - interval))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  /usr/bin/time -f "%M %e" -o "$work/time" target/release/dps fleet --endpoint "localhost:$port" \
    --ca "$work/ca.pem" --id-scope 0ne00000001 --devices "$work/devices.jsonl" \
    --out "$work/out.jsonl" --concurrency 250 --rate 50 --min-interval-ms 1000 \
    >/dev/null 2>&1 &
  timer=$!
  sleep 5
  now=$(date +%s)
  if [ $((now - last_sample)) -ge "$interval" ]; then
    last_sample=$now
    client=$(pgrep -P "$timer" -n || true)
    echo "$(( (now - start) / 60 )),$(proc "$broker"),$( [ -n "$client" ] && proc "$client" || echo NA,NA,NA)" >>"$out/soak.csv"
  fi
  wait "$timer" || true
  read -r peak wall <"$work/time"
  echo "$round,$peak,$wall,$(grep -c '"assigned"' "$work/out.jsonl")" >>"$out/rounds.csv"
  rm -f "$work/out.jsonl"
done

python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --user matplotlib >/dev/null
python3 - "$out" "$n" "${WARMUP:-6}" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, n, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [r for r in csv.DictReader(open(f"{out}/soak.csv"))]
rounds = [r for r in csv.DictReader(open(f"{out}/rounds.csv"))]
def series(name):
    return [(int(r["minute"]), float(r[name])) for r in rows if r[name] != "NA"]
fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
for ax, (label, names) in zip(axes, [
    ("resident memory (MiB)", ["broker_rss_kib", "client_rss_kib"]),
    ("open files", ["broker_files", "client_files"]),
    ("threads", ["broker_threads", "client_threads"]),
]):
    for name in names:
        points = series(name)
        scale = 1024.0 if name.endswith("kib") else 1.0
        ax.plot([m for m, _ in points], [v / scale for _, v in points], marker="o", label=name.split("_")[0])
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0)
    ax.legend()
axes[-1].set_xlabel("minute")
fig.suptitle(f"dps fleet rounds at the quota against one dps-mock-broker ({len(rounds)} rounds)")
fig.tight_layout()
fig.savefig(f"{out}/soak.png", dpi=80)
def drift(points):
    after = [v for m, v in points if m >= warmup] or [v for _, v in points]
    return 100.0 * (max(after) - min(after)) / max(min(after), 1)
for name in ["broker_rss_kib", "broker_files", "broker_threads", "client_rss_kib", "client_files", "client_threads"]:
    points = series(name)
    if points:
        print(f"{name}: {points[0][1]:.0f} at minute {points[0][0]}, {points[-1][1]:.0f} at minute {points[-1][0]}; spread from minute {warmup}: {drift(points):.1f} %")
peaks = [float(r["client_peak_rss_kib"]) for r in rounds]
if peaks:
    rest = peaks[1:] or peaks
    print(f"client peak RSS per round: {min(peaks)/1024:.1f}-{max(peaks)/1024:.1f} MiB over {len(peaks)} rounds; spread after the first {100*(max(rest)-min(rest))/min(rest):.1f} %")
    print(f"rounds where every device was assigned: {sum(int(r['assigned']) == n for r in rounds)} of {len(rounds)}")
PY
