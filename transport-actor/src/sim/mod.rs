//! A deterministic simulation of a whole registration, seed by seed.
//!
//! The session, the client's course (pacing, deadline, close) and the mock broker's DPS core
//! run together in memory on a virtual clock ([`world`]), no sockets and no runtime, while a
//! seeded fault injector breaks what a network and a service can break. For every seed the
//! invariants the transport promises are checked:
//!
//! * every request and every disconnect gets exactly one reply;
//! * the registration ends by its deadline plus the close grace;
//! * `assigned` always carries a hub (and a device id);
//! * no device sends more than 5 requests in any 10 s (the service's published limit);
//! * every link opened is left, and the session ends disconnected;
//! * nothing panics.
//!
//! `cargo test` runs [`SEEDS`] seeds. A failing seed prints itself; run it alone, with a trace
//! of every event, with `DPS_SIM_SEED=<seed> cargo test -p dps-transport-actor --lib sim:: -- --nocapture`.
//! A longer run: `DPS_SIM_SEEDS=1000000 cargo test --release -p dps-transport-actor --lib
//! sim::many_seeds -- --ignored`.

mod world;

use std::time::Duration;

use dps_messages::RegistrationStatus;
use dps_mock_broker::script::{ConnectStep, DeviceScript, Malformation, Script, Step};
use serde_json::json;

use self::world::{DEVICE, Faults, Outcome, World};
use crate::client::ClientOptions;
use crate::rng::Rng;
use crate::session::{State, Timeouts};

/// Seeds `cargo test` runs.
const SEEDS: u64 = 20_000;

/// DPS's published limit: a device may poll at most this many times ...
const MAX_REQUESTS: usize = 5;
/// ... in any window this long.
const WINDOW: Duration = Duration::from_secs(10);

/// Builds the world of `seed`: timeouts, client options, the service's script and the faults.
fn world(seed: u64, tracing: bool) -> World {
    let mut rng = Rng::new(seed);
    let mut secs = |low: u64, high: u64| {
        Duration::from_millis(1_000 * low + rng.below(1_000 * (high - low) + 1))
    };
    let timeouts = Timeouts {
        connect: secs(1, 30),
        subscribe: secs(1, 30),
        publish_ack: secs(1, 30),
        response: secs(1, 40),
        disconnect: secs(1, 30),
    };
    let options = ClientOptions {
        deadline: secs(5, 300),
        close_grace: secs(0, 3),
        ..ClientOptions::default()
    };
    let script = script(&mut rng);
    let mut p = |max: f64| rng.unit() * max;
    let faults = Faults {
        refuse_connect: p(0.05),
        silent_connect: p(0.03),
        lose_connection: p(0.3),
        duplicate: p(0.3),
        hold_up: p(0.2),
        reorder: p(0.3),
        silent_close: p(0.3),
        cancel: p(0.2),
        stray_disconnect: p(0.2),
    };
    World::new(rng, timeouts, options, script, faults, tracing)
}

/// A service that answers the device's connections and requests at random: refusals, drops,
/// throttling storms with odd retry-after values, errors, silence, malformed answers, an
/// `assigned` without a hub; then DPS's default behaviour. Faults the client retries are
/// common, final ones rare, so that most runs go a long way before they end.
fn script(rng: &mut Rng) -> Script {
    let mut device = DeviceScript::new();
    for _ in 0..rng.below(4) {
        device = device.connect(match pick(rng, &[60, 30, 30, 3, 3, 3, 40]) {
            0 => ConnectStep::DelayConnack {
                ms: if rng.chance(0.1) {
                    rng.below(40_000)
                } else {
                    rng.below(2_000)
                },
            },
            1 => ConnectStep::CloseAfterConnack,
            2 => ConnectStep::CloseAfterSuback,
            3 => ConnectStep::Refuse {
                code: 1 + rng.below(5) as u8,
            },
            4 => ConnectStep::DropBeforeConnack,
            5 => ConnectStep::FailSuback,
            _ => ConnectStep::Accept,
        });
    }
    let retry_afters = [
        "0",
        "1",
        "2",
        "5",
        "30",
        "abc",
        "-1",
        "1.5",
        "",
        "99999999999999999999",
        "3600",
    ];
    for _ in 0..rng.below(30) {
        let delay_ms = if rng.chance(0.2) {
            rng.below(45_000)
        } else {
            0
        };
        let retry_after = retry_afters[rng.below(retry_afters.len() as u64) as usize];
        let malformed = |what| Step::Malformed { what };
        device = device.request(match pick(rng, &[40, 40, 20, 20, 20, 20, 10, 10, 10, 3, 3, 3, 3, 3]) {
            0 => Step::Default { delay_ms },
            1 => Step::respond(429)
                .with_retry_after(retry_after)
                .after_ms(delay_ms),
            2 => Step::respond([500, 503][rng.below(2) as usize]).with_retry_after(retry_after),
            3 => Step::respond(202)
                .with_body(json!({"status": "assigning"}))
                .with_retry_after(retry_after),
            4 => Step::Silent,
            5 => Step::Close { delay_ms },
            6 => Step::CloseOnPublish,
            7 => malformed(Malformation::NoRid),
            8 => malformed(Malformation::WrongRid),
            9 => malformed([Malformation::BadJson, Malformation::NonNumericStatus, Malformation::Oversized][rng.below(3) as usize]),
            10 => Step::respond(200).with_body(json!({"status": "assigned"})),
            11 => Step::respond([400, 401, 404, 409][rng.below(4) as usize]),
            12 => Step::respond(200).with_body(
                json!({"status": "failed", "registrationState": {"errorCode": 400209, "errorMessage": "no hub"}}),
            ),
            _ => Step::respond(200).with_body(json!({"status": "disabled"})),
        });
    }
    Script::new().device(DEVICE, device)
}

/// An index into `weights`, chosen in proportion to them.
fn pick(rng: &mut Rng, weights: &[u64]) -> usize {
    let mut roll = rng.below(weights.iter().sum());
    for (i, weight) in weights.iter().enumerate() {
        if roll < *weight {
            return i;
        }
        roll -= weight;
    }
    weights.len() - 1
}

/// Checks every invariant of one run; the first broken one, if any.
fn check(out: &Outcome) -> Result<(), String> {
    let Some((finished, outcome)) = &out.finished else {
        return Err("the registration never finished".into());
    };
    let took = *finished - out.started;
    let bound = out.options.deadline + out.options.close_grace;
    if took > bound {
        return Err(format!(
            "the registration took {took:?}, over its deadline and grace ({bound:?})"
        ));
    }
    if let Ok(result) = outcome {
        if result.status != RegistrationStatus::Assigned {
            return Err(format!("a success that is not assigned: {result:?}"));
        }
        if let Err(e) = result.validate_assignment() {
            return Err(format!("an assignment the device cannot use: {e}"));
        }
    }
    if let Some((token, count)) = out.replies.iter().find(|(_, count)| **count != 1) {
        return Err(format!("caller {token} got {count} replies, not one"));
    }
    for pair in out.publishes.windows(MAX_REQUESTS + 1) {
        let span = pair[MAX_REQUESTS] - pair[0];
        if span < WINDOW {
            return Err(format!(
                "{} requests within {span:?}, over the service's limit",
                MAX_REQUESTS + 1
            ));
        }
    }
    if out.opened != out.abandoned {
        return Err(format!(
            "{} links opened, {} left",
            out.opened, out.abandoned
        ));
    }
    if out.final_state != State::Disconnected {
        return Err(format!("the session ended {:?}", out.final_state));
    }
    Ok(())
}

/// Runs `seed`; on a broken invariant or a panic, says how to replay it and fails.
fn run(seed: u64) {
    let result = std::panic::catch_unwind(|| check(&world(seed, false).run()));
    let broken = match result {
        Ok(Ok(())) => return,
        Ok(Err(why)) => why,
        Err(panic) => {
            eprintln!(
                "seed {seed} panicked; replay it: DPS_SIM_SEED={seed} cargo test -p dps-transport-actor --lib sim:: -- --nocapture"
            );
            std::panic::resume_unwind(panic);
        }
    };
    panic!(
        "seed {seed}: {broken}\nreplay it with a trace: DPS_SIM_SEED={seed} cargo test -p dps-transport-actor --lib sim:: -- --nocapture"
    );
}

/// Runs seeds `from..to` on the machine's cores.
fn run_range(from: u64, to: u64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let handles: Vec<_> = (0..threads)
        .map(|lane| {
            std::thread::spawn(move || {
                let mut seed = from + lane;
                while seed < to {
                    run(seed);
                    seed += threads;
                }
            })
        })
        .collect();
    for handle in handles {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn every_seed_keeps_every_invariant() {
    if let Some(seed) = std::env::var("DPS_SIM_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let out = world(seed, true).run();
        for line in &out.trace {
            eprintln!("{line}");
        }
        eprintln!("finished: {:?}", out.finished);
        if let Err(why) = check(&out) {
            panic!("seed {seed}: {why}");
        }
        return;
    }
    run_range(0, SEEDS);
}

/// A longer run: `DPS_SIM_SEEDS` seeds (a million unless set), from where `cargo test` stops.
#[test]
#[ignore = "a long run; see the module documentation"]
fn many_seeds() {
    let seeds = std::env::var("DPS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1_000_000);
    run_range(SEEDS, SEEDS + seeds);
}
