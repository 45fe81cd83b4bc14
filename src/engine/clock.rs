//! The real clocks: reading CLOCK_REALTIME (the clock we discipline and
//! serve) and a monotonic instant for scheduling, plus `KernelClock`, the
//! only `ClockControl` that touches the system clock (through `adjtimex`).
//!
//! `KernelClock::new` refuses to exist when `TIMECTL_NO_CLOCK_CONTROL` or
//! `CI` is set in the environment, so no test or CI run can reach the
//! kernel calls even if it forgets `--no-clock-control`.

use std::time::Instant;

use nix::time::{ClockId, clock_gettime};

use super::adjtimex;
use super::discipline::{ClockControl, ClockError, LeapAction, LocalClock};
use super::proto::NtpTimestamp;
use super::units::{EngineInstant, Frequency, Seconds};

/// Environment variable that forces no clock control.
pub const NO_CLOCK_CONTROL_ENV: &str = "TIMECTL_NO_CLOCK_CONTROL";

/// Whether the environment forbids clock control (tests, CI).
pub fn clock_control_forbidden_by_env() -> Option<&'static str> {
    forbidden_by(|k| std::env::var_os(k))
}

fn forbidden_by(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<&'static str> {
    let set = |k: &str| get(k).is_some_and(|v| !v.is_empty() && v != "0");
    if set(NO_CLOCK_CONTROL_ENV) {
        Some(NO_CLOCK_CONTROL_ENV)
    } else if set("CI") {
        Some("CI")
    } else {
        None
    }
}

/// CLOCK_REALTIME as an NTP timestamp.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl LocalClock for SystemClock {
    fn now(&self) -> NtpTimestamp {
        match clock_gettime(ClockId::CLOCK_REALTIME) {
            Ok(ts) => NtpTimestamp::from_unix(ts.tv_sec(), ts.tv_nsec() as u32),
            // clock_gettime(CLOCK_REALTIME) cannot fail on Linux; fall back
            // to std rather than panic.
            Err(_) => {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                NtpTimestamp::from_unix(d.as_secs() as i64, d.subsec_nanos())
            }
        }
    }
}

/// Monotonic seconds since the daemon started: the engine's time axis.
#[derive(Clone, Copy, Debug)]
pub struct Monotonic(Instant);

impl Monotonic {
    pub fn start() -> Monotonic {
        Monotonic(Instant::now())
    }
    pub fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
    pub fn at(&self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.0).as_secs_f64()
    }
}

/// The engine's view of the clocks: its time axis is CLOCK_MONOTONIC_RAW
/// (the hardware clock, which the kernel never slews or steps, unlike
/// CLOCK_MONOTONIC), and the correction is CLOCK_REALTIME minus
/// CLOCK_MONOTONIC_RAW since start: everything the kernel has done to the
/// clock (our slews and steps, when they really took effect, and anyone
/// else's). See `discipline` for why this is measured, not assumed.
#[derive(Clone, Copy, Debug)]
pub struct EngineClock {
    raw_start_ns: i128,
    difference_start_ns: i128,
}

/// One reading of the engine's clocks.
#[derive(Clone, Copy, Debug)]
pub struct ClockReading {
    /// CLOCK_MONOTONIC_RAW seconds since start: the engine's instant.
    pub now: EngineInstant,
    /// CLOCK_REALTIME.
    pub local: NtpTimestamp,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC_RAW, change since start.
    pub correction: Seconds,
}

fn nanos(clock: ClockId) -> i128 {
    match clock_gettime(clock) {
        Ok(ts) => i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()),
        // clock_gettime cannot fail for these clocks on Linux.
        Err(_) => 0,
    }
}

impl EngineClock {
    pub fn start() -> EngineClock {
        let (raw, real) = Self::pair();
        EngineClock {
            raw_start_ns: raw,
            difference_start_ns: real - raw,
        }
    }

    /// Raw and realtime nanoseconds read back to back (realtime between two
    /// raw readings). A process descheduled between the readings (a loaded
    /// machine, a VM) would pair instants milliseconds apart, which looks
    /// like a clock jump: read again, and keep the tightest of a few tries.
    fn pair() -> (i128, i128) {
        let mut best: Option<(i128, i128, i128)> = None;
        for _ in 0..5 {
            let raw1 = nanos(ClockId::CLOCK_MONOTONIC_RAW);
            let real = nanos(ClockId::CLOCK_REALTIME);
            let raw2 = nanos(ClockId::CLOCK_MONOTONIC_RAW);
            let gap = raw2 - raw1;
            if best.is_none_or(|(g, _, _)| gap < g) {
                best = Some((gap, (raw1 + raw2) / 2, real));
            }
            if gap < 20_000 {
                break;
            }
        }
        best.map_or((0, 0), |(_, raw, real)| (raw, real))
    }

    /// The engine's instant now (raw seconds since start).
    pub fn now(&self) -> EngineInstant {
        EngineInstant::from_secs(
            (nanos(ClockId::CLOCK_MONOTONIC_RAW) - self.raw_start_ns) as f64 * 1e-9,
        )
    }

    pub fn read(&self) -> ClockReading {
        let (raw, real) = Self::pair();
        let secs = real.div_euclid(1_000_000_000);
        let sub = real.rem_euclid(1_000_000_000);
        ClockReading {
            now: EngineInstant::from_secs((raw - self.raw_start_ns) as f64 * 1e-9),
            local: NtpTimestamp::from_unix(secs as i64, sub as u32),
            correction: Seconds::new((real - raw - self.difference_start_ns) as f64 * 1e-9),
        }
    }
}

/// The system clock, adjusted through the kernel.
#[derive(Debug)]
pub struct KernelClock {
    _private: (),
}

impl KernelClock {
    /// Takes control of the system clock: stops the kernel's own PLL/FLL so
    /// only our frequency and steps apply. Fails without CAP_SYS_TIME.
    pub fn new() -> Result<KernelClock, ClockError> {
        if let Some(var) = clock_control_forbidden_by_env() {
            return Err(ClockError::Os(std::io::Error::other(format!(
                "clock control refused: {var} is set in the environment"
            ))));
        }
        adjtimex::disable_kernel_pll()?;
        Ok(KernelClock { _private: () })
    }
}

impl KernelClock {
    /// The frequency the kernel runs at now (kept at start when there is
    /// no drift file, as chronyd does).
    pub fn frequency(&self) -> Result<Frequency, ClockError> {
        adjtimex::read_frequency()
            .map(Frequency::from_fraction)
            .map_err(ClockError::Os)
    }
}

impl ClockControl for KernelClock {
    fn set_synchronized(&mut self, max_error: Option<Seconds>) -> Result<(), ClockError> {
        adjtimex::set_synchronized(max_error.map(Seconds::get)).map_err(ClockError::Os)
    }
    fn set_leap(&mut self, leap: LeapAction) -> Result<(), ClockError> {
        adjtimex::set_leap(leap == LeapAction::Insert, leap == LeapAction::Delete)
            .map_err(ClockError::Os)
    }
    fn step(&mut self, offset: Seconds) -> Result<(), ClockError> {
        adjtimex::step(offset.get()).map_err(ClockError::Os)
    }
    fn set_frequency(&mut self, frequency: Frequency) -> Result<(), ClockError> {
        adjtimex::set_frequency(frequency.fraction()).map_err(ClockError::Os)
    }
}

/// Clock "control" that refuses: what `--no-clock-control` installs.
#[derive(Debug, Default)]
pub struct NoClockControl;

impl ClockControl for NoClockControl {
    fn set_leap(&mut self, _: LeapAction) -> Result<(), ClockError> {
        Err(ClockError::Disabled)
    }
    fn set_synchronized(&mut self, _: Option<Seconds>) -> Result<(), ClockError> {
        Err(ClockError::Disabled)
    }
    fn step(&mut self, _: Seconds) -> Result<(), ClockError> {
        Err(ClockError::Disabled)
    }
    fn set_frequency(&mut self, _: Frequency) -> Result<(), ClockError> {
        Err(ClockError::Disabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_reading_is_close_to_std() {
        let ours = SystemClock.now();
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        let std_ts = NtpTimestamp::from_unix(d.as_secs() as i64, d.subsec_nanos());
        assert!(std_ts.diff_seconds(ours).abs() < 0.1);
    }

    #[test]
    fn environment_forbids_clock_control() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(forbidden_by(env(&[])), None);
        assert_eq!(forbidden_by(env(&[("CI", "true")])), Some("CI"));
        assert_eq!(forbidden_by(env(&[("CI", "0")])), None);
        assert_eq!(forbidden_by(env(&[("CI", "")])), None);
        assert_eq!(
            forbidden_by(env(&[("TIMECTL_NO_CLOCK_CONTROL", "1"), ("CI", "1")])),
            Some(NO_CLOCK_CONTROL_ENV)
        );
    }

    #[test]
    fn no_clock_control_refuses() {
        assert!(matches!(
            NoClockControl.step(Seconds::new(1.0)),
            Err(ClockError::Disabled)
        ));
        assert!(matches!(
            NoClockControl.set_frequency(Frequency::from_ppm(1.0)),
            Err(ClockError::Disabled)
        ));
    }

    #[test]
    fn frequency_split_into_tick_and_freq() {
        assert_eq!(adjtimex::split_frequency(0.0), (10_000, 0));
        // +240 ppm: 2 tick units (200 ppm) plus 40 ppm in 2^-16 ppm units.
        assert_eq!(adjtimex::split_frequency(240e-6), (10_002, 40 << 16));
        let (tick, freq) = adjtimex::split_frequency(-0.083_333);
        assert_eq!(tick, 10_000 - 833);
        assert!((freq as f64 / 65536.0 + 33.0).abs() < 0.01);
        // Out of range is clamped to the kernel's 10%.
        assert_eq!(adjtimex::split_frequency(0.5).0, 11_000);
    }

    #[test]
    fn step_offset_split_keeps_nanoseconds_positive() {
        assert_eq!(adjtimex::split_offset(1.5), (1, 500_000_000));
        assert_eq!(adjtimex::split_offset(-0.25), (-1, 750_000_000));
        assert_eq!(adjtimex::split_offset(-2.0), (-2, 0));
    }
}
