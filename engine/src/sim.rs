//! Simulation: a simulated clock (initial offset, frequency error, random-walk
//! wander) and network (delay, exponential jitter, asymmetry, loss, servers
//! with a wrong time) driving the real `Engine` with fixed seeds, like
//! chrony's clknetsim tests. Everything is deterministic and pure, so the
//! tests run in plain `cargo test` and 10,000 simulated seconds take
//! milliseconds.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::discipline::{ClockAction, ClockControl, ClockError, LeapAction};
use super::proto::{NtpTimestamp, Packet};
use super::source::SourceSettings;
use super::system::{Action, Engine, EngineSettings, ServerState, SourceState};
use super::units::{EngineInstant, Frequency, Seconds};

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

/// The simulated local clock and the world's UTC.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockParams {
    /// Local minus true time at start, seconds.
    pub initial_offset: f64,
    /// Natural frequency error of the hardware clock (1e-6: runs 1 ppm fast).
    pub frequency_error: f64,
    /// Random-walk wander of the frequency, (s/s) per sqrt(second).
    pub wander: f64,
    /// The kernel's frequency setting when the engine starts (another
    /// daemon's leftover, or an admin's `adjtimex`): 1e-6 = 1 ppm fast.
    pub kernel_frequency: f64,
    /// The kernel's timekeeping tick, seconds: a new frequency takes effect
    /// at the next one (0: at once).
    pub tick: f64,
    /// True UTC at start (Unix seconds).
    pub start_unix: i64,
    /// A leap second inserted into UTC at this midnight (Unix seconds);
    /// the servers announce it during the last day before it.
    pub leap_insert_at: Option<i64>,
}

impl Default for ClockParams {
    fn default() -> Self {
        ClockParams {
            initial_offset: 0.0,
            frequency_error: 0.0,
            wander: 0.0,
            kernel_frequency: 0.0,
            // Linux with HZ=250.
            tick: 0.004,
            start_unix: 1_800_000_000,
            leap_insert_at: None,
        }
    }
}

/// How the simulation drives the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Wiring {
    /// As the daemon does: the engine's time axis is CLOCK_MONOTONIC_RAW
    /// and every call is preceded by a measurement of the clock's
    /// correction (CLOCK_REALTIME minus CLOCK_MONOTONIC_RAW).
    #[default]
    Measured,
    /// As the daemon did before issue 8: time axis CLOCK_MONOTONIC (which
    /// the kernel slews) and no measurement (the engine's own bookkeeping
    /// only). Kept to show the simulation reproduces that runaway.
    MonotonicUnmeasured,
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
    /// Extra delay of the very first request on the way out (ARP
    /// resolution on a fresh link: 1.4 ms on the UML bench), seconds.
    pub first_request_delay: f64,
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
            first_request_delay: 0.0,
            loss: 0.0,
            stratum: 1,
            source: SourceSettings::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub wiring: Wiring,
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
    /// (true time, the engine's frequency estimate) once a second.
    pub frequencies: Vec<(f64, f64)>,
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
    /// Median |error| over samples with time >= `from`.
    pub fn median_abs_error(&self, from: f64) -> f64 {
        let mut tail: Vec<f64> = self
            .errors
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, e)| e.abs())
            .collect();
        tail.sort_by(f64::total_cmp);
        tail.get(tail.len() / 2).copied().unwrap_or(f64::NAN)
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

/// The simulated kernel clock, modelled on what Linux does (and what the
/// User-Mode Linux bench shows): a free-running hardware clock (`raw`,
/// CLOCK_MONOTONIC_RAW) with its own frequency error and wander; the
/// kernel's correction on top of it, made of an integrated frequency
/// (`tick` + `freq`: slews of up to 10 %, taking effect at the next
/// timekeeping tick, not at once) and instant steps; CLOCK_MONOTONIC runs at
/// the corrected rate but never steps; CLOCK_REALTIME = raw + correction.
/// Leap seconds armed with `set_leap` are inserted or deleted at the next
/// UTC midnight of the realtime clock, as the kernel does.
#[derive(Clone, Debug)]
pub struct SimClock {
    /// True time, seconds since the simulation's start.
    now: f64,
    /// Hardware clock reading (seconds since start; starts at 0).
    raw: f64,
    /// Local minus true time when the simulation started.
    initial_offset: f64,
    /// The hardware clock's frequency error (1e-6: 1 ppm fast).
    pub natural_frequency: f64,
    wander: f64,
    /// Total kernel correction: realtime = start + raw + correction.
    correction: f64,
    /// The part of `correction` made by frequency (CLOCK_MONOTONIC's).
    slewed: f64,
    /// The kernel frequency in effect (what adjtimex last set, once its
    /// tick has come).
    pub applied_frequency: f64,
    /// A frequency set but not yet in effect: (raw time it starts, value).
    pending_frequency: Option<(f64, f64)>,
    /// Timekeeping tick (seconds of raw time): frequency changes take
    /// effect at the next multiple.
    tick: f64,
    /// Realtime (NTP seconds) of the start: the realtime reading is
    /// `epoch + now + offset()`.
    epoch: NtpTimestamp,
    /// Armed leap second: +1 insert, -1 delete, 0 none.
    leap: i8,
    /// Leap seconds the kernel has applied.
    pub leaps_applied: u32,
    /// STA_UNSYNC clear, with this error bound (seconds).
    pub synchronized: Option<f64>,
}

impl SimClock {
    pub fn new(params: &ClockParams) -> SimClock {
        SimClock {
            now: 0.0,
            raw: 0.0,
            initial_offset: params.initial_offset,
            natural_frequency: params.frequency_error,
            wander: params.wander,
            correction: 0.0,
            slewed: 0.0,
            applied_frequency: params.kernel_frequency,
            pending_frequency: None,
            tick: params.tick,
            epoch: NtpTimestamp::from_unix(params.start_unix, 0),
            leap: 0,
            leaps_applied: 0,
            synchronized: None,
        }
    }

    /// Local minus true time now (positive: the clock is ahead).
    pub fn offset(&self) -> f64 {
        self.initial_offset + (self.raw - self.now) + self.correction
    }

    /// True time now (seconds since start).
    pub fn true_time(&self) -> f64 {
        self.now
    }

    /// CLOCK_MONOTONIC_RAW, seconds since start.
    pub fn raw(&self) -> f64 {
        self.raw
    }

    /// CLOCK_MONOTONIC, seconds since start: slewed, never stepped.
    pub fn monotonic(&self) -> f64 {
        self.raw + self.slewed
    }

    /// CLOCK_REALTIME minus CLOCK_MONOTONIC_RAW, from start: everything the
    /// kernel has corrected (what the daemon measures).
    pub fn correction(&self) -> f64 {
        self.correction
    }

    /// CLOCK_REALTIME as an NTP timestamp.
    pub fn read(&self) -> NtpTimestamp {
        self.epoch.add_seconds(self.now + self.offset())
    }

    fn advance(&mut self, to: f64, rng: &mut SimRng) {
        let dt = to - self.now;
        if dt <= 0.0 {
            return;
        }
        let raw_end = self.raw + dt * (1.0 + self.natural_frequency);
        let mut raw = self.raw;
        while raw < raw_end {
            let until = match self.pending_frequency {
                Some((at, _)) if at <= raw_end => at.max(raw),
                _ => raw_end,
            };
            let d = until - raw;
            self.correction += self.applied_frequency * d;
            self.slewed += self.applied_frequency * d;
            raw = until;
            if let Some((at, f)) = self.pending_frequency
                && at <= raw
            {
                self.applied_frequency = f;
                self.pending_frequency = None;
            }
            if until >= raw_end {
                break;
            }
        }
        let before = self.read_seconds();
        self.raw = raw_end;
        self.now = to;
        self.apply_leap(before);
        if self.wander > 0.0 {
            self.natural_frequency += self.wander * dt.sqrt() * rng.normal();
        }
    }

    /// Realtime as NTP seconds (f64; fine for day boundaries).
    fn read_seconds(&self) -> f64 {
        self.epoch.to_unix_near(1_800_000_000) + self.now + self.offset()
    }

    /// The kernel's leap second: when the realtime clock crosses a UTC
    /// midnight with a leap armed, it goes back (insert) or forward
    /// (delete) one second, and the leap is done.
    fn apply_leap(&mut self, before: f64) {
        if self.leap == 0 {
            return;
        }
        let after = self.read_seconds();
        let midnight = (before / 86_400.0).floor() * 86_400.0 + 86_400.0;
        if before < midnight && after >= midnight {
            self.correction -= f64::from(self.leap);
            self.leap = 0;
            self.leaps_applied += 1;
        }
    }
}

impl ClockControl for SimClock {
    fn step(&mut self, offset: Seconds) -> Result<(), ClockError> {
        self.correction += offset.get();
        Ok(())
    }
    fn set_frequency(&mut self, frequency: Frequency) -> Result<(), ClockError> {
        let frequency = frequency.fraction();
        let frequency = frequency.clamp(-0.1, 0.1);
        if self.tick > 0.0 {
            let at = (self.raw / self.tick).floor() * self.tick + self.tick;
            self.pending_frequency = Some((at, frequency));
        } else {
            self.applied_frequency = frequency;
        }
        Ok(())
    }
    fn set_synchronized(&mut self, max_error: Option<Seconds>) -> Result<(), ClockError> {
        self.synchronized = max_error.map(Seconds::get);
        Ok(())
    }
    fn set_leap(&mut self, leap: LeapAction) -> Result<(), ClockError> {
        self.leap = match leap {
            LeapAction::Insert => 1,
            LeapAction::Delete => -1,
            LeapAction::None => 0,
        };
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
    queue: BinaryHeap<Arrival>,
    seq: u64,
    result: SimResult,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Simulation {
        let mut settings = config.engine.clone();
        if settings.clock_control {
            // The daemon reads the kernel's frequency at start.
            settings.kernel_frequency = Frequency::from_fraction(config.clock.kernel_frequency);
        }
        let mut engine = Engine::new(settings, EngineInstant::from_secs(0.0));
        for s in &config.servers {
            engine.add_source(s.source.clone(), EngineInstant::from_secs(0.0));
        }
        let mut clock = SimClock::new(&config.clock);
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
            queue: BinaryHeap::new(),
            seq: 0,
            config,
            result,
        }
    }

    /// The engine's instant now, on the time axis the wiring gives it.
    fn engine_now(&self) -> EngineInstant {
        EngineInstant::from_secs(match self.config.wiring {
            Wiring::Measured => self.clock.raw(),
            Wiring::MonotonicUnmeasured => self.clock.monotonic(),
        })
    }

    /// What the daemon does before every call into the engine: read the
    /// clocks and hand the engine the correction the kernel made.
    fn observe(&mut self) {
        if self.config.wiring == Wiring::Measured {
            let actions = self.engine.observe_clock(
                EngineInstant::from_secs(self.clock.raw()),
                self.clock.read(),
                Seconds::new(self.clock.correction()),
            );
            self.apply(actions);
        }
    }

    /// True time at which the engine's instant `at` comes.
    fn true_time_at(&self, at: f64) -> f64 {
        let (now, rate) = match self.config.wiring {
            Wiring::Measured => (self.clock.raw(), 1.0 + self.clock.natural_frequency),
            Wiring::MonotonicUnmeasured => (
                self.clock.monotonic(),
                (1.0 + self.clock.natural_frequency) * (1.0 + self.clock.applied_frequency),
            ),
        };
        self.clock.true_time() + (at - now).max(0.0) / rate
    }

    /// Seconds the world's UTC has dropped for leap seconds by true time `t`.
    fn leap_seconds_at(&self, t: f64) -> f64 {
        match self.config.clock.leap_insert_at {
            Some(at) if self.config.clock.start_unix as f64 + t >= at as f64 => 1.0,
            _ => 0.0,
        }
    }

    /// Local minus true UTC now.
    pub fn error(&self) -> f64 {
        self.clock.offset() + self.leap_seconds_at(self.clock.true_time())
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
        let now = self.clock.true_time();
        let engine_now = self.engine_now();
        let nonce = NtpTimestamp(self.rng.next_u64());
        let t1 = self.clock.read();
        let Some(bytes) = self.engine.build_request(i, engine_now, nonce, t1) else {
            return;
        };
        self.result.requests += 1;
        let s = &self.config.servers[i];
        if self.rng.uniform() < s.loss {
            return;
        }
        let first = if self.result.requests == 1 {
            s.first_request_delay
        } else {
            0.0
        };
        let out = s.base_delay + s.asymmetry + first + self.rng.exponential(s.jitter);
        let back = s.base_delay + self.rng.exponential(s.jitter);
        let lost_back = self.rng.uniform() < s.loss;
        let Ok(request) = Packet::decode(&bytes) else {
            return;
        };
        let start = NtpTimestamp::from_unix(self.config.clock.start_unix, 0);
        let server_time = |t: f64| start.add_seconds(t + s.time_offset - self.leap_seconds_at(t));
        let t2 = server_time(now + out);
        let t3 = server_time(now + out + 10e-6);
        let utc = self.config.clock.start_unix as f64 + now + out;
        let leap = match self.config.clock.leap_insert_at {
            Some(at) if utc < at as f64 && utc >= at as f64 - 86_400.0 => {
                super::proto::Leap::InsertSecond
            }
            _ => super::proto::Leap::NoWarning,
        };
        let state = ServerState {
            leap,
            stratum: s.stratum,
            reference_id: *b"SIM\0",
            root_delay: 0.0,
            root_dispersion: 10e-6,
            reference_time: t2,
            poll: super::units::PollExponent::saturating(6),
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
        let mut next_tick = self.clock.true_time().floor() + 1.0;
        loop {
            let wake = self
                .engine
                .next_wakeup()
                .map_or(f64::INFINITY, |w| self.true_time_at(w.as_secs()));
            let arrival = self.queue.peek().map(|a| a.at).unwrap_or(f64::INFINITY);
            let next = wake.min(arrival).min(next_tick);
            if next > until {
                self.clock.advance(until, &mut self.rng);
                return;
            }
            self.clock.advance(next, &mut self.rng);
            if arrival <= next {
                if let Some(a) = self.queue.pop() {
                    self.observe();
                    let t4 = self.clock.read();
                    let now = self.engine_now();
                    let (_, actions) = self.engine.on_reply(a.source, now, &a.bytes, t4);
                    self.result.replies += 1;
                    self.apply(actions);
                }
            } else if wake <= next {
                self.observe();
                let now = self.engine_now();
                let actions = self.engine.on_timer(now);
                self.apply(actions);
            } else {
                let error = self.error();
                self.result.errors.push((next, error));
                self.result
                    .synchronized
                    .push((next, self.engine.synchronized()));
                self.result
                    .frequencies
                    .push((next, self.engine.discipline().frequency().fraction()));
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
        self.observe();
        let (offset, actions) = self.engine.step_now(self.engine_now())?;
        self.apply(actions);
        Ok(offset.get())
    }

    /// Moves server `index`'s time (its clock stepped, or a spike).
    pub fn set_server_offset(&mut self, index: usize, time_offset: f64) {
        if let Some(s) = self.config.servers.get_mut(index) {
            s.time_offset = time_offset;
        }
    }

    /// Changes the loss probability of every path (e.g. 1.0: all servers gone).
    pub fn set_loss(&mut self, loss: f64) {
        for s in &mut self.config.servers {
            s.loss = loss;
        }
    }

    /// The engine's status report now (after a clock observation, as the
    /// daemon does before answering).
    pub fn report(&mut self) -> super::system::SystemReport {
        self.observe();
        self.engine.report(self.engine_now())
    }

    /// Moves the clock as another program would (`date -s`): the engine
    /// is not told.
    pub fn external_step(&mut self, offset: f64) {
        let _ = self.clock.step(Seconds::new(offset));
    }

    /// Current frequency estimate and error, as the drift file would hold.
    pub fn frequency(&self) -> (f64, f64) {
        (
            self.engine.discipline().frequency().fraction(),
            self.engine.discipline().frequency_sd().fraction(),
        )
    }

    /// What the run recorded so far.
    pub fn result(&self) -> &SimResult {
        &self.result
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
    fn simulated_clock_behaves_like_the_kernel() {
        let mut rng = SimRng::new(0);
        let params = ClockParams {
            frequency_error: 100e-6,
            tick: 0.004,
            ..ClockParams::default()
        };
        let mut c = SimClock::new(&params);
        c.advance(10.0, &mut rng);
        assert!(
            (c.offset() - 1e-3).abs() < 1e-12,
            "hardware runs 100 ppm fast"
        );
        assert!((c.raw() - 10.001).abs() < 1e-9);
        // A new frequency takes effect at the next tick, not at once.
        c.advance(10.0011, &mut rng);
        c.set_frequency(Frequency::from_fraction(-100e-6))
            .expect("sim");
        c.advance(10.002, &mut rng);
        assert_eq!(c.applied_frequency, 0.0, "not before the tick");
        c.advance(20.0, &mut rng);
        assert_eq!(c.applied_frequency, -100e-6);
        assert!((c.offset() - 1e-3).abs() < 1e-6, "{}", c.offset());
        // CLOCK_MONOTONIC runs at the corrected rate; steps skip it.
        let mono = c.monotonic();
        c.step(Seconds::new(-1e-3)).expect("sim");
        assert!(c.offset().abs() < 1e-6);
        assert_eq!(c.monotonic(), mono);
        assert!((c.correction() - (-100e-6 * (c.raw() - 10.004) - 1e-3)).abs() < 1e-8);
        // A slew at 83,333 ppm moves CLOCK_MONOTONIC too: one second of it
        // lasts 1/1.083 s of raw time.
        c.set_frequency(Frequency::from_fraction(0.083_333))
            .expect("sim");
        let (raw0, mono0) = (c.raw(), c.monotonic());
        c.advance(21.0, &mut rng);
        let ratio = (c.monotonic() - mono0) / (c.raw() - raw0);
        assert!((ratio - 1.083_333).abs() < 0.01, "monotonic/raw {ratio}");
    }

    #[test]
    fn kernel_leap_second_at_utc_midnight() {
        let mut rng = SimRng::new(0);
        // 10 s before 2027-01-01 00:00 UTC.
        let params = ClockParams {
            tick: 0.0,
            start_unix: 1_798_761_590,
            ..ClockParams::default()
        };
        let mut c = SimClock::new(&params);
        c.set_leap(LeapAction::Insert).expect("sim");
        c.advance(9.5, &mut rng);
        assert_eq!(c.leaps_applied, 0);
        c.advance(10.5, &mut rng);
        assert_eq!(c.leaps_applied, 1);
        assert!((c.offset() + 1.0).abs() < 1e-9, "the second was repeated");
        c.advance(86_420.0, &mut rng);
        assert_eq!(c.leaps_applied, 1, "once");
    }
}
