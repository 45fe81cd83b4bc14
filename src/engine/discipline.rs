//! Clock discipline: turns the combined offset and frequency estimate into
//! clock actions — a step above the step threshold (only during the first
//! `limit` updates, like chrony's `makestep`), otherwise a slew done as a
//! temporary frequency offset, and a base frequency that the drift file
//! keeps across restarts.
//!
//! The discipline tracks the total correction `C(t)` it has applied since
//! start (steps plus integrated frequency changes), which lets sources keep
//! their samples in the natural frame of the free-running clock. Estimation
//! is therefore open-loop and cannot oscillate whatever the slew time.
//!
//! Sans-IO: it returns `ClockAction`s; whoever owns the clock applies them
//! through a `ClockControl` (the kernel, or the simulated clock).

use super::proto::NtpTimestamp;

/// Largest base frequency correction (the kernel's ±500 ppm).
pub const MAX_FREQUENCY: f64 = 500e-6;
/// Largest extra rate used to slew an offset (chrony's default 83333 ppm).
pub const MAX_SLEW_RATE: f64 = 0.083_333;
/// Frequency tolerance assumed for dispersion growth (RFC 5905 PHI).
pub const PHI: f64 = 15e-6;

/// Something that can adjust a clock. The real one is `clock::KernelClock`;
/// tests and the simulation use their own.
pub trait ClockControl {
    /// Moves the clock by `offset` seconds (positive: forward).
    fn step(&mut self, offset: f64) -> Result<(), ClockError>;
    /// Sets the clock's frequency correction (dimensionless; 1e-6 = 1 ppm
    /// faster) relative to its uncorrected rate.
    fn set_frequency(&mut self, frequency: f64) -> Result<(), ClockError>;
}

/// Reading the clock that is being disciplined ("now", injected).
pub trait LocalClock {
    fn now(&self) -> NtpTimestamp;
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("clock control is off")]
    Disabled,
    #[error("adjusting the clock failed: {0}")]
    Os(#[from] std::io::Error),
}

/// A change to make to the clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockAction {
    Step(f64),
    SetFrequency(f64),
}

impl ClockAction {
    pub fn apply(self, clock: &mut dyn ClockControl) -> Result<(), ClockError> {
        match self {
            ClockAction::Step(s) => clock.step(s),
            ClockAction::SetFrequency(f) => clock.set_frequency(f),
        }
    }
}

/// When stepping is allowed (chrony's `makestep threshold limit`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepPolicy {
    /// Step when the offset is larger than this, seconds.
    pub threshold: f64,
    /// Only during the first `limit` clock updates; negative: always.
    pub limit: i32,
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            threshold: 1.0,
            limit: 3,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StepNowError {
    #[error("clock control is off; would step the clock by {would_step:+.9} s")]
    ClockControlOff { would_step: f64 },
    #[error("no offset estimate yet (not synchronised)")]
    NoEstimate,
}

#[derive(Clone, Debug)]
pub struct Discipline {
    control: bool,
    policy: StepPolicy,
    start_frequency: f64,
    base_frequency: f64,
    base_frequency_sd: f64,
    applied_frequency: f64,
    correction: f64,
    correction_at: f64,
    slew_end: Option<f64>,
    updates: u64,
    steps: u64,
}

impl Discipline {
    /// `initial_frequency` comes from the drift file. With `control` off no
    /// action is ever emitted and the correction stays zero.
    pub fn new(
        control: bool,
        policy: StepPolicy,
        initial_frequency: Option<f64>,
        now: f64,
    ) -> Discipline {
        let f = initial_frequency
            .unwrap_or(0.0)
            .clamp(-MAX_FREQUENCY, MAX_FREQUENCY);
        Discipline {
            control,
            policy,
            start_frequency: f,
            base_frequency: f,
            base_frequency_sd: if initial_frequency.is_some() {
                1e-6
            } else {
                1e-4
            },
            applied_frequency: f,
            correction: 0.0,
            correction_at: now,
            slew_end: None,
            updates: 0,
            steps: 0,
        }
    }

    /// The actions to run once at start: set the drift-file frequency.
    pub fn start_actions(&self) -> Vec<ClockAction> {
        if self.control {
            vec![ClockAction::SetFrequency(self.start_frequency)]
        } else {
            vec![]
        }
    }

    pub fn clock_control(&self) -> bool {
        self.control
    }

    /// Total correction applied since start, at `now`.
    pub fn correction(&self, now: f64) -> f64 {
        self.correction
            + (self.applied_frequency - self.start_frequency) * (now - self.correction_at)
    }

    /// The frequency estimate expressed as a slope of the natural offset.
    pub fn natural_slope(&self) -> f64 {
        self.base_frequency - self.start_frequency
    }

    /// Estimated frequency correction the clock needs (absolute).
    pub fn frequency(&self) -> f64 {
        self.base_frequency
    }

    pub fn frequency_sd(&self) -> f64 {
        self.base_frequency_sd
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// When `on_timer` must run next (end of a slew).
    pub fn next_timer(&self) -> Option<f64> {
        self.slew_end
    }

    fn set_applied(&mut self, now: f64, frequency: f64) {
        self.correction = self.correction(now);
        self.correction_at = now;
        self.applied_frequency = frequency;
    }

    /// A new combined estimate: `offset` (server minus local) now, the
    /// natural `slope` if known (with its standard error), and the time
    /// over which to slew the offset away.
    pub fn update(
        &mut self,
        now: f64,
        offset: f64,
        slope: Option<(f64, f64)>,
        slew_time: f64,
    ) -> Vec<ClockAction> {
        self.updates += 1;
        if let Some((s, sd)) = slope {
            self.base_frequency = (self.start_frequency + s).clamp(-MAX_FREQUENCY, MAX_FREQUENCY);
            self.base_frequency_sd = sd;
        }
        if !self.control {
            return vec![];
        }
        let mut actions = Vec::new();
        let mut remaining = offset;
        let may_step = self.policy.limit < 0 || self.updates <= self.policy.limit as u64;
        if remaining.abs() > self.policy.threshold && may_step {
            actions.push(ClockAction::Step(remaining));
            self.correction += remaining;
            self.steps += 1;
            remaining = 0.0;
        }
        let slew_time = slew_time.max(0.5);
        let rate = (remaining / slew_time).clamp(-MAX_SLEW_RATE, MAX_SLEW_RATE);
        let frequency = self.base_frequency + rate;
        self.set_applied(now, frequency);
        self.slew_end = (rate != 0.0).then(|| now + remaining / rate);
        actions.push(ClockAction::SetFrequency(frequency));
        actions
    }

    /// Ends a slew whose time has come.
    pub fn on_timer(&mut self, now: f64) -> Vec<ClockAction> {
        match self.slew_end {
            Some(end) if end <= now => {
                self.slew_end = None;
                let base = self.base_frequency;
                self.set_applied(now, base);
                vec![ClockAction::SetFrequency(base)]
            }
            _ => vec![],
        }
    }

    /// One step by `offset` now, whatever the threshold (chronyc makestep).
    pub fn step_now(
        &mut self,
        now: f64,
        offset: Option<f64>,
    ) -> Result<Vec<ClockAction>, StepNowError> {
        let offset = offset.ok_or(StepNowError::NoEstimate)?;
        if !self.control {
            return Err(StepNowError::ClockControlOff { would_step: offset });
        }
        self.correction += offset;
        self.steps += 1;
        self.slew_end = None;
        let base = self.base_frequency;
        self.set_applied(now, base);
        Ok(vec![
            ClockAction::Step(offset),
            ClockAction::SetFrequency(base),
        ])
    }
}

/// Drift file contents, chrony's format: frequency and its error in ppm.
pub fn format_drift(frequency: f64, frequency_sd: f64) -> String {
    format!("{:.6} {:.6}\n", frequency * 1e6, frequency_sd * 1e6)
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("drift file: expected \"FREQ_PPM [SKEW_PPM]\" with |FREQ_PPM| <= 500, found {0:?}")]
pub struct DriftParseError(pub String);

/// Parses a drift file; returns the frequency (dimensionless).
pub fn parse_drift(text: &str) -> Result<f64, DriftParseError> {
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<f64>() {
        Ok(ppm) if ppm.is_finite() && ppm.abs() <= MAX_FREQUENCY * 1e6 => Ok(ppm * 1e-6),
        _ => Err(DriftParseError(text.chars().take(60).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_above_threshold_only_in_first_updates() {
        let mut d = Discipline::new(
            true,
            StepPolicy {
                threshold: 0.5,
                limit: 2,
            },
            None,
            0.0,
        );
        let a = d.update(1.0, 2.0, None, 16.0);
        assert_eq!(a[0], ClockAction::Step(2.0));
        assert_eq!(d.correction(1.0), 2.0);
        let a = d.update(2.0, 0.1, None, 16.0);
        assert!(
            matches!(a[..], [ClockAction::SetFrequency(_)]),
            "below threshold: slew"
        );
        d.update(3.0, 0.0, None, 16.0);
        let a = d.update(4.0, 3.0, None, 16.0);
        assert!(
            !a.iter().any(|x| matches!(x, ClockAction::Step(_))),
            "past the limit: never step"
        );
        assert_eq!(d.steps(), 1);
    }

    #[test]
    fn slew_is_a_bounded_temporary_frequency_offset() {
        let mut d = Discipline::new(true, StepPolicy::default(), Some(10e-6), 0.0);
        assert_eq!(d.start_actions(), vec![ClockAction::SetFrequency(10e-6)]);
        let a = d.update(0.0, 0.001, Some((0.0, 1e-7)), 10.0);
        assert_eq!(a, vec![ClockAction::SetFrequency(10e-6 + 100e-6)]);
        let end = d.next_timer().expect("slew in progress");
        assert!((end - 10.0).abs() < 1e-9);
        assert!(
            (d.correction(10.0) - 0.001).abs() < 1e-12,
            "after the slew the offset is corrected"
        );
        assert_eq!(d.on_timer(10.0), vec![ClockAction::SetFrequency(10e-6)]);
        assert!(
            (d.correction(20.0) - 0.001).abs() < 1e-12,
            "base frequency adds no correction"
        );
        // A huge offset is slewed no faster than the maximum rate.
        let mut d = Discipline::new(
            true,
            StepPolicy {
                threshold: 10.0,
                limit: 0,
            },
            None,
            0.0,
        );
        let a = d.update(0.0, 1.0, None, 1.0);
        assert_eq!(a, vec![ClockAction::SetFrequency(MAX_SLEW_RATE)]);
        assert!((d.next_timer().expect("slewing") - 1.0 / MAX_SLEW_RATE).abs() < 1e-6);
    }

    #[test]
    fn no_clock_control_emits_nothing_but_estimates() {
        let mut d = Discipline::new(false, StepPolicy::default(), None, 0.0);
        assert!(d.start_actions().is_empty());
        assert!(d.update(0.0, 5.0, Some((-100e-6, 1e-7)), 16.0).is_empty());
        assert_eq!(d.correction(100.0), 0.0);
        assert!((d.frequency() + 100e-6).abs() < 1e-15);
        assert_eq!(
            d.step_now(1.0, Some(5.0)),
            Err(StepNowError::ClockControlOff { would_step: 5.0 })
        );
    }

    #[test]
    fn step_now_steps_once_whatever_the_threshold() {
        let mut d = Discipline::new(
            true,
            StepPolicy {
                threshold: 1.0,
                limit: 0,
            },
            None,
            0.0,
        );
        assert_eq!(d.step_now(0.0, None), Err(StepNowError::NoEstimate));
        let a = d.step_now(5.0, Some(0.002)).expect("steps");
        assert_eq!(a[0], ClockAction::Step(0.002));
        assert_eq!(d.steps(), 1);
    }

    #[test]
    fn drift_file_format_round_trips_and_rejects_garbage() {
        let text = format_drift(-12.345678e-6, 0.1e-6);
        assert_eq!(text, "-12.345678 0.100000\n");
        assert!((parse_drift(&text).expect("parses") + 12.345678e-6).abs() < 1e-15);
        assert!(parse_drift("abc").is_err());
        assert!(parse_drift("900 0").is_err());
        assert!(parse_drift("").is_err());
    }
}
