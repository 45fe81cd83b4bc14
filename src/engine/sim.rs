//! Simulation: a simulated clock (initial offset, frequency error, random-walk
//! wander) and network (delay, exponential jitter, asymmetry, loss, servers
//! with a wrong time) driving the real `Engine` with fixed seeds, like
//! chrony's clknetsim tests. Everything is deterministic and pure, so the
//! tests run in plain `cargo test` and 10,000 simulated seconds take
//! milliseconds.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::discipline::{ClockAction, ClockControl, ClockError};
use super::proto::{NtpTimestamp, Packet};
use super::source::SourceSettings;
use super::system::{Action, Engine, EngineSettings, ServerState, SourceState};

/// Deterministic random numbers (SplitMix64), independent of any crate's
/// algorithm changes so that seeds keep their meaning.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform().ln()
    }
}

/// The simulated local clock.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockParams {
    /// Local minus true time at start, seconds.
    pub initial_offset: f64,
    /// Natural frequency error (1e-6: runs 1 ppm fast).
    pub frequency_error: f64,
    /// Random-walk wander of the frequency, (s/s) per sqrt(second).
    pub wander: f64,
}

/// One simulated server and the path to it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerParams {
    /// Server minus true time (0 for a good server, else a falseticker).
    pub time_offset: f64,
    /// Fixed one-way delay, seconds.
    pub base_delay: f64,
    /// Mean of the exponential queueing delay added each way, seconds.
    pub jitter: f64,
    /// Extra delay on the way to the server only, seconds.
    pub asymmetry: f64,
    /// Probability that a packet (each direction) is lost.
    pub loss: f64,
    pub stratum: u8,
    pub source: SourceSettings,
}

impl ServerParams {
    pub fn good(jitter: f64) -> ServerParams {
        ServerParams {
            time_offset: 0.0,
            base_delay: 0.000_5,
            jitter,
            asymmetry: 0.0,
            loss: 0.0,
            stratum: 1,
            source: SourceSettings::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub clock: ClockParams,
    pub servers: Vec<ServerParams>,
    pub engine: EngineSettings,
}

/// What a run produced.
#[derive(Clone, Debug, Default)]
pub struct SimResult {
    /// (true time, local minus true time) once a second.
    pub errors: Vec<(f64, f64)>,
    /// (true time, engine says synchronised) once a second.
    pub synchronized: Vec<(f64, bool)>,
    /// For each server, whether it was ever selected or combined.
    pub ever_used: Vec<bool>,
    /// Final frequency estimate (dimensionless) and its standard error.
    pub frequency: f64,
    pub frequency_sd: f64,
    pub steps: u64,
    pub requests: u64,
    pub replies: u64,
}

impl SimResult {
    /// First second from which |error| stays below `bound` until the end
    /// and the engine reports synchronised.
    pub fn settled_at(&self, bound: f64) -> Option<f64> {
        let mut settled = None;
        for ((t, e), (_, s)) in self.errors.iter().zip(&self.synchronized) {
            if e.abs() < bound && *s {
                settled.get_or_insert(*t);
            } else {
                settled = None;
            }
        }
        settled
    }
    /// Max |error| and RMS error over samples with time >= `from`.
    pub fn error_stats(&self, from: f64) -> (f64, f64) {
        let tail: Vec<f64> = self
            .errors
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, e)| *e)
            .collect();
        let max = tail.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        let rms = (tail.iter().map(|e| e * e).sum::<f64>() / tail.len().max(1) as f64).sqrt();
        (max, rms)
    }
}

/// The clock being disciplined: local(t) = t + x(t).
#[derive(Clone, Debug)]
pub struct SimClock {
    pub offset: f64,
    pub natural_frequency: f64,
    pub applied_frequency: f64,
    wander: f64,
    now: f64,
}

impl SimClock {
    fn advance(&mut self, to: f64, rng: &mut SimRng) {
        let dt = to - self.now;
        if dt <= 0.0 {
            return;
        }
        self.offset += (self.natural_frequency + self.applied_frequency) * dt;
        if self.wander > 0.0 {
            self.natural_frequency += self.wander * dt.sqrt() * rng.normal();
        }
        self.now = to;
    }
    fn read(&self, epoch: NtpTimestamp) -> NtpTimestamp {
        epoch.add_seconds(self.now + self.offset)
    }
}

impl ClockControl for SimClock {
    fn step(&mut self, offset: f64) -> Result<(), ClockError> {
        self.offset += offset;
        Ok(())
    }
    fn set_frequency(&mut self, frequency: f64) -> Result<(), ClockError> {
        self.applied_frequency = frequency;
        Ok(())
    }
}

#[derive(Debug)]
struct Arrival {
    at: f64,
    seq: u64,
    source: usize,
    bytes: [u8; 48],
}

impl PartialEq for Arrival {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Arrival {}
impl PartialOrd for Arrival {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Arrival {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// A running simulation (kept as a value so tests can inspect the engine).
pub struct Simulation {
    pub engine: Engine,
    pub clock: SimClock,
    config: SimConfig,
    rng: SimRng,
    epoch: NtpTimestamp,
    queue: BinaryHeap<Arrival>,
    seq: u64,
    result: SimResult,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Simulation {
        let mut engine = Engine::new(config.engine.clone(), 0.0);
        for s in &config.servers {
            engine.add_source(s.source.clone(), 0.0);
        }
        let mut clock = SimClock {
            offset: config.clock.initial_offset,
            natural_frequency: config.clock.frequency_error,
            applied_frequency: 0.0,
            wander: config.clock.wander,
            now: 0.0,
        };
        for a in engine.start_actions() {
            if let Action::Clock(c) = a {
                let _ = c.apply(&mut clock);
            }
        }
        let result = SimResult {
            ever_used: vec![false; config.servers.len()],
            ..SimResult::default()
        };
        Simulation {
            engine,
            clock,
            rng: SimRng::new(config.seed),
            epoch: NtpTimestamp::from_unix(1_800_000_000, 0),
            queue: BinaryHeap::new(),
            seq: 0,
            config,
            result,
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Clock(c) => {
                    // The simulated clock cannot fail.
                    let _ = ClockAction::apply(c, &mut self.clock);
                }
                Action::Poll(i) => self.poll(i),
            }
        }
    }

    fn poll(&mut self, i: usize) {
        let now = self.clock.now;
        let nonce = NtpTimestamp(self.rng.next_u64());
        let t1 = self.clock.read(self.epoch);
        let Some(bytes) = self.engine.build_request(i, now, nonce, t1) else {
            return;
        };
        self.result.requests += 1;
        let s = &self.config.servers[i];
        if self.rng.uniform() < s.loss {
            return;
        }
        let out = s.base_delay + s.asymmetry + self.rng.exponential(s.jitter);
        let back = s.base_delay + self.rng.exponential(s.jitter);
        let lost_back = self.rng.uniform() < s.loss;
        let Ok(request) = Packet::decode(&bytes) else {
            return;
        };
        let server_time = |t: f64| self.epoch.add_seconds(t + s.time_offset);
        let t2 = server_time(now + out);
        let t3 = server_time(now + out + 10e-6);
        let state = ServerState {
            leap: super::proto::Leap::NoWarning,
            stratum: s.stratum,
            reference_id: *b"SIM\0",
            root_delay: 0.0,
            root_dispersion: 10e-6,
            reference_time: t2,
            poll: 6,
            precision: -20,
        };
        let reply = state.reply(&request, t2, t3).encode();
        if !lost_back {
            self.seq += 1;
            self.queue.push(Arrival {
                at: now + out + 10e-6 + back,
                seq: self.seq,
                source: i,
                bytes: reply,
            });
        }
    }

    /// Runs until true time `until`, recording the error once a second.
    pub fn run_until(&mut self, until: f64) {
        let mut next_tick = self.clock.now.floor() + 1.0;
        loop {
            let wake = self.engine.next_wakeup().unwrap_or(f64::INFINITY);
            let arrival = self.queue.peek().map(|a| a.at).unwrap_or(f64::INFINITY);
            let next = wake.min(arrival).min(next_tick);
            if next > until {
                self.clock.advance(until, &mut self.rng);
                return;
            }
            self.clock.advance(next, &mut self.rng);
            if arrival <= next {
                if let Some(a) = self.queue.pop() {
                    let t4 = self.clock.read(self.epoch);
                    let (_, actions) = self.engine.on_reply(a.source, next, &a.bytes, t4);
                    self.result.replies += 1;
                    self.apply(actions);
                }
            } else if wake <= next {
                let actions = self.engine.on_timer(next);
                self.apply(actions);
            } else {
                self.result.errors.push((next, self.clock.offset));
                self.result
                    .synchronized
                    .push((next, self.engine.synchronized()));
                for (i, used) in self.result.ever_used.iter_mut().enumerate() {
                    let state = self.engine.source_state(i);
                    *used |= matches!(state, Some(SourceState::Selected | SourceState::Combined));
                }
                next_tick += 1.0;
            }
        }
    }

    /// Asks the engine for a one-shot step (`step_now`) and applies it.
    pub fn step_now(&mut self) -> Result<f64, super::discipline::StepNowError> {
        let (offset, actions) = self.engine.step_now(self.clock.now)?;
        self.apply(actions);
        Ok(offset)
    }

    /// Changes the loss probability of every path (e.g. 1.0: all servers gone).
    pub fn set_loss(&mut self, loss: f64) {
        for s in &mut self.config.servers {
            s.loss = loss;
        }
    }

    /// Current frequency estimate and error, as the drift file would hold.
    pub fn frequency(&self) -> (f64, f64) {
        (
            self.engine.discipline().frequency(),
            self.engine.discipline().frequency_sd(),
        )
    }

    pub fn finish(mut self) -> SimResult {
        let (f, sd) = self.frequency();
        self.result.frequency = f;
        self.result.frequency_sd = sd;
        self.result.steps = self.engine.discipline().steps();
        self.result
    }
}

/// Runs a whole simulation for `duration` simulated seconds.
pub fn run(config: SimConfig, duration: f64) -> SimResult {
    let mut sim = Simulation::new(config);
    sim.run_until(duration);
    sim.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_right() {
        let mut a = SimRng::new(1);
        let mut b = SimRng::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut r = SimRng::new(42);
        let n = 20_000;
        let mean = (0..n).map(|_| r.exponential(2.0)).sum::<f64>() / n as f64;
        assert!((mean - 2.0).abs() < 0.1, "exponential mean {mean}");
        let var = (0..n).map(|_| r.normal().powi(2)).sum::<f64>() / n as f64;
        assert!((var - 1.0).abs() < 0.05, "normal variance {var}");
    }

    #[test]
    fn simulated_clock_follows_frequency_and_steps() {
        let mut rng = SimRng::new(0);
        let mut c = SimClock {
            offset: 0.0,
            natural_frequency: 100e-6,
            applied_frequency: 0.0,
            wander: 0.0,
            now: 0.0,
        };
        c.advance(10.0, &mut rng);
        assert!((c.offset - 1e-3).abs() < 1e-12);
        c.set_frequency(-100e-6).expect("sim");
        c.advance(20.0, &mut rng);
        assert!((c.offset - 1e-3).abs() < 1e-12);
        c.step(-1e-3).expect("sim");
        assert!(c.offset.abs() < 1e-12);
    }
}
