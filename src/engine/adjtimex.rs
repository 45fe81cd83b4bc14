//! The one module that changes the system clock: `clock_adjtime(2)` on
//! CLOCK_REALTIME. Everything unsafe about clock control is here, three
//! small calls with a SAFETY note each. Reached only through
//! `clock::KernelClock`, which the daemon builds only with clock control on.

use std::io;

/// USER_HZ ticks per second: `tick` is in microseconds per tick.
const USER_HZ: i64 = 100;
const NOMINAL_TICK: i64 = 1_000_000 / USER_HZ;
/// The kernel accepts tick within ±10% of nominal.
const MAX_TICK_DELTA: i64 = NOMINAL_TICK / 10;

/// Splits a frequency correction (dimensionless) into the kernel's `tick`
/// (coarse, 100 ppm per unit) and `freq` (fine, ppm scaled by 2^16, which
/// the kernel bounds at ±500 ppm), as chrony does to slew faster than 500 ppm.
pub(super) fn split_frequency(frequency: f64) -> (i64, i64) {
    let ppm = (frequency * 1e6).clamp(-1e5, 1e5);
    let ppm_per_tick = 1e6 / NOMINAL_TICK as f64;
    let delta = ((ppm / ppm_per_tick).round() as i64).clamp(-MAX_TICK_DELTA, MAX_TICK_DELTA);
    let rest = (ppm - delta as f64 * ppm_per_tick).clamp(-500.0, 500.0);
    (NOMINAL_TICK + delta, (rest * 65536.0).round() as i64)
}

/// Splits a step into whole seconds and a non-negative nanosecond part, as
/// ADJ_SETOFFSET with ADJ_NANO expects.
pub(super) fn split_offset(offset: f64) -> (i64, i64) {
    let secs = offset.floor();
    let mut nanos = ((offset - secs) * 1e9).round() as i64;
    let mut secs = secs as i64;
    if nanos >= 1_000_000_000 {
        secs += 1;
        nanos -= 1_000_000_000;
    }
    (secs, nanos)
}

fn adjtime(tx: &mut libc::timex) -> io::Result<()> {
    // SAFETY: `tx` is a valid, exclusively borrowed, fully initialised
    // `timex` for the duration of the call; the kernel only reads and
    // writes within that struct. CLOCK_REALTIME is a valid clock id.
    let rc = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, tx) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn zeroed_timex() -> libc::timex {
    // SAFETY: `timex` is a plain C struct of integers (and padding) for
    // which all-zero bytes are a valid value; modes = 0 means "read only".
    unsafe { std::mem::zeroed() }
}

/// Clears the kernel PLL/FLL status bits so that only our frequency
/// setting and steps move the clock (another daemon may have left them on).
pub(super) fn disable_kernel_pll() -> io::Result<()> {
    let mut tx = zeroed_timex();
    adjtime(&mut tx)?;
    let mut set = zeroed_timex();
    set.modes = libc::ADJ_STATUS;
    set.status =
        tx.status & !(libc::STA_PLL | libc::STA_FLL | libc::STA_PPSTIME | libc::STA_PPSFREQ);
    adjtime(&mut set)
}

pub(super) fn set_frequency(frequency: f64) -> io::Result<()> {
    let (tick, freq) = split_frequency(frequency);
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_FREQUENCY | libc::ADJ_TICK;
    tx.tick = tick as _;
    tx.freq = freq as _;
    adjtime(&mut tx)
}

/// The kernel's current frequency correction (tick and freq together),
/// dimensionless.
pub(super) fn read_frequency() -> io::Result<f64> {
    let mut tx = zeroed_timex();
    adjtime(&mut tx)?;
    let ppm_per_tick = 1e6 / NOMINAL_TICK as f64;
    // c_long is 32 bits on some targets: the cast is not always a no-op.
    #[allow(clippy::unnecessary_cast)]
    let tick = tx.tick as i64;
    let ppm = (tick - NOMINAL_TICK) as f64 * ppm_per_tick + tx.freq as f64 / 65536.0;
    Ok(ppm * 1e-6)
}

/// Arms a leap second at the next UTC midnight (STA_INS / STA_DEL), or
/// disarms it; the other status bits are kept.
pub(super) fn set_leap(insert: bool, delete: bool) -> io::Result<()> {
    let mut tx = zeroed_timex();
    adjtime(&mut tx)?;
    let mut set = zeroed_timex();
    set.modes = libc::ADJ_STATUS;
    set.status = tx.status & !(libc::STA_INS | libc::STA_DEL);
    if insert {
        set.status |= libc::STA_INS;
    } else if delete {
        set.status |= libc::STA_DEL;
    }
    adjtime(&mut set)
}

/// Clears STA_UNSYNC and sets the error bounds (`Some`, seconds), or sets
/// STA_UNSYNC (`None`).
pub(super) fn set_synchronized(max_error: Option<f64>) -> io::Result<()> {
    let mut tx = zeroed_timex();
    adjtime(&mut tx)?;
    let mut set = zeroed_timex();
    set.modes = libc::ADJ_STATUS;
    match max_error {
        Some(bound) => {
            set.modes |= libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
            set.status = tx.status & !libc::STA_UNSYNC;
            let micros = (bound * 1e6).clamp(0.0, 16e6) as _;
            set.maxerror = micros;
            set.esterror = micros;
        }
        None => set.status = tx.status | libc::STA_UNSYNC,
    }
    adjtime(&mut set)
}

pub(super) fn step(offset: f64) -> io::Result<()> {
    let (secs, nanos) = split_offset(offset);
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    tx.time.tv_sec = secs as _;
    tx.time.tv_usec = nanos as _;
    adjtime(&mut tx)
}
