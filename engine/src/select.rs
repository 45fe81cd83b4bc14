//! Source selection (RFC 5905 section 11.2.1, Marzullo's algorithm): every
//! candidate's correctness interval is `offset ± root distance`; the
//! largest region where a majority of intervals overlap defines the
//! truechimers, and a source whose interval misses it is a falseticker.

use super::units::Seconds;

/// One usable source offered to selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Caller's index of the source.
    pub index: usize,
    /// Offset (server minus local).
    pub offset: Seconds,
    /// Root distance: half-width of the correctness interval.
    pub distance: Seconds,
}

/// Result of selection.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Indices of sources whose interval meets the majority region.
    pub truechimers: Vec<usize>,
    /// Indices of sources rejected as falsetickers.
    pub falsetickers: Vec<usize>,
    /// The majority region.
    pub low: Seconds,
    pub high: Seconds,
}

/// Finds the truechimers, or None when no majority agrees (then nothing
/// may discipline the clock: two groups that disagree cannot be told apart).
pub fn select(candidates: &[Interval]) -> Option<Selection> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    // Endpoints: -1 opens an interval, +1 closes it.
    let mut edges: Vec<(f64, i32)> = Vec::with_capacity(2 * n);
    for c in candidates {
        let (offset, distance) = (c.offset.get(), c.distance.get());
        edges.push((offset - distance, -1));
        edges.push((offset + distance, 1));
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let n_i = n as i32;
    let mut allow = 0i32;
    while 2 * allow < n_i {
        let mut chime = 0;
        let mut low = f64::INFINITY;
        for &(v, kind) in &edges {
            chime -= kind;
            if chime >= n_i - allow {
                low = v;
                break;
            }
        }
        chime = 0;
        let mut high = f64::NEG_INFINITY;
        for &(v, kind) in edges.iter().rev() {
            chime += kind;
            if chime >= n_i - allow {
                high = v;
                break;
            }
        }
        if low <= high {
            let (mut truechimers, mut falsetickers) = (Vec::new(), Vec::new());
            for c in candidates {
                let (offset, distance) = (c.offset.get(), c.distance.get());
                if offset - distance <= high && offset + distance >= low {
                    truechimers.push(c.index);
                } else {
                    falsetickers.push(c.index);
                }
            }
            return Some(Selection {
                truechimers,
                falsetickers,
                low: Seconds::new(low),
                high: Seconds::new(high),
            });
        }
        allow += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(index: usize, offset: f64, distance: f64) -> Interval {
        Interval {
            index,
            offset: Seconds::new(offset),
            distance: Seconds::new(distance),
        }
    }

    #[test]
    fn agreeing_sources_are_all_truechimers() {
        let s =
            select(&[iv(0, 0.001, 0.01), iv(1, -0.002, 0.01), iv(2, 0.0, 0.02)]).expect("majority");
        assert_eq!(s.truechimers, vec![0, 1, 2]);
        assert!(s.falsetickers.is_empty());
    }

    #[test]
    fn one_falseticker_among_four_is_rejected() {
        let s = select(&[
            iv(0, 0.0001, 0.005),
            iv(1, 0.5, 0.005),
            iv(2, -0.0002, 0.005),
            iv(3, 0.0, 0.004),
        ])
        .expect("majority");
        assert_eq!(s.truechimers, vec![0, 2, 3]);
        assert_eq!(s.falsetickers, vec![1]);
        assert!(s.low.get() <= 0.0 && s.high.get() >= 0.0);
    }

    #[test]
    fn wide_interval_with_centre_outside_the_intersection_is_a_truechimer() {
        // Seen for real against three chronyd on loopback plus a falseticker.
        let s = select(&[
            iv(0, 13.5e-6, 79e-6),
            iv(1, 0.7e-6, 10.4e-6),
            iv(2, 0.4e-6, 15.4e-6),
            iv(3, 0.100, 0.005),
        ])
        .expect("majority");
        assert_eq!(s.truechimers, vec![0, 1, 2]);
        assert_eq!(s.falsetickers, vec![3]);
    }

    #[test]
    fn two_against_two_has_no_majority() {
        assert!(
            select(&[
                iv(0, 0.0, 0.001),
                iv(1, 0.0, 0.001),
                iv(2, 1.0, 0.001),
                iv(3, 1.0, 0.001)
            ])
            .is_none()
        );
    }

    #[test]
    fn two_disagreeing_sources_have_no_majority_but_one_source_is_its_own() {
        assert!(select(&[iv(0, 0.0, 0.001), iv(1, 1.0, 0.001)]).is_none());
        let s = select(&[iv(7, 0.3, 0.001)]).expect("single source");
        assert_eq!(s.truechimers, vec![7]);
        assert!(select(&[]).is_none());
    }
}
