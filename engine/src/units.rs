//! Newtypes for time, so the engine's APIs say their units instead of
//! passing bare `f64`s and `i8`s:
//!
//! - [`Seconds`]: a signed span of time in seconds — an offset between two
//!   clocks, a delay, a duration, an error bound.
//! - [`EngineInstant`]: an instant on the engine's time axis (seconds of
//!   CLOCK_MONOTONIC_RAW since the daemon started; the simulated raw clock
//!   in the simulation). `instant - instant` is `Seconds`.
//! - [`Frequency`]: a frequency offset or error, stored as a dimensionless
//!   fraction (s/s; 1e-6 is 1 ppm). `Frequency::from_ppm` and
//!   `Frequency::ppm` are the only ways in and out in ppm, so a ppm value
//!   cannot be taken for a fraction (a factor of a million) by accident.
//! - [`PollExponent`]: a poll interval as a power of two seconds (RFC 5905
//!   `poll`), always within [`PollExponent::MIN`]..=[`PollExponent::MAX`].
//!
//! All are `Copy` wrappers with explicit conversions (`new`/`get`); the
//! arithmetic they allow is the arithmetic that keeps the unit
//! (`Seconds + Seconds`, `Frequency * Seconds = Seconds`, ...). They
//! serialise as the bare number, so a JSON field that held an `f64` or an
//! `i8` keeps its form.

use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// `Debug` shows the bare number, as the `f64`/`i8` did before the
/// newtypes (logs such as `clock: SetFrequency(1e-6)` keep their form).
macro_rules! debug_as_number {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    )*};
}

debug_as_number!(Seconds, EngineInstant, Frequency, PollExponent);

/// A signed span of time in seconds (an offset, a delay, a duration).
#[derive(Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Seconds(f64);

impl Seconds {
    pub const ZERO: Seconds = Seconds(0.0);

    pub const fn new(seconds: f64) -> Seconds {
        Seconds(seconds)
    }

    pub const fn get(self) -> f64 {
        self.0
    }

    pub fn abs(self) -> Seconds {
        Seconds(self.0.abs())
    }

    pub fn min(self, other: Seconds) -> Seconds {
        Seconds(self.0.min(other.0))
    }

    pub fn max(self, other: Seconds) -> Seconds {
        Seconds(self.0.max(other.0))
    }

    pub fn clamp(self, low: Seconds, high: Seconds) -> Seconds {
        Seconds(self.0.clamp(low.0, high.0))
    }

    pub fn total_cmp(&self, other: &Seconds) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Display for Seconds {
    /// The number of seconds (the format's precision applies), no unit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Add for Seconds {
    type Output = Seconds;
    fn add(self, rhs: Seconds) -> Seconds {
        Seconds(self.0 + rhs.0)
    }
}

impl Sub for Seconds {
    type Output = Seconds;
    fn sub(self, rhs: Seconds) -> Seconds {
        Seconds(self.0 - rhs.0)
    }
}

impl AddAssign for Seconds {
    fn add_assign(&mut self, rhs: Seconds) {
        self.0 += rhs.0;
    }
}

impl SubAssign for Seconds {
    fn sub_assign(&mut self, rhs: Seconds) {
        self.0 -= rhs.0;
    }
}

impl Neg for Seconds {
    type Output = Seconds;
    fn neg(self) -> Seconds {
        Seconds(-self.0)
    }
}

impl Mul<f64> for Seconds {
    type Output = Seconds;
    fn mul(self, rhs: f64) -> Seconds {
        Seconds(self.0 * rhs)
    }
}

impl Div<f64> for Seconds {
    type Output = Seconds;
    fn div(self, rhs: f64) -> Seconds {
        Seconds(self.0 / rhs)
    }
}

/// The ratio of two spans (a pure number).
impl Div for Seconds {
    type Output = f64;
    fn div(self, rhs: Seconds) -> f64 {
        self.0 / rhs.0
    }
}

/// An instant on the engine's time axis: seconds of CLOCK_MONOTONIC_RAW
/// since start (the free-running hardware clock, never slewed or stepped).
#[derive(Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct EngineInstant(f64);

impl EngineInstant {
    /// The instant `seconds` after the axis' origin.
    pub const fn from_secs(seconds: f64) -> EngineInstant {
        EngineInstant(seconds)
    }

    /// Seconds since the axis' origin.
    pub const fn as_secs(self) -> f64 {
        self.0
    }

    pub fn max(self, other: EngineInstant) -> EngineInstant {
        EngineInstant(self.0.max(other.0))
    }

    pub fn min(self, other: EngineInstant) -> EngineInstant {
        EngineInstant(self.0.min(other.0))
    }
}

impl Sub for EngineInstant {
    type Output = Seconds;
    fn sub(self, rhs: EngineInstant) -> Seconds {
        Seconds(self.0 - rhs.0)
    }
}

impl Add<Seconds> for EngineInstant {
    type Output = EngineInstant;
    fn add(self, rhs: Seconds) -> EngineInstant {
        EngineInstant(self.0 + rhs.0)
    }
}

impl Sub<Seconds> for EngineInstant {
    type Output = EngineInstant;
    fn sub(self, rhs: Seconds) -> EngineInstant {
        EngineInstant(self.0 - rhs.0)
    }
}

/// A frequency offset or error as a dimensionless fraction (s/s): the
/// clock gains this many seconds per second. 1e-6 is 1 ppm.
#[derive(Clone, Copy, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Frequency(f64);

impl Frequency {
    pub const ZERO: Frequency = Frequency(0.0);

    /// From a fraction (s/s): `from_fraction(1e-6)` is 1 ppm.
    pub const fn from_fraction(fraction: f64) -> Frequency {
        Frequency(fraction)
    }

    /// From parts per million: `from_ppm(1.0)` is 1e-6.
    pub fn from_ppm(ppm: f64) -> Frequency {
        Frequency(ppm * 1e-6)
    }

    /// The fraction (s/s).
    pub const fn fraction(self) -> f64 {
        self.0
    }

    /// In parts per million.
    pub fn ppm(self) -> f64 {
        self.0 * 1e6
    }

    pub fn abs(self) -> Frequency {
        Frequency(self.0.abs())
    }

    pub fn min(self, other: Frequency) -> Frequency {
        Frequency(self.0.min(other.0))
    }

    pub fn max(self, other: Frequency) -> Frequency {
        Frequency(self.0.max(other.0))
    }

    pub fn clamp(self, low: Frequency, high: Frequency) -> Frequency {
        Frequency(self.0.clamp(low.0, high.0))
    }
}

impl Add for Frequency {
    type Output = Frequency;
    fn add(self, rhs: Frequency) -> Frequency {
        Frequency(self.0 + rhs.0)
    }
}

impl Sub for Frequency {
    type Output = Frequency;
    fn sub(self, rhs: Frequency) -> Frequency {
        Frequency(self.0 - rhs.0)
    }
}

impl Neg for Frequency {
    type Output = Frequency;
    fn neg(self) -> Frequency {
        Frequency(-self.0)
    }
}

/// What a clock gains over a span at this frequency.
impl Mul<Seconds> for Frequency {
    type Output = Seconds;
    fn mul(self, rhs: Seconds) -> Seconds {
        Seconds(self.0 * rhs.0)
    }
}

/// A poll interval of 2^exponent seconds (RFC 5905 `poll`), within
/// `MIN..=MAX` (1/16 s to 36 h).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i8", into = "i8")]
pub struct PollExponent(i8);

impl PollExponent {
    /// 2^-4 s: the shortest poll interval a source may use.
    pub const MIN: PollExponent = PollExponent(-4);
    /// 2^17 s (36 h): RFC 5905's MAXPOLL.
    pub const MAX: PollExponent = PollExponent(17);

    /// The exponent, if within `MIN..=MAX`.
    pub const fn new(exponent: i8) -> Option<PollExponent> {
        if exponent >= Self::MIN.0 && exponent <= Self::MAX.0 {
            Some(PollExponent(exponent))
        } else {
            None
        }
    }

    /// The exponent brought into `MIN..=MAX`.
    pub fn saturating(exponent: i8) -> PollExponent {
        PollExponent(exponent.clamp(Self::MIN.0, Self::MAX.0))
    }

    pub const fn get(self) -> i8 {
        self.0
    }

    /// The interval: 2^exponent seconds.
    pub fn interval(self) -> Seconds {
        Seconds(2f64.powi(i32::from(self.0)))
    }
}

impl TryFrom<i8> for PollExponent {
    type Error = String;
    fn try_from(exponent: i8) -> Result<PollExponent, String> {
        PollExponent::new(exponent).ok_or_else(|| {
            format!(
                "poll exponent {exponent} is outside {}..={}",
                Self::MIN.0,
                Self::MAX.0
            )
        })
    }
}

impl From<PollExponent> for i8 {
    fn from(p: PollExponent) -> i8 {
        p.0
    }
}

impl fmt::Display for PollExponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_and_fraction_are_a_million_apart() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        assert!(close(Frequency::from_ppm(1.0).fraction(), 1e-6));
        assert!(close(Frequency::from_fraction(-2.5e-6).ppm(), -2.5));
        let gained = Frequency::from_ppm(100.0) * Seconds::new(1000.0);
        assert!(close(gained.get(), 0.1), "{gained:?}");
    }

    #[test]
    fn instants_subtract_to_seconds() {
        let a = EngineInstant::from_secs(10.0);
        let b = a + Seconds::new(2.5);
        assert_eq!(b - a, Seconds::new(2.5));
        assert_eq!(b - Seconds::new(2.5), a);
        assert!(b > a);
    }

    #[test]
    fn poll_exponent_stays_in_range() {
        assert_eq!(PollExponent::new(-5), None);
        assert_eq!(PollExponent::new(18), None);
        assert_eq!(PollExponent::new(6).map(PollExponent::get), Some(6));
        assert_eq!(PollExponent::saturating(100), PollExponent::MAX);
        assert_eq!(PollExponent::saturating(-100), PollExponent::MIN);
        assert_eq!(PollExponent::MIN.interval(), Seconds::new(0.0625));
        assert_eq!(
            PollExponent::new(6).map(|p| p.interval()),
            Some(Seconds::new(64.0))
        );
    }

    #[test]
    fn serialised_as_bare_numbers() {
        let json = serde_json::to_string(&(
            Seconds::new(0.5),
            EngineInstant::from_secs(3.0),
            Frequency::from_fraction(2e-6),
            PollExponent::new(-2),
        ))
        .expect("json");
        assert_eq!(json, "[0.5,3.0,2e-6,-2]");
        assert!(serde_json::from_str::<PollExponent>("18").is_err());
        assert_eq!(
            serde_json::from_str::<PollExponent>("17").ok(),
            Some(PollExponent::MAX)
        );
    }
}
