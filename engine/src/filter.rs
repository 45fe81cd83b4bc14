//! Per-source sample filter: a weighted linear regression of the source's
//! offset over time (in the spirit of chrony's sourcestats), which gives the
//! source's offset now, the clock's frequency error seen through it, and
//! their uncertainties.
//!
//! Samples are stored as *natural* offsets (`u = measured offset + total
//! correction the engine had applied by then`), so the engine's own steps
//! and slews never invalidate them: `u` follows the free-running clock,
//! a straight line plus wander. Samples with a long round trip (queueing)
//! are down-weighted; a runs test on the residuals drops old samples when
//! the line no longer fits (frequency wander).

use std::collections::VecDeque;

use super::units::{EngineInstant, Frequency, Seconds};

/// Samples kept per source.
pub const MAX_SAMPLES: usize = 64;
/// Fewest samples the runs test will cut the window down to.
const MIN_WINDOW: usize = 6;
/// Fewest samples (and their span, s) before a slope is trusted.
const MIN_SLOPE_SAMPLES: usize = 3;
const MIN_SLOPE_SPAN: f64 = 4.0;
/// The offset error assumed for a sample without queueing delay (timestamp
/// noise, path jitter): 10 us, the order seen on a LAN and in UML.
const SAMPLE_NOISE_FLOOR: f64 = 10e-6;

/// One accepted measurement, in the natural frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Engine instant of the measurement.
    pub time: EngineInstant,
    /// Natural offset: measured offset plus the correction applied so far.
    pub natural_offset: Seconds,
    /// Round-trip delay.
    pub delay: Seconds,
}

/// What the regression says about a source at a given instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Natural offset predicted for the instant asked about.
    pub natural_offset: Seconds,
    /// Slope of the natural offset (a frequency), if enough samples to
    /// trust one.
    pub slope: Option<Frequency>,
    /// Standard error of `natural_offset`.
    pub offset_sd: Seconds,
    /// Standard error of the slope (chrony's "skew").
    pub slope_sd: Frequency,
    /// Residual standard deviation of the samples used ("jitter").
    pub jitter: Seconds,
    /// Smallest delay among the samples used.
    pub min_delay: Seconds,
    /// Samples used after the runs test.
    pub samples_used: usize,
}

/// The samples of one source.
#[derive(Clone, Debug, Default)]
pub struct SampleFilter {
    samples: VecDeque<Sample>,
}

impl SampleFilter {
    pub fn new() -> SampleFilter {
        SampleFilter {
            samples: VecDeque::with_capacity(MAX_SAMPLES),
        }
    }

    pub fn add(&mut self, sample: Sample) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Seconds from the oldest sample kept to the newest (0 without two).
    pub fn span(&self) -> Seconds {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) => b.time - a.time,
            _ => Seconds::ZERO,
        }
    }

    /// The estimate at instant `at`. `default_slope` is used when there are
    /// too few samples for a slope of their own (the engine passes its
    /// current frequency estimate).
    pub fn estimate(&self, at: EngineInstant, default_slope: Frequency) -> Option<Estimate> {
        let (at, default_slope) = (at.as_secs(), default_slope.fraction());
        let n = self.samples.len();
        let last = *self.samples.back()?;
        let min_delay = self
            .samples
            .iter()
            .map(|s| s.delay.get())
            .fold(f64::INFINITY, f64::min);
        if n < MIN_SLOPE_SAMPLES || (last.time - self.samples[0].time).get() < MIN_SLOPE_SPAN {
            return Some(self.estimate_without_slope(at, default_slope, min_delay));
        }
        // Try the whole window, then drop the oldest samples until the
        // residuals pass the runs test (a straight line fits).
        let mut start = 0;
        let mut fit = regress(self.samples.range(start..), min_delay)?;
        while n - start > MIN_WINDOW && !fit.passes_runs_test() {
            start += ((n - start) / 4).max(1);
            if n - start < MIN_WINDOW {
                start = n - MIN_WINDOW;
            }
            fit = regress(self.samples.range(start..), min_delay)?;
        }
        let dt = at - fit.mean_time;
        let offset_sd = (fit.intercept_var + dt * dt * fit.slope_var).sqrt();
        Some(Estimate {
            natural_offset: Seconds::new(fit.intercept + fit.slope * dt),
            slope: Some(Frequency::from_fraction(fit.slope)),
            offset_sd: Seconds::new(offset_sd),
            slope_sd: Frequency::from_fraction(fit.slope_var.sqrt()),
            jitter: Seconds::new(fit.residual_sd),
            min_delay: Seconds::new(fit.min_delay),
            samples_used: n - start,
        })
    }

    /// With one or two samples: the lowest-delay sample, carried forward
    /// with the default slope.
    fn estimate_without_slope(&self, at: f64, default_slope: f64, min_delay: f64) -> Estimate {
        let best = self
            .samples
            .iter()
            .min_by(|a, b| a.delay.total_cmp(&b.delay))
            .copied()
            .unwrap_or(Sample {
                time: EngineInstant::from_secs(at),
                natural_offset: Seconds::ZERO,
                delay: Seconds::new(min_delay),
            });
        let (best_offset, best_delay) = (best.natural_offset.get(), best.delay.get());
        let spread = self
            .samples
            .iter()
            .map(|s| (s.natural_offset.get() - best_offset).abs())
            .fold(0.0, f64::max);
        Estimate {
            natural_offset: Seconds::new(best_offset + default_slope * (at - best.time.as_secs())),
            slope: None,
            offset_sd: Seconds::new(best_delay / 2.0 + spread),
            slope_sd: Frequency::from_fraction(1e-4),
            jitter: Seconds::new(spread),
            min_delay: Seconds::new(min_delay),
            samples_used: self.samples.len(),
        }
    }
}

struct Fit {
    mean_time: f64,
    intercept: f64,
    slope: f64,
    intercept_var: f64,
    slope_var: f64,
    residual_sd: f64,
    min_delay: f64,
    residual_signs: Vec<bool>,
}

impl Fit {
    /// Wald-Wolfowitz runs test: too few sign runs in the residuals means
    /// they are not noise around a line (the clock wandered).
    fn passes_runs_test(&self) -> bool {
        let n = self.residual_signs.len();
        let pos = self.residual_signs.iter().filter(|&&s| s).count() as f64;
        let neg = n as f64 - pos;
        if pos == 0.0 || neg == 0.0 {
            // Residuals all of one sign happen only for an exact fit.
            return true;
        }
        let runs = 1 + self
            .residual_signs
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        let nf = n as f64;
        let mean = 2.0 * pos * neg / nf + 1.0;
        let var = (mean - 1.0) * (mean - 2.0) / (nf - 1.0);
        (runs as f64) >= mean - 2.5 * var.max(0.0).sqrt()
    }
}

/// Weighted least squares of natural offset against time. A sample's
/// weight falls with the square of its excess delay over the window's
/// minimum: half the excess bounds the error that queueing adds to its offset.
fn regress<'a>(samples: impl Iterator<Item = &'a Sample> + Clone, min_delay: f64) -> Option<Fit> {
    let mut excess: Vec<f64> = samples
        .clone()
        .map(|s| (s.delay.get() - min_delay) / 2.0)
        .collect();
    let n = excess.len();
    if n < 2 {
        return None;
    }
    let mut sorted = excess.clone();
    sorted.sort_by(f64::total_cmp);
    // The scale is a low quantile of the excess delays: with exponential
    // queueing, a sample's offset error is at most half its excess delay,
    // so the few least-queued samples deserve most of the weight (the 1/8
    // quantile measured best across 10 us .. 10 ms jitter in the benchmark).
    //
    // Weights are 1 / (1 + (excess / scale)^2) = scale^2 / sigma_i^2 with
    // sigma_i^2 = scale^2 + excess^2: a sample of weight 1 has an error of
    // `scale`. The scale has a floor (the noise of even the best sample),
    // or, with fewer than 8 samples (the 1/8 quantile is then the best
    // sample's own excess, 0), the other samples' weights collapse and a
    // slope through them looked far more certain than it was.
    //
    // With few samples the 1/8 quantile is the best or second-best excess
    // alone, and on a busy path the window's least-queued sample is itself
    // queued: the slope then ran through two samples a few seconds apart
    // whose offsets differed by their queueing (-90 ppm on a 3 ppm clock in
    // the simulation at 600 us jitter; the clock ran 2-3 ms off before the
    // next poll, as on the loaded UML CI host). A fifth of the median
    // excess is the same quantile for exponential queueing (0.139 vs 0.134
    // of the mean) but does not collapse with few samples.
    let scale = sorted[n / 8]
        .max(0.2 * sorted[n / 2])
        .max(SAMPLE_NOISE_FLOOR);
    for e in excess.iter_mut() {
        *e = 1.0 / (1.0 + (*e / scale).powi(2));
    }
    let weights = excess;
    let sw: f64 = weights.iter().sum();
    let mean_time = samples
        .clone()
        .zip(&weights)
        .map(|(s, w)| w * s.time.as_secs())
        .sum::<f64>()
        / sw;
    let mean_u = samples
        .clone()
        .zip(&weights)
        .map(|(s, w)| w * s.natural_offset.get())
        .sum::<f64>()
        / sw;
    let mut stt = 0.0;
    let mut stu = 0.0;
    for (s, w) in samples.clone().zip(&weights) {
        let dt = s.time.as_secs() - mean_time;
        stt += w * dt * dt;
        stu += w * dt * (s.natural_offset.get() - mean_u);
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = stu / stt;
    let mut ssr = 0.0;
    let mut signs = Vec::with_capacity(n);
    let mut min_d = f64::INFINITY;
    for (s, w) in samples.zip(&weights) {
        let r = s.natural_offset.get() - (mean_u + slope * (s.time.as_secs() - mean_time));
        ssr += w * r * r;
        signs.push(r >= 0.0);
        min_d = min_d.min(s.delay.get());
    }
    let dof = (n as f64 - 2.0).max(1.0);
    // Weighted residual variance per unit weight, at least what the weights
    // assume (scale^2): residuals of 3 or 4 samples may fit a line by
    // chance, and a queued sample's error is known from its delay.
    let sigma2 = (ssr / dof).max(scale * scale);
    let mean_w = sw / n as f64;
    Some(Fit {
        mean_time,
        intercept: mean_u,
        slope,
        intercept_var: sigma2 / sw,
        slope_var: sigma2 / stt,
        residual_sd: (sigma2 / mean_w).sqrt(),
        min_delay: min_d,
        residual_signs: signs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, natural_offset: f64, delay: f64) -> Sample {
        Sample {
            time: EngineInstant::from_secs(time),
            natural_offset: Seconds::new(natural_offset),
            delay: Seconds::new(delay),
        }
    }

    fn estimate(f: &SampleFilter, at: f64, default_slope: f64) -> Option<Estimate> {
        f.estimate(
            EngineInstant::from_secs(at),
            Frequency::from_fraction(default_slope),
        )
    }

    fn line(n: usize, slope: f64, noise: impl Fn(usize) -> f64) -> SampleFilter {
        let mut f = SampleFilter::new();
        for i in 0..n {
            let t = i as f64 * 16.0;
            f.add(sample(t, 0.01 + slope * t + noise(i), 0.001));
        }
        f
    }

    #[test]
    fn recovers_slope_and_offset_of_a_noisy_line() {
        // Deterministic +-50 us alternating noise.
        let f = line(32, -100e-6, |i| if i % 2 == 0 { 50e-6 } else { -50e-6 });
        let at = 31.0 * 16.0 + 10.0;
        let e = estimate(&f, at, 0.0).expect("estimate");
        let slope = e.slope.expect("slope").fraction();
        assert!((slope + 100e-6).abs() < 1e-6, "slope {slope}");
        assert!(
            (e.natural_offset.get() - (0.01 - 100e-6 * at)).abs() < 30e-6,
            "offset {}",
            e.natural_offset
        );
        let jitter = e.jitter.get();
        assert!(jitter > 20e-6 && jitter < 80e-6, "jitter {jitter}");
        assert_eq!(e.samples_used, 32);
    }

    #[test]
    fn one_sample_uses_default_slope() {
        let mut f = SampleFilter::new();
        f.add(sample(10.0, 0.5, 0.002));
        let e = estimate(&f, 20.0, 1e-5).expect("estimate");
        assert!(e.slope.is_none());
        assert!((e.natural_offset.get() - (0.5 + 1e-4)).abs() < 1e-12);
    }

    #[test]
    fn high_delay_samples_are_down_weighted() {
        let mut f = SampleFilter::new();
        for i in 0..20 {
            let t = i as f64 * 16.0;
            // Every third sample waited 10 ms in a queue on the way back,
            // which biases its offset by -5 ms.
            let (delay, bias) = if i % 3 == 0 {
                (0.011, -0.005)
            } else {
                (0.001, 0.0)
            };
            f.add(sample(t, bias, delay));
        }
        let e = estimate(&f, 19.0 * 16.0, 0.0).expect("estimate");
        assert!(
            e.natural_offset.get().abs() < 1e-4,
            "queued samples leaked into the estimate: {}",
            e.natural_offset
        );
    }

    #[test]
    fn runs_test_drops_samples_from_before_a_frequency_change() {
        let mut f = SampleFilter::new();
        for i in 0..48 {
            let t = i as f64 * 16.0;
            // Frequency changes from 0 to +50 ppm half-way through.
            let u = if i < 24 {
                0.0
            } else {
                50e-6 * (t - 24.0 * 16.0)
            };
            let noise = if i % 2 == 0 { 5e-6 } else { -5e-6 };
            f.add(sample(t, u + noise, 0.001));
        }
        let e = estimate(&f, 47.0 * 16.0, 0.0).expect("estimate");
        assert!(e.samples_used < 48, "kept the stale samples");
        let slope = e.slope.expect("slope").fraction();
        assert!((slope - 50e-6).abs() < 5e-6, "slope {slope}");
    }

    #[test]
    fn window_is_bounded() {
        let f = line(MAX_SAMPLES + 10, 0.0, |_| 0.0);
        assert_eq!(f.len(), MAX_SAMPLES);
    }

    /// The samples of the UML bench's +0.5 s run that set a 91 ppm
    /// frequency on a clock without frequency error: the burst's first
    /// exchange waited for ARP (1.6 ms round trip, its offset 0.6 ms off),
    /// the second queued for 63 ms, only the third was clean. Whatever
    /// slope the regression draws through them, its standard error must
    /// cover the truth (0) — before the fix it claimed 91 +- 3 ppm.
    #[test]
    fn a_slope_through_queued_samples_is_not_trusted() {
        let mut f = SampleFilter::new();
        for (time, bias, delay) in [
            (0.0, -0.6e-3, 1.6e-3),
            (2.0, 20e-3, 62.7e-3),
            (3.7, 0.01e-3, 0.22e-3),
            (5.5, 0.17e-3, 0.9e-3),
        ] {
            f.add(sample(time, 0.5 + bias, delay));
        }
        let e = estimate(&f, 5.5, 0.0).expect("estimate");
        let slope = e
            .slope
            .expect("4 samples over 5.5 s give a slope")
            .fraction();
        assert!(
            slope.abs() <= 2.0 * e.slope_sd.fraction(),
            "slope {:.1} ppm claimed +- {:.1} ppm",
            slope * 1e6,
            e.slope_sd.ppm()
        );
    }
}
