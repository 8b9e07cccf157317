#!/usr/bin/env bash
# Interleaved A/B of two release builds of this project against their own dps-mock-broker:
# five rounds of 3,000 registrations (CPU per registration) and three of 1,000 devices held
# connected (memory per connected device), the builds taking turns so that the host's load
# drifts over both alike. Prints one JSON line per run, labelled `a` or `b`.
#
#   bench/ab.sh OLD_TARGET_DIR NEW_TARGET_DIR > results.jsonl
#   (each a folder holding release `dps` and `dps-mock-broker` binaries)
set -euo pipefail
a=$1 b=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$b/dps-mock-broker" pki --out "$work/pki" --count 3000 >/dev/null
port=19883
run() { # DIR LABEL ARGS...
  local dir=$1 label=$2; shift 2
  "$dir/dps-mock-broker" --listen "127.0.0.1:$port" --no-ws --retry-after 0 \
    --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
    --device-ca "$work/pki/ca.pem" --id-scope 0ne00000001 >"$work/broker.log" 2>&1 &
  local broker=$!
  sleep 1
  "$dir/dps" bench --json --broker "127.0.0.1:$port" --id-scope 0ne00000001 \
    --ca "$work/pki/ca.pem" --device-ca-cert "$work/pki/ca.pem" --device-ca-key "$work/pki/ca.key" "$@" |
    python3 -c "import json,sys; r=json.load(sys.stdin); r['label']='$label'; print(json.dumps(r))"
  kill -INT "$broker"
  wait "$broker" 2>/dev/null || true
}
for _ in 1 2 3 4 5; do
  run "$a" a --devices 3000 --concurrency 50
  run "$b" b --devices 3000 --concurrency 50
done
for _ in 1 2 3; do
  run "$a" a --devices 1000 --concurrency 50 --hold
  run "$b" b --devices 1000 --concurrency 50 --hold
done
