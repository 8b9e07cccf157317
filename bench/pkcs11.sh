#!/usr/bin/env bash
# Device keys in a PKCS#11 token against keys in files: N X.509 devices (default 200)
# provisioned with `dps fleet` against one mock broker (retry-after 0, no poll floor), once with
# each device's key in a PEM file and once with every key in one SoftHSM2 token; then one
# device with `dps provision`, RUNS times each way. Prints registrations per second, client CPU
# per registration, and one device's wall time and CPU.
#
# Needs softhsm2, opensc (pkcs11-tool) and openssl (`.ci/run` installs them). SoftHSM2 keeps
# one file per object and opens, locks and reads each again at every search (Debian's build has
# no SQLite store), so its cost grows with the token: compare N=20 and N=200.
#
#   bench/pkcs11.sh [N]        RUNS=5 PORT=18885
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
n="${1:-200}"
runs="${RUNS:-5}"
port="${PORT:-18885}"
scope=0ne00000001
module=/usr/lib/softhsm/libsofthsm2.so
[ -e "$module" ] || module=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so

cargo build --release -q -p dps-harness -p dps-mock-broker
work="$(mktemp -d)"
target/release/dps-mock-broker pki --out "$work/pki" --count "$n" >/dev/null
target/release/dps-mock-broker --listen "127.0.0.1:$port" --no-ws --retry-after 0 \
  --server-cert "$work/pki/server.pem" --server-key "$work/pki/server.key" \
  --device-ca "$work/pki/ca.pem" --id-scope "$scope" >"$work/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q listening "$work/broker.log" && break; sleep 0.1; done

# One token; one P-256 key pair per device made in it, each certified by the broker's CA.
export SOFTHSM2_CONF="$work/softhsm2.conf"
mkdir -p "$work/tokens" "$work/hsm"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$work/tokens" >"$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --pin 4711 --so-pin 0815 >/dev/null
echo 4711 >"$work/pin"
echo "extendedKeyUsage=clientAuth" >"$work/ext"
for i in $(seq -f "%04g" "$n"); do
  pkcs11-tool --module "$module" --token-label bench --login --pin 4711 --keypairgen \
    --key-type EC:prime256v1 --label "key-$i" --id "$i" >/dev/null 2>&1
  pkcs11-tool --module "$module" --token-label bench --login --pin 4711 --read-object \
    --type pubkey --label "key-$i" -o "$work/hsm/$i.der" >/dev/null 2>&1
  openssl pkey -pubin -inform DER -in "$work/hsm/$i.der" -out "$work/hsm/$i.pub"
  openssl x509 -new -force_pubkey "$work/hsm/$i.pub" -subj "/CN=bench-$i" -days 2 \
    -CA "$work/pki/ca.pem" -CAkey "$work/pki/ca.key" -extfile "$work/ext" \
    -out "$work/hsm/bench-$i.pem" 2>/dev/null
  printf '{"registration_id":"bench-%s","cert":"%s","key":"%s"}\n' \
    "$i" "$work/pki/bench-$i.pem" "$work/pki/bench-$i.key" >>"$work/files.jsonl"
  printf '{"registration_id":"bench-%s","cert":"%s","key":"pkcs11:token=bench;object=key-%s"}\n' \
    "$i" "$work/hsm/bench-$i.pem" "$i" >>"$work/token.jsonl"
done

fleet() { # NAME DEVICES
  rm -f "$work/out.jsonl"
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" target/release/dps fleet \
    --endpoint "localhost:$port" --ca "$work/pki/ca.pem" --id-scope "$scope" \
    --devices "$2" --out "$work/out.jsonl" --min-interval-ms 0 \
    --pkcs11-module "$module" --pin-file "$work/pin" >"$work/summary" 2>&1 || { cat "$work/summary"; exit 1; }
  grep -q "^$n assigned, 0 failed" "$work/summary" || { cat "$work/summary"; exit 1; }
  read -r wall user sys rss <"$work/time"
  awk -v name="$1" -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {
    printf "| dps fleet, %d devices, keys in %s | %.2f s | %.0f registrations/s | CPU %.2f s, %.2f ms per registration | peak RSS %.1f MiB |\n",
      n, name, w, n / w, u + s, 1000 * (u + s) / n, r / 1024 }'
}

one() { # NAME KEY CERT: wall time to the millisecond (time(1) says centiseconds)
  for _ in $(seq "$runs"); do
    start=$EPOCHREALTIME
    /usr/bin/time -f "%U %S %M" -o "$work/time" target/release/dps provision \
      --endpoint "localhost:$port" --ca "$work/pki/ca.pem" --id-scope "$scope" \
      --registration-id bench-0001 --cert "$3" --key "$2" \
      --pkcs11-module "$module" --pin-file "$work/pin" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    end=$EPOCHREALTIME
    read -r user sys rss <"$work/time"
    awk -v name="$1" -v w="$(echo "$end - $start" | bc)" -v u="$user" -v s="$sys" -v r="$rss" \
      'BEGIN { printf "| dps provision, key in %s | %.3f s | CPU %.2f s | peak RSS %.1f MiB |\n", name, w, u + s, r / 1024 }'
  done
}

echo "| run | wall time | rate | client CPU | peak RSS |"
echo "|---|---|---|---|---|"
fleet "files" "$work/files.jsonl"
fleet "one SoftHSM2 token" "$work/token.jsonl"
fleet "files" "$work/files.jsonl"
fleet "one SoftHSM2 token" "$work/token.jsonl"
echo
echo "| one device | wall time | CPU (user + system) | peak RSS |"
echo "|---|---|---|---|"
one "a file" "$work/pki/bench-0001.key" "$work/pki/bench-0001.pem"
one "SoftHSM2 ($((2 * n)) objects)" "pkcs11:token=bench;object=key-0001" "$work/hsm/bench-0001.pem"
