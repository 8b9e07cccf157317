#!/usr/bin/env bash
# The official Node service SDK (azure-iot-provisioning-service) sets the mock DPS up through
# its service API, a device provisions with `dps provision`, and the SDK reads back where it
# went. The SDK dials port 443, so this binds 127.0.0.1:443: run it as root (or give the
# binary CAP_NET_BIND_SERVICE). Needs node and npm. Not part of `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd bench/node-service && npm install --no-audit --no-fund --loglevel=error)
cargo build -q --release -p dps-mock-broker -p dps-harness
work=$(mktemp -d)
trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
key=c2VydmljZSBrZXkgZm9yIHRlc3RzIG9ubHksIG5ldmVyIHJlYWw=
target/release/dps-mock-broker --listen 127.0.0.1:0 --no-ws --ca-out "$work/ca.pem" \
    --service-listen 127.0.0.1:443 --service-key "$key" > "$work/broker.out" &
broker=$!
for _ in $(seq 50); do grep -q 'connection string' "$work/broker.out" 2>/dev/null && break; sleep 0.1; done
mqtts=$(grep -o 'mqtts://[0-9.:]*' "$work/broker.out" | head -1)
connection=$(sed -n 's/.*connection string: //p' "$work/broker.out")
export NODE_EXTRA_CA_CERTS="$work/ca.pem"
node bench/node-service/check.js "$connection"
target/release/dps provision --endpoint "localhost:${mqtts##*:}" --ca "$work/ca.pem" \
    --id-scope 0ne00000001 --registration-id node-dev-2 \
    --group-key AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
node bench/node-service/check.js "$connection" after-device node-dev-2
