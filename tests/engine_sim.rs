//! The clock algorithm under the simulated clock and network, with
//! chrony-style pass criteria (issue 4). Pure and deterministic: fixed seeds.

use timectl::engine::discipline::StepPolicy;
use timectl::engine::drift;
use timectl::engine::sim::{ClockParams, ServerParams, SimConfig, Simulation, Wiring, run};
use timectl::engine::source::SourceSettings;
use timectl::engine::system::EngineSettings;
use timectl::engine::units::{EngineInstant, Frequency, PollExponent, Seconds};

const MS: f64 = 1e-3;
const US: f64 = 1e-6;

fn engine(clock_control: bool) -> EngineSettings {
    EngineSettings {
        min_sources: 1,
        step: StepPolicy {
            threshold: Seconds::new(1.0),
            limit: 3,
        },
        clock_control,
        initial_frequency: None,
        kernel_frequency: Frequency::ZERO,
        local_stratum: None,
    }
}

fn hard_start() -> ClockParams {
    ClockParams {
        initial_offset: 0.1,
        frequency_error: 100e-6,
        wander: 1e-9,
        ..ClockParams::default()
    }
}

/// Issue 4: from 0.1 s and 100 ppm, 100 us jitter, four good sources:
/// synchronised within 300 s, then max |error| < 1 ms and RMS < 300 us
/// over 10,000 s. Several seeds, so one lucky seed cannot pass it.
#[test]
fn four_good_sources_converge_and_hold() {
    for seed in [1, 2, 3, 4, 5] {
        let config = SimConfig {
            wiring: Wiring::Measured,
            seed,
            clock: hard_start(),
            servers: vec![ServerParams::good(100.0 * US); 4],
            engine: engine(true),
        };
        let r = run(config, 10_300.0);
        let settled = r.settled_at(1.0 * MS).expect("never settled within 1 ms");
        assert!(settled <= 300.0, "seed {seed}: settled only at {settled} s");
        let (max, rms) = r.error_stats(300.0);
        assert!(max < 1.0 * MS, "seed {seed}: max error {max}");
        assert!(rms < 300.0 * US, "seed {seed}: RMS error {rms}");
        assert!(
            (r.frequency + 100e-6).abs() < 2e-6,
            "seed {seed}: frequency estimate {}",
            r.frequency
        );
        assert_eq!(
            r.steps, 0,
            "0.1 s is below the 1 s threshold: slewed, not stepped"
        );
    }
}

#[test]
fn offset_above_threshold_is_stepped_once() {
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 7,
        clock: ClockParams {
            initial_offset: -5.0,
            frequency_error: 20e-6,
            wander: 0.0,
            ..ClockParams::default()
        },
        servers: vec![ServerParams::good(100.0 * US); 3],
        engine: engine(true),
    };
    let r = run(config, 2_000.0);
    assert_eq!(r.steps, 1);
    assert!(r.settled_at(1.0 * MS).expect("settled") < 60.0);
}

#[test]
fn one_falseticker_among_four_is_never_selected() {
    for seed in [11, 12, 13, 14, 15, 16] {
        let mut servers = vec![ServerParams::good(100.0 * US); 4];
        servers[1].time_offset = 0.020;
        let config = SimConfig {
            wiring: Wiring::Measured,
            seed,
            clock: hard_start(),
            servers,
            engine: engine(true),
        };
        let r = run(config, 10_300.0);
        assert!(
            !r.ever_used[1],
            "seed {seed}: the falseticker was selected or combined"
        );
        assert!(r.ever_used[0] && r.ever_used[2] && r.ever_used[3]);
        let (max, rms) = r.error_stats(300.0);
        assert!(
            max < 1.0 * MS && rms < 300.0 * US,
            "seed {seed}: max {max} rms {rms}"
        );
    }
}

#[test]
fn thirty_percent_packet_loss_still_synchronises() {
    let mut servers = vec![ServerParams::good(100.0 * US); 4];
    for s in &mut servers {
        s.loss = 0.3;
    }
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 21,
        clock: hard_start(),
        servers,
        engine: engine(true),
    };
    let r = run(config, 10_300.0);
    assert!(
        r.requests > r.replies + r.requests / 3,
        "loss was not simulated"
    );
    let settled = r.settled_at(1.0 * MS).expect("never settled");
    assert!(settled <= 300.0, "settled only at {settled} s");
    let (max, rms) = r.error_stats(300.0);
    assert!(max < 1.0 * MS && rms < 300.0 * US, "max {max} rms {rms}");
}

#[test]
fn two_against_two_never_synchronises() {
    let mut servers = vec![ServerParams::good(100.0 * US); 4];
    servers[2].time_offset = 0.5;
    servers[3].time_offset = 0.5;
    let clock = ClockParams {
        wander: 0.0,
        ..hard_start()
    };
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 5,
        clock,
        servers,
        engine: engine(true),
    };
    let r = run(config, 1_000.0);
    assert!(
        r.synchronized.iter().all(|(_, s)| !s),
        "no majority must mean no sync"
    );
    assert!(
        (r.errors.last().expect("ran").1 - (0.1 + 100e-6 * 1_000.0)).abs() < 1e-6,
        "clock was touched"
    );
}

#[test]
fn min_sources_is_honoured() {
    let mut e = engine(true);
    e.min_sources = 3;
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 9,
        clock: hard_start(),
        servers: vec![ServerParams::good(100.0 * US); 2],
        engine: e,
    };
    let r = run(config, 600.0);
    assert!(
        r.synchronized.iter().all(|(_, s)| !s),
        "two sources cannot satisfy minSources 3"
    );
}

#[test]
fn asymmetric_path_biases_by_half_the_asymmetry() {
    let mut servers = vec![ServerParams::good(10.0 * US)];
    servers[0].asymmetry = 2.0 * MS;
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 3,
        clock: ClockParams {
            initial_offset: 0.0,
            frequency_error: 0.0,
            wander: 0.0,
            ..ClockParams::default()
        },
        servers,
        engine: engine(true),
    };
    let r = run(config, 3_000.0);
    let (_, rms) = r.error_stats(1_000.0);
    // NTP cannot see asymmetry: the clock ends up 1 ms behind, as any client would.
    assert!((rms - 1.0 * MS).abs() < 50.0 * US, "rms {rms}");
}

/// No clock control: the same estimates, and the clock is never touched.
#[test]
fn no_clock_control_estimates_without_touching_the_clock() {
    let clock = ClockParams {
        wander: 0.0,
        ..hard_start()
    };
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 4,
        clock,
        servers: vec![ServerParams::good(100.0 * US); 4],
        engine: engine(false),
    };
    let mut sim = Simulation::new(config);
    sim.run_until(2_000.0);
    assert_eq!(sim.clock.applied_frequency, 0.0);
    let expected = 0.1 + 100e-6 * 2_000.0;
    assert!(
        (sim.clock.offset() - expected).abs() < 1e-6,
        "clock moved: {}",
        sim.clock.offset()
    );
    let report = sim.engine.report(EngineInstant::from_secs(2_000.0));
    assert!(report.synchronized);
    let est = report.offset_seconds.expect("estimate");
    assert!(
        (est - expected).abs() < 200.0 * US,
        "estimated {est}, true {expected}"
    );
    assert!(
        (report.frequency_ppm + 100.0).abs() < 1.0,
        "frequency {}",
        report.frequency_ppm
    );
}

/// The drift file carries the frequency across a restart: with it, the
/// clock starts at the right rate; without it, it drifts until the
/// frequency is learnt again.
#[test]
fn drift_file_keeps_frequency_across_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("timectl.drift");
    let first = SimConfig {
        wiring: Wiring::Measured,
        seed: 31,
        clock: hard_start(),
        servers: vec![ServerParams::good(100.0 * US); 4],
        engine: engine(true),
    };
    let r = run(first, 5_000.0);
    drift::write(
        &path,
        Frequency::from_fraction(r.frequency),
        Frequency::from_fraction(r.frequency_sd),
    )
    .expect("write drift");

    let slow_polls = SourceSettings {
        minpoll: PollExponent::saturating(7),
        maxpoll: PollExponent::saturating(10),
        iburst: false,
        prefer: false,
    };
    let restart = |initial_frequency: Option<Frequency>| {
        let mut servers = vec![ServerParams::good(100.0 * US); 4];
        for s in &mut servers {
            s.source = slow_polls.clone();
        }
        let mut e = engine(true);
        e.initial_frequency = initial_frequency;
        let config = SimConfig {
            wiring: Wiring::Measured,
            seed: 32,
            clock: ClockParams {
                initial_offset: 0.0,
                frequency_error: 100e-6,
                wander: 0.0,
                ..ClockParams::default()
            },
            servers,
            engine: e,
        };
        run(config, 1_000.0)
    };
    let loaded = drift::read(&path).expect("read drift").expect("present");
    assert!(
        (loaded.fraction() + 100e-6).abs() < 2e-6,
        "drift file holds {loaded:?}"
    );
    let with = restart(Some(loaded));
    let without = restart(None);
    let (max_with, _) = with.error_stats(0.0);
    let (max_without, _) = without.error_stats(0.0);
    assert!(
        max_with < 1.0 * MS,
        "with the drift file: max error {max_with}"
    );
    assert!(
        max_without > 10.0 * MS,
        "without it the clock drifts first: {max_without}"
    );
}

#[test]
fn same_seed_same_result() {
    let mk = || SimConfig {
        wiring: Wiring::Measured,
        seed: 77,
        clock: hard_start(),
        servers: vec![ServerParams::good(1.0 * MS); 2],
        engine: engine(true),
    };
    let a = run(mk(), 2_000.0);
    let b = run(mk(), 2_000.0);
    assert_eq!(a.errors, b.errors);
}

/// When every source stops answering, the engine stops claiming to be
/// synchronised (and its server falls back to LI=3, stratum 16).
#[test]
fn losing_all_sources_loses_synchronisation() {
    let mut servers = vec![ServerParams::good(100.0 * US); 2];
    for s in &mut servers {
        s.source = SourceSettings {
            minpoll: PollExponent::saturating(4),
            maxpoll: PollExponent::saturating(4),
            iburst: true,
            prefer: false,
        };
    }
    let clock = ClockParams {
        initial_offset: 0.0,
        frequency_error: 0.0,
        wander: 0.0,
        ..ClockParams::default()
    };
    let config = SimConfig {
        wiring: Wiring::Measured,
        seed: 41,
        clock,
        servers,
        engine: engine(true),
    };
    let mut sim = Simulation::new(config);
    sim.run_until(200.0);
    assert!(sim.engine.synchronized());
    sim.set_loss(1.0);
    sim.run_until(400.0);
    assert!(
        !sim.engine.synchronized(),
        "still synchronised after 12 silent polls"
    );
    let state = sim.engine.server_state();
    assert_eq!(state.stratum, 16);
    sim.set_loss(0.0);
    sim.run_until(600.0);
    assert!(sim.engine.synchronized(), "did not recover");
}

/// `step_now` steps once by the current estimate whatever the step limit
/// (issue 5's `step.now`), and with clock control off it only reports.
#[test]
fn step_now_steps_once_through_the_engine() {
    let servers = vec![ServerParams::good(100.0 * US); 3];
    let clock = ClockParams {
        initial_offset: 5.0,
        frequency_error: 0.0,
        wander: 0.0,
        ..ClockParams::default()
    };
    let mut e = engine(true);
    e.step = StepPolicy {
        threshold: Seconds::new(1.0),
        limit: 0,
    };
    let mut sim = Simulation::new(SimConfig {
        wiring: Wiring::Measured,
        seed: 51,
        clock: clock.clone(),
        servers: servers.clone(),
        engine: e,
    });
    assert!(
        sim.step_now().is_err(),
        "no estimate before the first reply"
    );
    sim.run_until(1.0);
    assert!(
        sim.clock.offset() > 4.9,
        "limit 0: the engine must not step by itself"
    );
    let stepped = sim.step_now().expect("steps");
    assert!((stepped + 5.0).abs() < 0.1, "stepped by {stepped}");
    assert!(
        sim.clock.offset().abs() < 0.1,
        "clock now {}",
        sim.clock.offset()
    );
    assert_eq!(sim.engine.discipline().steps(), 1);
    sim.run_until(300.0);
    assert!(
        sim.clock.offset().abs() < 1e-3,
        "after the step it converges: {}",
        sim.clock.offset()
    );

    let mut off = Simulation::new(SimConfig {
        wiring: Wiring::Measured,
        seed: 52,
        clock,
        servers,
        engine: engine(false),
    });
    off.run_until(10.0);
    match off.step_now() {
        Err(timectl::engine::discipline::StepNowError::ClockControlOff { would_step }) => {
            assert!(
                (would_step.get() + 5.0).abs() < 0.01,
                "would step {would_step}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(off.clock.offset(), 5.0, "clock untouched");
}

#[test]
fn preferred_truechimer_is_the_system_peer() {
    let mut servers = vec![
        ServerParams::good(10.0 * US),
        ServerParams::good(1.0 * MS),
        ServerParams::good(10.0 * US),
    ];
    // The noisiest path is preferred: it still wins while it is a truechimer.
    servers[1].source.prefer = true;
    let clock = ClockParams {
        initial_offset: 0.0,
        frequency_error: 0.0,
        wander: 0.0,
        ..ClockParams::default()
    };
    let mut sim = Simulation::new(SimConfig {
        wiring: Wiring::Measured,
        seed: 61,
        clock,
        servers,
        engine: engine(true),
    });
    sim.run_until(600.0);
    assert_eq!(sim.engine.system_peer(), Some(1));
    let report = sim.engine.report(EngineInstant::from_secs(600.0));
    assert!(report.sources[1].selected && !report.sources[0].selected);
}
