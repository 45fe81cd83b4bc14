//! RMS time error of the engine under the simulation at 10 us, 100 us, 1 ms
//! and 10 ms network jitter with a fixed 64 s poll, printed beside chrony's
//! published figures for that setting. Run: `cargo bench --bench engine_sim`.
//!
//! Setup: one server, 500 us fixed one-way delay plus exponential queueing
//! delay with mean = jitter each way; clock with 10 ppm frequency error and
//! 1e-9/sqrt(s) wander; the first 2,000 s (convergence) are not counted;
//! RMS over the next 100,000 s, averaged over five seeds.

use timectl::engine::discipline::StepPolicy;
use timectl::engine::sim::{ClockParams, ServerParams, SimConfig, Wiring, run};
use timectl::engine::source::SourceSettings;
use timectl::engine::system::EngineSettings;
use timectl::engine::units::{Frequency, PollExponent, Seconds};

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // a benchmark has nothing to assert, so it only runs under cargo bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benchmark: run with `cargo bench --bench {}`",
            env!("CARGO_CRATE_NAME")
        );
        return;
    }
    let chrony_us = [14.0, 56.0, 229.0, 750.0];
    let jitters = [10e-6, 100e-6, 1e-3, 10e-3];
    let seeds = [1u64, 2, 3, 4, 5];
    println!(
        "engine RMS time error, fixed 64 s poll, one server, 100,000 s per seed, {} seeds",
        seeds.len()
    );
    println!(
        "{:>10} {:>14} {:>14} {:>14} {:>10}",
        "jitter", "timectl RMS", "timectl max", "chrony RMS", "ratio"
    );
    for (jitter, chrony) in jitters.iter().zip(chrony_us) {
        let mut rms_sum = 0.0;
        let mut max_all = 0.0f64;
        for &seed in &seeds {
            let mut server = ServerParams::good(*jitter);
            server.source = SourceSettings {
                minpoll: PollExponent::saturating(6),
                maxpoll: PollExponent::saturating(6),
                iburst: true,
                prefer: false,
            };
            let config = SimConfig {
                wiring: Wiring::Measured,
                seed,
                clock: ClockParams {
                    initial_offset: 0.01,
                    frequency_error: 10e-6,
                    wander: 1e-9,
                    ..ClockParams::default()
                },
                servers: vec![server],
                engine: EngineSettings {
                    min_sources: 1,
                    step: StepPolicy {
                        threshold: Seconds::new(1.0),
                        limit: 3,
                    },
                    clock_control: true,
                    initial_frequency: None,
                    kernel_frequency: Frequency::ZERO,
                    local_stratum: None,
                },
            };
            let r = run(config, 102_000.0);
            let (max, rms) = r.error_stats(2_000.0);
            rms_sum += rms;
            max_all = max_all.max(max);
        }
        let rms = rms_sum / seeds.len() as f64 * 1e6;
        println!(
            "{:>8.0}us {:>12.1}us {:>12.1}us {:>12.0}us {:>10.2}",
            jitter * 1e6,
            rms,
            max_all * 1e6,
            chrony,
            rms / chrony
        );
    }
}
