//! The engine against a simulated *kernel* clock (engine::sim::SimClock:
//! a hardware clock with its own rate, CLOCK_MONOTONIC that the kernel
//! slews, frequency changes that take effect at the next tick, instant
//! steps, leap seconds at UTC midnight), in the scenarios of the real-kernel
//! bench (issue 8: one reference, minpoll 4, step 1 s / limit 3), with
//! chrony-style pass criteria. The same scenarios run on a real kernel in
//! tests/uml_clock.rs; these catch a regression in plain `cargo test`.
//!
//! `old_wiring_runs_away` drives the same engine the way the daemon did
//! before issue 8 (CLOCK_MONOTONIC as its time axis, its own bookkeeping of
//! the correction): the simulated kernel reproduces the runaway seen in
//! User-Mode Linux, which the earlier simulation (an ideal clock) could not.

use timectl::engine::discipline::StepPolicy;
use timectl::engine::sim::{
    ClockParams, ServerParams, SimConfig, SimResult, Simulation, Wiring, run,
};
use timectl::engine::source::SourceSettings;
use timectl::engine::system::EngineSettings;
use timectl::engine::units::{Frequency, PollExponent, Seconds};

const MS: f64 = 1e-3;
const US: f64 = 1e-6;

/// One reference on a LAN (UML's tap link: ~0.2 ms round trip with a few
/// hundred microseconds of jitter), polled every 16 s after an iburst.
fn bench(seed: u64, clock: ClockParams) -> SimConfig {
    let mut server = ServerParams::good(150.0 * US);
    server.base_delay = 100.0 * US;
    server.source = SourceSettings {
        minpoll: PollExponent::saturating(4),
        maxpoll: PollExponent::saturating(4),
        iburst: true,
        prefer: false,
    };
    SimConfig {
        wiring: Wiring::Measured,
        seed,
        clock,
        servers: vec![server],
        engine: EngineSettings {
            min_sources: 1,
            step: StepPolicy {
                threshold: Seconds::new(1.0),
                limit: 3,
            },
            clock_control: true,
            ..EngineSettings::default()
        },
    }
}

fn start(offset: f64) -> ClockParams {
    ClockParams {
        initial_offset: offset,
        // UML's kernel ticks at 100 Hz: the coarsest case.
        tick: 0.010,
        ..ClockParams::default()
    }
}

const SEEDS: [u64; 4] = [1, 2, 3, 4];

/// Settled (every later sample within 1 ms) by `by` seconds, median |error|
/// over the final third within 300 us, never beyond `overshoot` on the
/// other side of zero from the initial offset.
fn assert_converges(name: &str, r: &SimResult, initial: f64, by: f64, end: f64) {
    let settled = r
        .settled_at(1.0 * MS)
        .unwrap_or_else(|| panic!("{name}: never settled within 1 ms"));
    assert!(settled <= by, "{name}: settled only at {settled} s");
    let median = r.median_abs_error(end * 2.0 / 3.0);
    assert!(median < 300.0 * US, "{name}: final median |error| {median}");
    let (max, _) = r.error_stats(settled);
    assert!(max < 1.0 * MS, "{name}: max {max} after settling");
    // Overshoot: how far past zero it went, against the initial offset.
    let overshoot = r
        .errors
        .iter()
        .map(|(_, e)| -e * initial.signum())
        .fold(0.0f64, f64::max);
    assert!(
        overshoot <= 0.1 * initial.abs(),
        "{name}: overshoot {overshoot} s beyond 10 % of {initial}"
    );
}

#[test]
fn half_second_ahead_is_slewed_away_fast_without_overshoot() {
    for seed in SEEDS {
        let r = run(bench(seed, start(0.5)), 300.0);
        assert_eq!(r.steps, 0, "seed {seed}: 0.5 s is below the threshold");
        // chronyd 4.3 settled in ~10 s on the bench; the target is
        // chronyd + 30 s, aiming for faster.
        assert_converges(&format!("+0.5 s seed {seed}"), &r, 0.5, 30.0, 300.0);
    }
}

/// The UML bench's first exchange on a fresh link waits for ARP: its
/// request is 1.4 ms late, so its offset is 0.7 ms off. The slew must still
/// settle without overshoot, and that sample must not leave a frequency
/// error behind. (On the bench it once gave 91 ppm for a clock without
/// frequency error; this simulation does not reproduce that, the filter's
/// unit test `a_slope_through_queued_samples_is_not_trusted` does.)
#[test]
fn a_late_first_request_does_not_set_a_wrong_frequency() {
    for seed in SEEDS {
        let mut config = bench(seed, start(0.5));
        config.servers[0].first_request_delay = 1.4 * MS;
        let r = run(config, 300.0);
        assert_converges(&format!("+0.5 s, ARP, seed {seed}"), &r, 0.5, 30.0, 300.0);
        assert!(
            r.frequency.abs() < 5.0 * US,
            "seed {seed}: frequency {} ppm for a clock without error",
            r.frequency * 1e6
        );
    }
}

#[test]
fn a_third_of_a_second_behind_is_slewed_away() {
    for seed in SEEDS {
        let r = run(bench(seed, start(-0.3)), 300.0);
        assert_eq!(r.steps, 0);
        assert_converges(&format!("-0.3 s seed {seed}"), &r, -0.3, 30.0, 300.0);
    }
}

#[test]
fn three_seconds_ahead_is_stepped_once() {
    for seed in SEEDS {
        let r = run(bench(seed, start(3.0)), 300.0);
        assert_eq!(r.steps, 1, "seed {seed}");
        assert_converges(&format!("+3 s seed {seed}"), &r, 3.0, 30.0, 300.0);
    }
}

/// The kernel left at +150 ppm (another daemon's setting): the engine keeps
/// it as its first guess, as chronyd does, then finds the right frequency.
#[test]
fn kernel_frequency_preset_is_measured_and_corrected() {
    for seed in SEEDS {
        let clock = ClockParams {
            kernel_frequency: 150e-6,
            ..start(0.0)
        };
        let r = run(bench(seed, clock), 600.0);
        assert!(
            r.frequency.abs() < 3e-6,
            "seed {seed}: frequency estimate {} ppm, truth 0",
            r.frequency * 1e6
        );
        let settled = r.settled_at(1.0 * MS).expect("settled");
        assert!(settled < 60.0, "seed {seed}: settled at {settled}");
        assert!(r.median_abs_error(400.0) < 300.0 * US);
    }
}

/// A restart with the drift file of the previous run settles sooner and
/// holds tighter than a cold start (the hardware runs 80 ppm fast; a noisy
/// path, 1 ms of jitter each way, so a few samples give a poor slope and the
/// drift file's frequency is worth having).
#[test]
fn drift_file_makes_the_restart_settle_faster() {
    let hardware = ClockParams {
        frequency_error: 80e-6,
        ..start(0.2)
    };
    let first = run(bench(5, hardware.clone()), 1_000.0);
    assert!(
        (first.frequency + 80e-6).abs() < 2e-6,
        "learnt {} ppm",
        first.frequency * 1e6
    );
    let noisy = |mut c: SimConfig| {
        c.servers[0].jitter = 1.0 * MS;
        c
    };
    let mut warm = noisy(bench(6, hardware.clone()));
    warm.engine.initial_frequency = Some(Frequency::from_fraction(first.frequency));
    let warm = run(warm, 300.0);
    let cold = run(noisy(bench(6, hardware)), 300.0);
    let (w, c) = (
        warm.settled_at(1.0 * MS).expect("warm settled"),
        cold.settled_at(1.0 * MS).expect("cold settled"),
    );
    // Since the cold start polls again while its frequency is uncertain, it
    // may settle as early: the drift file shows in the frequency, right
    // from the start (the cold start begins 80 ppm off).
    assert!(w <= c, "warm restart settled at {w} s, cold start at {c} s");
    let worst = |r: &SimResult| {
        r.frequencies
            .iter()
            .map(|(_, f)| (f + 80e-6).abs())
            .fold(0.0f64, f64::max)
    };
    let (fw, fc) = (worst(&warm), worst(&cold));
    assert!(
        fw < 5e-6 && fc > 20e-6,
        "worst frequency error: warm {} ppm (drift file), cold {} ppm",
        fw * 1e6,
        fc * 1e6
    );
}

/// The only source goes silent for five polls: the frequency is kept and
/// the clock drifts by no more than the frequency error left (holdover).
#[test]
fn holdover_keeps_the_frequency_when_the_source_is_lost() {
    let clock = ClockParams {
        frequency_error: -60e-6,
        ..start(0.1)
    };
    let mut sim = Simulation::new(bench(7, clock));
    sim.run_until(600.0);
    let before = sim.engine.discipline().frequency().fraction();
    sim.set_loss(1.0);
    sim.run_until(680.0);
    let (max, _) = sim.result().error_stats(600.0);
    assert!(max < 1.0 * MS, "drifted to {max} s during the outage");
    assert!(
        (sim.engine.discipline().frequency().fraction() - before).abs() < 1e-9,
        "frequency changed without samples"
    );
    sim.set_loss(0.0);
    sim.run_until(900.0);
    assert!(
        sim.error().abs() < 1.0 * MS,
        "after the outage: {}",
        sim.error()
    );
}

/// Issue 14: `step.now` right after start (as `timectl apply` does), with
/// the clock 0.6 s off. The step leaves the kernel at the frequency
/// estimate (no slew left running), the engine polls again within seconds
/// so the step is confirmed by a measurement taken after it, and the clock
/// then stays within 2 ms from 10 s after the step on.
#[test]
fn step_now_after_start_holds_within_two_milliseconds() {
    for (seed, offset) in [(11, 0.6), (12, -0.6), (13, 0.6), (14, -0.6)] {
        let mut sim = Simulation::new(bench(seed, start(offset)));
        // The first estimate arrives within a second (iburst).
        sim.run_until(1.0);
        let report = sim.report();
        assert!(report.offset_seconds.is_some(), "seed {seed}: no estimate");
        sim.step_now().expect("steps");
        let t_step = sim.clock.true_time();
        let report = sim.report();
        assert_eq!(report.updates_since_step, 0, "unconfirmed right after");
        assert_eq!(
            sim.engine.discipline().next_timer(),
            None,
            "seed {seed}: a slew was left running after the step"
        );
        // The kernel takes the new frequency at its next tick.
        sim.run_until(t_step + 0.05);
        assert!(
            (sim.clock.applied_frequency - sim.engine.discipline().frequency().fraction()).abs()
                < 1e-12,
            "seed {seed}: kernel left at {} ppm, estimate {} ppm",
            sim.clock.applied_frequency * 1e6,
            sim.engine.discipline().frequency().fraction() * 1e6
        );
        sim.run_until(t_step + 3.0);
        assert!(
            sim.report().updates_since_step >= 1,
            "seed {seed}: no new measurement within 3 s of the step"
        );
        sim.run_until(t_step + 240.0);
        let errors: Vec<(f64, f64)> = sim
            .result()
            .errors
            .iter()
            .filter(|(t, _)| *t >= t_step + 10.0)
            .copied()
            .collect();
        let worst = errors.iter().fold(0.0f64, |m, (_, e)| m.max(e.abs()));
        assert!(
            worst < 2.0 * MS,
            "seed {seed} from {offset:+}: |error| reached {worst} s after the step"
        );
    }
}

/// After the step limit (3 updates), a 2 s error made by somebody else
/// (`date -s`) is slewed at the maximum rate, never stepped, and the engine
/// sees it at once through its clock measurement.
#[test]
fn after_the_step_limit_a_two_second_error_is_slewed() {
    let mut sim = Simulation::new(bench(21, start(0.0)));
    sim.run_until(120.0);
    assert!(sim.engine.discipline().updates() > 3);
    sim.external_step(2.0);
    let report = sim.report();
    let seen = report.offset_seconds.expect("estimate");
    assert!(
        (seen - 2.0).abs() < 0.01,
        "the engine sees {seen} s at once"
    );
    sim.run_until(220.0);
    assert_eq!(
        sim.engine.discipline().steps(),
        0,
        "stepped after the limit"
    );
    // 2 s at 83,333 ppm takes 24 s; the next poll comes within 16 s.
    let r = sim.result();
    let settled = r.settled_at(1.0 * MS).expect("settled again");
    assert!(settled < 120.0 + 60.0, "settled again only at {settled}");
}

/// The simulated kernel reproduces issue 8's fault when the engine is
/// driven as before the fix (CLOCK_MONOTONIC axis, correction assumed, not
/// measured): its frame is wrong by 8 % of every fast slew, so once the
/// 0.5 s slew is done (6 s) the clock is off by milliseconds (12.7 ms at
/// 10 s; on the real kernel, before the suspect-sample guard existed, it
/// ran away for good). The measured wiring is within a millisecond from
/// 10 s on. (Measured from 10 s: since the engine polls up to 12 more times
/// while its frequency is uncertain, the old wiring too is back within
/// 1.2 ms by 15 s.)
#[test]
fn old_wiring_is_off_by_the_slew_error() {
    let mut config = bench(1, start(0.5));
    config.wiring = Wiring::MonotonicUnmeasured;
    let old = run(config, 300.0);
    let (max_old, _) = old.error_stats(10.0);
    assert!(
        max_old > 3.0 * MS,
        "the old wiring should be off on a kernel clock; max error after 10 s {max_old}"
    );
    let new = run(bench(1, start(0.5)), 300.0);
    let (max_new, _) = new.error_stats(10.0);
    assert!(max_new < 1.0 * MS, "{max_new}");
}

/// The reference itself jumps by 2 s after the step limit (an upstream
/// server stepped): the first far sample is held back as a possible spike,
/// the second confirms it, the line restarts at the new level, and the 2 s
/// are slewed (never stepped) without bending the frequency estimate.
#[test]
fn a_source_that_steps_is_followed_by_a_slew() {
    let mut sim = Simulation::new(bench(51, start(0.0)));
    sim.run_until(120.0);
    let frequency = sim.engine.discipline().frequency().fraction();
    sim.set_server_offset(0, 2.0);
    sim.run_until(260.0);
    assert_eq!(
        sim.engine.discipline().steps(),
        0,
        "stepped after the limit"
    );
    // Relative to the server's new time.
    let behind = |e: f64| e - 2.0;
    let late: Vec<f64> = sim
        .result()
        .errors
        .iter()
        .filter(|(t, _)| *t >= 220.0)
        .map(|(_, e)| behind(*e))
        .collect();
    assert!(
        late.iter().all(|e| e.abs() < 1.0 * MS),
        "not following the stepped server by 220 s: {:?}",
        &late[..3]
    );
    let overshoot = sim
        .result()
        .errors
        .iter()
        .filter(|(t, _)| *t >= 120.0)
        .map(|(_, e)| behind(*e))
        .fold(0.0f64, f64::max);
    assert!(overshoot < 0.2, "overshot by {overshoot} s");
    assert!(
        (sim.engine.discipline().frequency().fraction() - frequency).abs() < 5e-6,
        "frequency bent by the jump: {} ppm",
        (sim.engine.discipline().frequency().fraction() - frequency) * 1e6
    );
    // A single spike of 50 ms is ignored.
    let mut sim = Simulation::new(bench(52, start(0.0)));
    sim.run_until(120.0);
    sim.set_server_offset(0, 0.050);
    sim.run_until(121.0 + 16.0);
    sim.set_server_offset(0, 0.0);
    sim.run_until(300.0);
    let (max, _) = sim.result().error_stats(100.0);
    assert!(max < 1.0 * MS, "a single spike moved the clock by {max}");
}

/// A leap second announced by the source is armed in the kernel on the
/// last day of the month, inserted at midnight, and leaves no 1 s error.
#[test]
fn leap_second_is_inserted_by_the_kernel_at_midnight() {
    // 2026-12-31 23:50:00 UTC; a leap second at 2027-01-01 00:00:00.
    let midnight = 1_798_761_600;
    let clock = ClockParams {
        start_unix: midnight - 600,
        leap_insert_at: Some(midnight),
        ..start(0.05)
    };
    let mut sim = Simulation::new(bench(31, clock));
    sim.run_until(300.0);
    assert_eq!(sim.report().kernel_leap, "insert", "armed before midnight");
    assert_eq!(
        sim.engine.server_state().leap,
        timectl::engine::proto::Leap::InsertSecond
    );
    sim.run_until(900.0);
    assert_eq!(sim.clock.leaps_applied, 1, "the kernel inserted the second");
    assert_eq!(sim.report().kernel_leap, "none", "disarmed after midnight");
    // Sampled exactly at midnight the clock (25 us behind) has not reached
    // its own midnight yet: skip that one instant.
    let max = sim
        .result()
        .errors
        .iter()
        .filter(|(t, _)| *t >= 300.0 && (*t - 600.0).abs() > 0.5)
        .fold(0.0f64, |m, (_, e)| m.max(e.abs()));
    assert!(max < 1.0 * MS, "error around the leap: {max}");
    assert_eq!(sim.engine.discipline().steps(), 0);
    assert_eq!(
        sim.engine.server_state().leap,
        timectl::engine::proto::Leap::NoWarning
    );
}

/// The kernel's STA_UNSYNC follows the engine: cleared (with the error
/// bound) once synchronised, so `timedatectl` says "synchronized: yes", and
/// set again when every source is gone.
#[test]
fn kernel_unsync_flag_follows_the_engine() {
    let mut sim = Simulation::new(bench(41, start(0.01)));
    assert_eq!(sim.clock.synchronized, None);
    sim.run_until(60.0);
    let bound = sim.clock.synchronized.expect("STA_UNSYNC cleared");
    assert!(bound > 0.0 && bound < 0.01, "error bound {bound}");
    sim.set_loss(1.0);
    // Eight missed polls of 16 s empty the reach register.
    sim.run_until(60.0 + 9.0 * 16.0 + 5.0);
    assert!(!sim.engine.synchronized());
    assert_eq!(sim.clock.synchronized, None, "STA_UNSYNC set again");
}

/// The UML bench on a loaded host (the CI run of ead0a2a, where the
/// engine ran 2.7 ms off for two minutes after slewing -0.3 s): the same
/// scenario on a busy path, 600 us mean queueing each way (round trips of
/// 0.6-6 ms). From 20 s on, no seed may be 1 ms off. Before the fix the
/// worst of these 40 seeds was 3.1 ms: the slope after the burst ran
/// through the two least-queued samples (-90 ppm on a 3 ppm clock) and,
/// with four settle polls only, the clock ran on it for a whole poll.
#[test]
fn a_busy_path_does_not_push_the_clock_a_millisecond_off() {
    let mut worst = (0.0, 0);
    for seed in 1..=40 {
        let mut config = bench(seed, start(0.3));
        config.clock.frequency_error = 3e-6;
        config.clock.wander = 1e-8;
        config.servers[0].base_delay = 200.0 * US;
        config.servers[0].jitter = 600.0 * US;
        config.servers[0].first_request_delay = 1.4 * MS;
        let r = run(config, 150.0);
        let (max, _) = r.error_stats(20.0);
        if max > worst.0 {
            worst = (max, seed);
        }
    }
    assert!(
        worst.0 < 1.0 * MS,
        "seed {}: max |error| {:.0} us from 20 s on",
        worst.1,
        worst.0 / US
    );
}
