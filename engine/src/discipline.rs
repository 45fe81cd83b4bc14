//! Clock discipline: turns the combined offset and frequency estimate into
//! clock actions — a step above the step threshold (only during the first
//! `limit` updates, like chrony's `makestep`), otherwise a slew done as a
//! temporary frequency offset, a base frequency that the drift file keeps
//! across restarts, and the kernel's leap-second flag.
//!
//! The reference frame is the free-running hardware clock
//! (CLOCK_MONOTONIC_RAW, which the kernel never slews or steps): the
//! engine's time axis is that clock, and the *correction* `C(t)` is
//! everything the kernel has added on top of it (CLOCK_REALTIME minus
//! CLOCK_MONOTONIC_RAW, from start). Sources store *natural* offsets
//! `u = measured offset + C(t)`, which follow the hardware clock: a straight
//! line whose slope is the absolute frequency the kernel needs. Because the
//! daemon *measures* C instead of assuming it (`observe`), every step, slew,
//! late frequency change (the kernel applies a new frequency at its next
//! tick), another program's `date -s` and a kernel leap second are in the
//! frame exactly as the kernel made them; the model below only bridges the
//! milliseconds between two measurements. Estimation is open-loop: the
//! control cannot feed back into the estimates, so nothing oscillates.
//!
//! (The first version integrated its own frequency settings over
//! CLOCK_MONOTONIC. CLOCK_MONOTONIC runs at the slewed rate, so a 0.5 s
//! slew at 83,333 ppm was booked 8 % short; the error looked like a
//! frequency error of thousands of ppm and the clock ran away on a real
//! kernel, issue 8.)
//!
//! Sans-IO: it returns `ClockAction`s; whoever owns the clock applies them
//! through a `ClockControl` (the kernel, or the simulated clock).

use super::proto::{Leap, NtpTimestamp};
use super::units::{Frequency, Seconds};

/// Largest base frequency correction (the kernel's ±500 ppm).
pub const MAX_FREQUENCY: Frequency = Frequency::from_fraction(500e-6);
/// Largest extra rate used to slew an offset (chrony's default 83333 ppm).
pub const MAX_SLEW_RATE: Frequency = Frequency::from_fraction(0.083_333);
/// Frequency tolerance assumed for dispersion growth (RFC 5905 PHI).
pub const PHI: Frequency = Frequency::from_fraction(15e-6);
/// The error assumed for a drift file's frequency (the temperature of a
/// restarted machine differs a little): chrony's drift files hold a skew of
/// this order once settled.
const DRIFT_PRIOR_SD: f64 = 1e-6;
/// The error assumed for the kernel's frequency at start without a drift
/// file: whatever set it (a previous daemon, or nobody; a crystal is
/// within 100 ppm) is trusted little.
const UNKNOWN_FREQUENCY_SD: f64 = 1e-4;
/// A slope less certain than this is not used at all (chrony's
/// maxupdateskew, 1000 ppm).
const MAX_UPDATE_SKEW: f64 = 1e-3;
/// A measured correction further than this from the model means the clock
/// was moved by something else (another program's step, a leap second).
const JUMP_THRESHOLD: f64 = 0.010;

/// The kernel's leap-second flag (STA_INS / STA_DEL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeapAction {
    /// Insert a second at the next UTC midnight.
    Insert,
    /// Delete a second at the next UTC midnight.
    Delete,
    /// No leap second armed.
    None,
}

impl LeapAction {
    /// Seconds the clock moves back at the leap (insert: 1, delete: -1).
    fn seconds(self) -> f64 {
        match self {
            LeapAction::Insert => 1.0,
            LeapAction::Delete => -1.0,
            LeapAction::None => 0.0,
        }
    }
}

/// Something that can adjust a clock. The real one is `clock::KernelClock`;
/// tests and the simulation use their own.
pub trait ClockControl {
    /// Moves the clock by `offset` seconds (positive: forward).
    fn step(&mut self, offset: Seconds) -> Result<(), ClockError>;
    /// Sets the clock's frequency correction relative to its uncorrected
    /// rate (positive: faster).
    fn set_frequency(&mut self, frequency: Frequency) -> Result<(), ClockError>;
    /// Arms (or disarms) a leap second at the next UTC midnight.
    fn set_leap(&mut self, leap: LeapAction) -> Result<(), ClockError>;
    /// Tells the kernel whether the clock is synchronised (clears or sets
    /// STA_UNSYNC) and, when it is, its error bound in seconds: what
    /// `timedatectl`, `ntp_gettime` users and the kernel's 11-minute RTC
    /// sync read.
    fn set_synchronized(&mut self, max_error: Option<Seconds>) -> Result<(), ClockError>;
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
    /// Move the clock by this much (positive: forward).
    Step(Seconds),
    SetFrequency(Frequency),
    SetLeap(LeapAction),
    /// Synchronised with this error bound (seconds), or not (None).
    SetSynchronized(Option<Seconds>),
}

impl ClockAction {
    pub fn apply(self, clock: &mut dyn ClockControl) -> Result<(), ClockError> {
        match self {
            ClockAction::Step(s) => clock.step(s),
            ClockAction::SetFrequency(f) => clock.set_frequency(f),
            ClockAction::SetLeap(l) => clock.set_leap(l),
            ClockAction::SetSynchronized(bound) => clock.set_synchronized(bound),
        }
    }
}

/// When stepping is allowed (chrony's `makestep threshold limit`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepPolicy {
    /// Step when the offset is larger than this, seconds.
    pub threshold: Seconds,
    /// Only during the first `limit` clock updates; negative: always.
    pub limit: i32,
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            threshold: Seconds::new(1.0),
            limit: 3,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StepNowError {
    #[error("clock control is off; would step the clock by {would_step:+.9} s")]
    ClockControlOff { would_step: Seconds },
    #[error("no offset estimate yet (not synchronised)")]
    NoEstimate,
}

/// What a measurement of the clock's correction showed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observed {
    /// As the model expected (to within milliseconds).
    AsExpected,
    /// The clock jumped by this much (another program stepped it): requests
    /// in flight span the jump and must be forgotten.
    Jumped(f64),
    /// The kernel inserted (or deleted) the armed leap second; the frame is
    /// kept continuous, and this action disarms the kernel flag.
    Leap(ClockAction),
}

/// A leap second the engine has armed in the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ArmedLeap {
    action: LeapAction,
    /// The UTC midnight it happens at (Unix seconds).
    at_unix: f64,
}

#[derive(Clone, Debug)]
pub struct Discipline {
    control: bool,
    policy: StepPolicy,
    /// The drift file's frequency, set once at start.
    drift_frequency: Option<f64>,
    /// The frequency started from and its error, until a slope is better.
    prior: Option<(f64, f64)>,
    base_frequency: f64,
    base_frequency_sd: f64,
    /// The kernel frequency now (as set by us; without clock control, as
    /// measured between two observations).
    applied_frequency: f64,
    /// The frequency before the last change (for instants just before it).
    previous_frequency: f64,
    anchor_at: f64,
    anchor_correction: f64,
    /// Leap seconds the kernel applied, added back so the frame stays
    /// continuous.
    leap_shift: f64,
    armed_leap: Option<ArmedLeap>,
    slew_end: Option<f64>,
    updates: u64,
    steps: u64,
    updates_since_step: u64,
}

impl Discipline {
    /// `drift_frequency` comes from the drift file; `kernel_frequency` is
    /// the frequency the kernel runs at when the engine starts (kept when
    /// there is no drift file, as chronyd does). With `control` off no
    /// action is ever emitted.
    pub fn new(
        control: bool,
        policy: StepPolicy,
        drift_frequency: Option<Frequency>,
        kernel_frequency: Frequency,
        now: f64,
    ) -> Discipline {
        let max = MAX_FREQUENCY.fraction();
        let drift_frequency = drift_frequency.map(|f| f.fraction().clamp(-max, max));
        let f = drift_frequency
            .unwrap_or(kernel_frequency.fraction())
            .clamp(-max, max);
        let f_sd = if drift_frequency.is_some() {
            DRIFT_PRIOR_SD
        } else {
            UNKNOWN_FREQUENCY_SD
        };
        Discipline {
            control,
            policy,
            drift_frequency,
            prior: Some((f, f_sd)),
            base_frequency: f,
            base_frequency_sd: f_sd,
            applied_frequency: f,
            previous_frequency: f,
            anchor_at: now,
            anchor_correction: 0.0,
            leap_shift: 0.0,
            armed_leap: None,
            slew_end: None,
            updates: 0,
            steps: 0,
            updates_since_step: 0,
        }
    }

    /// The actions to run once at start: set the drift-file frequency, and
    /// disarm any leap second another daemon left armed.
    pub fn start_actions(&self) -> Vec<ClockAction> {
        if !self.control {
            return vec![];
        }
        let mut actions = vec![ClockAction::SetLeap(LeapAction::None)];
        if self.drift_frequency.is_some() {
            actions.push(ClockAction::SetFrequency(Frequency::from_fraction(
                self.base_frequency,
            )));
        }
        actions
    }

    pub fn clock_control(&self) -> bool {
        self.control
    }

    /// Total correction at `now` (model between two measurements).
    pub fn correction(&self, now: f64) -> f64 {
        let rate = if now >= self.anchor_at {
            self.applied_frequency
        } else {
            self.previous_frequency
        };
        self.anchor_correction + rate * (now - self.anchor_at)
    }

    /// A measurement of the correction: `measured` is CLOCK_REALTIME minus
    /// CLOCK_MONOTONIC_RAW since start, read at engine instant `now` when
    /// the clock read `local_unix` (Unix seconds, for leap seconds).
    pub fn observe(&mut self, now: f64, local_unix: f64, measured: f64) -> Observed {
        let mut measured = measured + self.leap_shift;
        let jump = measured - self.correction(now);
        let mut outcome = Observed::AsExpected;
        if let Some(leap) = self.armed_leap {
            let moved_back = leap.action.seconds();
            if (jump + moved_back).abs() < 0.25 {
                // The kernel's leap: keep the frame continuous.
                self.leap_shift += moved_back;
                measured += moved_back;
                self.armed_leap = None;
                outcome = Observed::Leap(ClockAction::SetLeap(LeapAction::None));
            } else if local_unix > leap.at_unix + 2.0 {
                // Midnight passed without a leap (no clock control, or the
                // kernel refused): forget it.
                self.armed_leap = None;
                if self.control {
                    outcome = Observed::Leap(ClockAction::SetLeap(LeapAction::None));
                }
            }
        }
        if outcome == Observed::AsExpected && jump.abs() > JUMP_THRESHOLD {
            outcome = Observed::Jumped(jump);
        }
        if !self.control && now - self.anchor_at > 1.0 && outcome == Observed::AsExpected {
            // Someone else (or nobody) sets the kernel's frequency: follow it.
            self.applied_frequency = (measured - self.anchor_correction) / (now - self.anchor_at);
        }
        if now >= self.anchor_at {
            self.previous_frequency = self.applied_frequency;
            self.anchor_at = now;
            self.anchor_correction = measured;
        }
        outcome
    }

    /// The frequency estimate as the slope of the natural offset (the
    /// absolute frequency correction the kernel needs).
    pub fn natural_slope(&self) -> Frequency {
        Frequency::from_fraction(self.base_frequency)
    }

    /// Estimated frequency correction the clock needs (absolute).
    pub fn frequency(&self) -> Frequency {
        Frequency::from_fraction(self.base_frequency)
    }

    /// The standard error of `frequency` (chrony's skew).
    pub fn frequency_sd(&self) -> Frequency {
        Frequency::from_fraction(self.base_frequency_sd)
    }

    /// The frequency the kernel is running at now (base plus any slew).
    pub fn applied_frequency(&self) -> Frequency {
        Frequency::from_fraction(self.applied_frequency)
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Clock updates since the last step (or since start): 0 right after a
    /// step, before any measurement taken after it was used.
    pub fn updates_since_step(&self) -> u64 {
        self.updates_since_step
    }

    /// The leap second armed in the kernel, if any.
    pub fn armed_leap(&self) -> LeapAction {
        self.armed_leap.map_or(LeapAction::None, |l| l.action)
    }

    /// When `on_timer` must run next (end of a slew).
    pub fn next_timer(&self) -> Option<f64> {
        self.slew_end
    }

    fn set_applied(&mut self, now: f64, frequency: f64) {
        self.anchor_correction = self.correction(now);
        self.anchor_at = now;
        self.previous_frequency = self.applied_frequency;
        self.applied_frequency = frequency;
    }

    fn book_step(&mut self, now: f64, offset: f64) {
        self.anchor_correction = self.correction(now) + offset;
        self.previous_frequency = self.applied_frequency;
        self.anchor_at = now;
        self.steps += 1;
        self.updates_since_step = 0;
    }

    /// A new combined estimate: `offset` (server minus local) now, the
    /// natural `slope` if known (with its standard error), and the time
    /// over which to slew the offset away.
    pub fn update(
        &mut self,
        now: f64,
        offset: Seconds,
        slope: Option<(Frequency, Frequency)>,
        slew_time: Seconds,
    ) -> Vec<ClockAction> {
        let (offset, slew_time) = (offset.get(), slew_time.get());
        let slope = slope.map(|(s, sd)| (s.fraction(), sd.fraction()));
        self.updates += 1;
        self.updates_since_step += 1;
        if let Some((s, sd)) = slope {
            self.track_frequency(s, sd);
        }
        if !self.control {
            return vec![];
        }
        let mut actions = Vec::new();
        let mut remaining = offset;
        let may_step = self.policy.limit < 0 || self.updates <= self.policy.limit as u64;
        if remaining.abs() > self.policy.threshold.get() && may_step {
            actions.push(ClockAction::Step(Seconds::new(remaining)));
            self.book_step(now, remaining);
            remaining = 0.0;
        }
        let slew_time = slew_time.max(0.5);
        let max_rate = MAX_SLEW_RATE.fraction();
        let rate = (remaining / slew_time).clamp(-max_rate, max_rate);
        let frequency = self.base_frequency + rate;
        self.set_applied(now, frequency);
        self.slew_end = (rate != 0.0).then(|| now + remaining / rate);
        actions.push(ClockAction::SetFrequency(Frequency::from_fraction(
            frequency,
        )));
        actions
    }

    /// Folds a regression slope `measured` (standard error `measured_sd`)
    /// into the frequency estimate. The regression already sums up every
    /// sample in its window, so it is not averaged with earlier estimates
    /// (they came from the same samples); only the frequency the engine
    /// started from is a prior worth its own error: the drift file's (1 ppm)
    /// or the kernel's register (100 ppm, whatever set it). While the slope
    /// is less certain than the prior, the two are combined by inverse
    /// variance: a slope from a few burst samples, some queued or taken
    /// during a fast slew, must not replace a good drift file, nor move the
    /// kernel's frequency by its full error. Once the slope is better, it
    /// alone counts, for good.
    fn track_frequency(&mut self, measured: f64, measured_sd: f64) {
        if !measured.is_finite() || !measured_sd.is_finite() || measured_sd > MAX_UPDATE_SKEW {
            return;
        }
        let (f, f_sd) = match self.prior {
            Some((prior, prior_sd)) if measured_sd > prior_sd => {
                let (wp, wm) = (prior_sd.powi(-2), measured_sd.powi(-2));
                (
                    (prior * wp + measured * wm) / (wp + wm),
                    (wp + wm).powf(-0.5),
                )
            }
            _ => {
                self.prior = None;
                (measured, measured_sd)
            }
        };
        self.base_frequency = f.clamp(-MAX_FREQUENCY.fraction(), MAX_FREQUENCY.fraction());
        self.base_frequency_sd = f_sd;
    }

    /// Ends a slew whose time has come.
    pub fn on_timer(&mut self, now: f64) -> Vec<ClockAction> {
        match self.slew_end {
            Some(end) if end <= now => {
                self.slew_end = None;
                let base = self.base_frequency;
                self.set_applied(now, base);
                vec![ClockAction::SetFrequency(Frequency::from_fraction(base))]
            }
            _ => vec![],
        }
    }

    /// One step by `offset` now, whatever the threshold (chronyc makestep).
    /// Any slew in progress ends: the kernel is left at the frequency
    /// estimate.
    pub fn step_now(
        &mut self,
        now: f64,
        offset: Option<f64>,
    ) -> Result<Vec<ClockAction>, StepNowError> {
        let offset = offset.ok_or(StepNowError::NoEstimate)?;
        if !self.control {
            return Err(StepNowError::ClockControlOff {
                would_step: Seconds::new(offset),
            });
        }
        self.book_step(now, offset);
        self.slew_end = None;
        let base = self.base_frequency;
        self.set_applied(now, base);
        Ok(vec![
            ClockAction::Step(Seconds::new(offset)),
            ClockAction::SetFrequency(Frequency::from_fraction(base)),
        ])
    }

    /// The leap second the selected sources announce (by majority), at a
    /// clock reading of `local_unix`: armed in the kernel on the last day of
    /// a month (the kernel applies it at the next UTC midnight, so arming
    /// earlier would put it on the wrong day), disarmed when the
    /// announcement goes away before midnight.
    pub fn announce_leap(&mut self, local_unix: f64, leap: Leap) -> Vec<ClockAction> {
        let wanted = match leap {
            Leap::InsertSecond if is_last_day_of_month(local_unix) => LeapAction::Insert,
            Leap::DeleteSecond if is_last_day_of_month(local_unix) => LeapAction::Delete,
            _ => LeapAction::None,
        };
        if wanted == self.armed_leap() {
            return vec![];
        }
        self.armed_leap = (wanted != LeapAction::None).then(|| ArmedLeap {
            action: wanted,
            at_unix: ((local_unix / 86_400.0).floor() + 1.0) * 86_400.0,
        });
        if self.control {
            vec![ClockAction::SetLeap(wanted)]
        } else {
            vec![]
        }
    }
}

/// Whether Unix time `unix` (UTC) falls on the last day of its month.
pub fn is_last_day_of_month(unix: f64) -> bool {
    let day = (unix / 86_400.0).floor() as i64;
    civil_from_days(day).1 != civil_from_days(day + 1).1
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard
/// Hinnant's algorithm, proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Drift file contents, chrony's format: frequency and its error in ppm.
pub fn format_drift(frequency: Frequency, frequency_sd: Frequency) -> String {
    format!("{:.6} {:.6}\n", frequency.ppm(), frequency_sd.ppm())
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("drift file: expected \"FREQ_PPM [SKEW_PPM]\" with |FREQ_PPM| <= 500, found {0:?}")]
pub struct DriftParseError(pub String);

/// Parses a drift file (ppm); returns the frequency.
pub fn parse_drift(text: &str) -> Result<Frequency, DriftParseError> {
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<f64>() {
        Ok(ppm) if ppm.is_finite() && ppm.abs() <= MAX_FREQUENCY.ppm() => {
            Ok(Frequency::from_ppm(ppm))
        }
        _ => Err(DriftParseError(text.chars().take(60).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(fraction: f64) -> Frequency {
        Frequency::from_fraction(fraction)
    }

    /// `Discipline::update` with bare numbers (seconds, fractions).
    fn upd(
        d: &mut Discipline,
        now: f64,
        offset: f64,
        slope: Option<(f64, f64)>,
        slew_time: f64,
    ) -> Vec<ClockAction> {
        d.update(
            now,
            Seconds::new(offset),
            slope.map(|(s, sd)| (fr(s), fr(sd))),
            Seconds::new(slew_time),
        )
    }

    #[test]
    fn steps_above_threshold_only_in_first_updates() {
        let mut d = Discipline::new(
            true,
            StepPolicy {
                threshold: Seconds::new(0.5),
                limit: 2,
            },
            None,
            fr(0.0),
            0.0,
        );
        let a = upd(&mut d, 1.0, 2.0, None, 16.0);
        assert_eq!(a[0], ClockAction::Step(Seconds::new(2.0)));
        assert_eq!(d.correction(1.0), 2.0);
        let a = upd(&mut d, 2.0, 0.1, None, 16.0);
        assert!(
            matches!(a[..], [ClockAction::SetFrequency(_)]),
            "below threshold: slew"
        );
        upd(&mut d, 3.0, 0.0, None, 16.0);
        let a = upd(&mut d, 4.0, 3.0, None, 16.0);
        assert!(
            !a.iter().any(|x| matches!(x, ClockAction::Step(_))),
            "past the limit: never step"
        );
        assert_eq!(d.steps(), 1);
    }

    #[test]
    fn slew_is_a_bounded_temporary_frequency_offset() {
        let mut d = Discipline::new(true, StepPolicy::default(), Some(fr(10e-6)), fr(0.0), 0.0);
        assert_eq!(
            d.start_actions(),
            vec![
                ClockAction::SetLeap(LeapAction::None),
                ClockAction::SetFrequency(fr(10e-6))
            ]
        );
        let a = upd(&mut d, 0.0, 0.001, Some((10e-6, 1e-7)), 10.0);
        assert_eq!(a, vec![ClockAction::SetFrequency(fr(10e-6 + 100e-6))]);
        let end = d.next_timer().expect("slew in progress");
        assert!((end - 10.0).abs() < 1e-9);
        assert!(
            (d.correction(10.0) - 0.001 - 10e-6 * 10.0).abs() < 1e-12,
            "after the slew the offset is corrected"
        );
        assert_eq!(d.on_timer(10.0), vec![ClockAction::SetFrequency(fr(10e-6))]);
        assert!(
            (d.correction(20.0) - 0.001 - 10e-6 * 20.0).abs() < 1e-12,
            "the base frequency is part of the correction (raw frame)"
        );
        // A huge offset is slewed no faster than the maximum rate.
        let mut d = Discipline::new(
            true,
            StepPolicy {
                threshold: Seconds::new(10.0),
                limit: 0,
            },
            None,
            fr(0.0),
            0.0,
        );
        let a = upd(&mut d, 0.0, 1.0, None, 1.0);
        assert_eq!(a, vec![ClockAction::SetFrequency(MAX_SLEW_RATE)]);
        assert!((d.next_timer().expect("slewing") - 1.0 / MAX_SLEW_RATE.fraction()).abs() < 1e-6);
    }

    #[test]
    fn no_clock_control_emits_nothing_but_estimates() {
        let mut d = Discipline::new(false, StepPolicy::default(), None, fr(0.0), 0.0);
        assert!(d.start_actions().is_empty());
        assert!(upd(&mut d, 0.0, 5.0, Some((-100e-6, 1e-7)), 16.0).is_empty());
        assert_eq!(
            d.correction(100.0),
            0.0,
            "nothing observed, nothing applied"
        );
        assert!((d.frequency().fraction() + 100e-6).abs() < 1e-10);
        assert_eq!(
            d.step_now(1.0, Some(5.0)),
            Err(StepNowError::ClockControlOff {
                would_step: Seconds::new(5.0)
            })
        );
    }

    #[test]
    fn step_now_steps_once_whatever_the_threshold() {
        let mut d = Discipline::new(
            true,
            StepPolicy {
                threshold: Seconds::new(1.0),
                limit: 0,
            },
            None,
            fr(0.0),
            0.0,
        );
        assert_eq!(d.step_now(0.0, None), Err(StepNowError::NoEstimate));
        let a = d.step_now(5.0, Some(0.002)).expect("steps");
        assert_eq!(a[0], ClockAction::Step(Seconds::new(0.002)));
        assert_eq!(d.steps(), 1);
    }

    #[test]
    fn drift_file_format_round_trips_and_rejects_garbage() {
        let text = format_drift(fr(-12.345678e-6), fr(0.1e-6));
        assert_eq!(text, "-12.345678 0.100000\n");
        assert!((parse_drift(&text).expect("parses").fraction() + 12.345678e-6).abs() < 1e-15);
        assert!(parse_drift("abc").is_err());
        assert!(parse_drift("900 0").is_err());
        assert!(parse_drift("").is_err());
    }

    #[test]
    fn measured_correction_replaces_the_model() {
        let mut d = Discipline::new(true, StepPolicy::default(), None, fr(0.0), 0.0);
        upd(&mut d, 0.0, 0.010, Some((0.0, 1e-7)), 1.0);
        // The kernel applied the slew 4 ms late (its tick): 0.33 ms less.
        let measured = 0.010 * 0.5 - 0.004 * 0.010;
        assert_eq!(d.observe(0.5, 0.0, measured), Observed::AsExpected);
        assert!((d.correction(0.5) - measured).abs() < 1e-15);
        // The model continues from the measurement at the applied rate.
        assert!((d.correction(0.6) - (measured + 0.010 * 0.1)).abs() < 1e-12);
        // Another program stepped the clock by +2 s.
        assert!(
            matches!(d.observe(0.7, 0.0, measured + 0.010 * 0.2 + 2.0), Observed::Jumped(j) if (j - 2.0).abs() < 1e-9)
        );
        assert!((d.correction(0.7) - (measured + 0.002 + 2.0)).abs() < 1e-9);
    }

    #[test]
    fn without_clock_control_the_kernel_rate_is_followed() {
        let mut d = Discipline::new(false, StepPolicy::default(), None, fr(0.0), 0.0);
        // The kernel runs 50 ppm fast for somebody else.
        d.observe(0.0, 0.0, 0.0);
        d.observe(10.0, 0.0, 50e-6 * 10.0);
        assert!((d.correction(20.0) - 50e-6 * 20.0).abs() < 1e-12);
        assert_eq!(d.observe(20.0, 0.0, 50e-6 * 20.0), Observed::AsExpected);
    }

    #[test]
    fn leap_second_armed_on_the_last_day_and_frame_kept_continuous() {
        // 2026-12-31 12:00 UTC and 2026-12-30 12:00 UTC.
        let last_day = 1_798_718_400.0;
        let day_before = last_day - 86_400.0;
        assert!(is_last_day_of_month(last_day));
        assert!(!is_last_day_of_month(day_before));
        assert_eq!(
            civil_from_days((last_day / 86_400.0) as i64),
            (2026, 12, 31)
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert!(is_last_day_of_month(951_782_400.0), "2000-02-29");
        assert!(!is_last_day_of_month(951_696_000.0), "2000-02-28");

        let mut d = Discipline::new(true, StepPolicy::default(), None, fr(0.0), 0.0);
        assert!(
            d.announce_leap(day_before, Leap::InsertSecond).is_empty(),
            "too early"
        );
        assert_eq!(
            d.announce_leap(last_day, Leap::InsertSecond),
            vec![ClockAction::SetLeap(LeapAction::Insert)]
        );
        assert!(
            d.announce_leap(last_day + 60.0, Leap::InsertSecond)
                .is_empty()
        );
        // The kernel inserts the second at midnight: the measured
        // correction drops by 1 s; the frame stays continuous.
        let midnight = last_day + 43_200.0;
        assert_eq!(
            d.observe(10.0, midnight + 0.5, -1.0),
            Observed::Leap(ClockAction::SetLeap(LeapAction::None))
        );
        assert!(d.correction(10.0).abs() < 1e-12);
        assert_eq!(d.armed_leap(), LeapAction::None);
        assert_eq!(d.observe(20.0, midnight + 10.0, -1.0), Observed::AsExpected);
        // An announcement withdrawn before midnight disarms.
        let mut d = Discipline::new(true, StepPolicy::default(), None, fr(0.0), 0.0);
        d.announce_leap(last_day, Leap::DeleteSecond);
        assert_eq!(
            d.announce_leap(last_day + 1.0, Leap::NoWarning),
            vec![ClockAction::SetLeap(LeapAction::None)]
        );
    }

    #[test]
    fn a_step_ends_the_slew_and_leaves_the_estimated_frequency() {
        let mut d = Discipline::new(true, StepPolicy::default(), None, fr(0.0), 0.0);
        upd(&mut d, 0.0, 0.5, Some((20e-6, 1e-7)), 2.0);
        assert!(d.next_timer().is_some());
        let f = d.frequency();
        assert!((f.fraction() - 20e-6).abs() < 1e-10, "{f:?}");
        let a = d.step_now(3.0, Some(-0.25)).expect("steps");
        assert_eq!(
            a,
            vec![
                ClockAction::Step(Seconds::new(-0.25)),
                ClockAction::SetFrequency(f)
            ]
        );
        assert_eq!(d.next_timer(), None);
        assert_eq!(d.applied_frequency(), f);
        assert_eq!(d.updates_since_step(), 0);
        upd(&mut d, 5.0, 0.0, None, 2.0);
        assert_eq!(d.updates_since_step(), 1);
    }

    #[test]
    fn a_noisy_slope_barely_moves_a_good_prior_but_a_better_slope_replaces_it() {
        // A drift file's 100 ppm (skew 1 ppm) and a slope from a few burst
        // samples 300 ppm off with a 100 ppm error: hardly moved.
        let mut d = Discipline::new(true, StepPolicy::default(), Some(fr(100e-6)), fr(0.0), 0.0);
        upd(&mut d, 1.0, 0.0, Some((400e-6, 100e-6)), 2.0);
        assert!(
            (d.frequency().fraction() - 100e-6).abs() < 0.1e-6,
            "{}",
            d.frequency().fraction()
        );
        // Without a drift file the kernel's frequency is trusted little:
        // the first slope replaces it almost entirely.
        let mut d = Discipline::new(true, StepPolicy::default(), None, fr(0.0), 0.0);
        upd(&mut d, 1.0, 0.0, Some((150e-6, 5e-6)), 2.0);
        assert!(
            (d.frequency().fraction() - 150e-6).abs() < 1e-6,
            "{}",
            d.frequency().fraction()
        );
        // A slope more certain than the drift file replaces it (the machine
        // now runs 20 ppm faster than when the file was written).
        let mut d = Discipline::new(true, StepPolicy::default(), Some(fr(100e-6)), fr(0.0), 0.0);
        for i in 0..20 {
            upd(&mut d, f64::from(i), 0.0, Some((120e-6, 0.5e-6)), 16.0);
        }
        assert!(
            (d.frequency().fraction() - 120e-6).abs() < 0.5e-6,
            "{}",
            d.frequency().fraction()
        );
        // A slope beyond 1000 ppm of error is not used at all.
        let mut d = Discipline::new(true, StepPolicy::default(), None, fr(0.0), 0.0);
        upd(&mut d, 1.0, 0.0, Some((400e-6, 2e-3)), 2.0);
        assert_eq!(d.frequency().fraction(), 0.0);
    }
}
