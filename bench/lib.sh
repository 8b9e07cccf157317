# Sourced by the bench scripts, not run: what several of them do the same way.

# The group enrollment key of the scripts' devices (a test key, never a real one).
GROUP_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=

# Builds the release binaries the scripts run: dps and dps-mock-broker.
build_release() {
  cargo build --release -q -p dps-harness -p dps-mock-broker
}

# Waits up to 5 s for a broker's LOG to say it listens; fails, showing the log, when it does not.
wait_listening() { # LOG
  for _ in $(seq 50); do grep -q listening "$1" && return 0; sleep 0.1; done
  echo "the broker did not start listening; its log ($1):" >&2
  cat "$1" >&2
  return 1
}

# Starts a mock DPS on 127.0.0.1:PORT that admits GROUP_KEY's devices, enforces QUOTA
# registrations a minute (a rate per sliding second) and 5 polls per device per 10 s, and
# answers retry-after 1. Its CA goes to WORK/ca.pem, its log to WORK/broker.log; `broker` is
# set to its pid (set the script's EXIT trap to kill it before calling this).
start_quota_broker() { # WORK PORT QUOTA
  target/release/dps-mock-broker --listen "127.0.0.1:$2" --no-ws --ca-out "$1/ca.pem" \
    --group-key "$GROUP_KEY" --retry-after 1 --quota-registrations-per-minute "$3" \
    --quota-polls-per-device 5 >"$1/broker.log" 2>&1 &
  broker=$!
  wait_listening "$1/broker.log"
}

# A test PKI for N X.509 devices in WORK/pki (`dps-mock-broker pki`), and the lines of a devices
# file naming each one's certificate and key: bench-0001 ... bench-N.
x509_devices() { # WORK N
  target/release/dps-mock-broker pki --out "$1/pki" --count "$2" >/dev/null
  for i in $(seq "$2"); do
    local id
    id=$(printf 'bench-%04d' "$i")
    printf '{"registration_id":"%s","cert":"%s/pki/%s.pem","key":"%s/pki/%s.key"}\n' "$id" "$1" "$id" "$1" "$id"
  done
}

# The lines of a devices file for N group-key devices PREFIX-00001 ... PREFIX-N.
group_key_devices() { # PREFIX N
  for i in $(seq "$2"); do
    printf '{"registration_id":"%s-%05d","group_key":"%s"}\n' "$1" "$i" "$GROUP_KEY"
  done
}
