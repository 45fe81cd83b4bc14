//! Combining the truechimers into one offset and frequency estimate:
//! offsets weighted by the inverse square of root distance, slopes by the
//! inverse square of their standard error (sources with a tighter bound or
//! a better-determined frequency count for more).

use super::units::{Frequency, Seconds};

/// A truechimer's current estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub index: usize,
    /// Offset (server minus local) now.
    pub offset: Seconds,
    /// Root distance (> 0).
    pub distance: Seconds,
    /// Slope of the natural offset, if known.
    pub slope: Option<Frequency>,
    /// Standard error of the slope.
    pub slope_sd: Frequency,
    /// Standard error of the offset.
    pub offset_sd: Seconds,
}

/// The combined estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Combined {
    pub offset: Seconds,
    pub slope: Option<Frequency>,
    pub slope_sd: Frequency,
    pub offset_sd: Seconds,
}

pub fn combine(candidates: &[Candidate]) -> Option<Combined> {
    if candidates.is_empty() {
        return None;
    }
    let (mut sw, mut so, mut svar) = (0.0, 0.0, 0.0);
    for c in candidates {
        let w = 1.0 / c.distance.get().max(1e-9).powi(2);
        let offset_sd = c.offset_sd.get();
        sw += w;
        so += w * c.offset.get();
        svar += w * w * offset_sd * offset_sd;
    }
    let (mut fw, mut fs) = (0.0, 0.0);
    for c in candidates {
        if let Some(slope) = c.slope {
            let w = 1.0 / c.slope_sd.fraction().max(1e-12).powi(2);
            fw += w;
            fs += w * slope.fraction();
        }
    }
    Some(Combined {
        offset: Seconds::new(so / sw),
        slope: (fw > 0.0).then(|| Frequency::from_fraction(fs / fw)),
        slope_sd: Frequency::from_fraction(if fw > 0.0 {
            (1.0 / fw).sqrt()
        } else {
            f64::INFINITY
        }),
        offset_sd: Seconds::new(svar.sqrt() / sw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, offset: f64, distance: f64, slope: Option<f64>, slope_sd: f64) -> Candidate {
        Candidate {
            index,
            offset: Seconds::new(offset),
            distance: Seconds::new(distance),
            slope: slope.map(Frequency::from_fraction),
            slope_sd: Frequency::from_fraction(slope_sd),
            offset_sd: Seconds::new(distance / 10.0),
        }
    }

    #[test]
    fn weights_by_distance_and_slope_error() {
        let r = combine(&[
            c(0, 0.010, 0.001, Some(1e-6), 1e-7),
            c(1, 0.020, 0.002, Some(3e-6), 1e-6),
        ])
        .expect("combined");
        // Weights 1/1e-6 and 1/4e-6: (0.010*4 + 0.020*1)/5 = 0.012.
        assert!(
            (r.offset.get() - 0.012).abs() < 1e-12,
            "offset {}",
            r.offset
        );
        let slope = r.slope.expect("slope").fraction();
        // Weights 1e14 and 1e12: dominated by the better source.
        assert!((slope - (1e-6 * 100.0 + 3e-6) / 101.0).abs() < 1e-12);
    }

    #[test]
    fn slope_unknown_when_no_source_has_one() {
        let r = combine(&[c(0, 0.0, 0.01, None, 1.0)]).expect("combined");
        assert!(r.slope.is_none());
        assert!(combine(&[]).is_none());
    }
}
