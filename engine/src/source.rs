//! One NTP source (a server we poll): its poll state machine (iburst, poll
//! adaptation between minpoll and maxpoll, the 8-bit reach register), the
//! request it has outstanding, kiss-o'-death handling, and its samples.
//!
//! Sans-IO: the caller tells it the time and hands it the bytes it received;
//! it says when it wants to poll and what to send.

use super::filter::{Estimate, Sample, SampleFilter};
use super::proto::{
    KissCode, Leap, Measurement, NtpTimestamp, Packet, PendingRequest, Reject, check_reply,
};
use super::units::{EngineInstant, Frequency, PollExponent, Seconds};

/// Interval between the requests of an initial burst (RFC 5905: 2 s).
pub const BURST_INTERVAL: f64 = 2.0;
/// Requests in an initial burst (chrony sends 4).
pub const BURST_COUNT: u8 = 4;
/// Extra requests, one at a time at the burst interval, while the engine's
/// frequency is still uncertain after a burst (see `poll_soon_while_settling`).
/// Four were too few on a busy path: the frequency left after them was
/// still tens of ppm off, and the clock ran milliseconds away before the
/// next regular poll (the simulation at 600 us jitter, 16 s polls: worst of
/// 40 seeds 3.1 ms with 4, 0.65 ms with 12). With 12 the first 30 s send at
/// most 16 requests, 2 s apart, to each selected source.
pub const SETTLE_POLLS: u8 = 12;
/// Poll adaptation: a good sample adds the poll exponent to a counter, a bad
/// one subtracts twice that; crossing +-LIMIT moves the poll (as in ntpd).
const POLL_ADJUST_LIMIT: i32 = 30;
/// A sample is "good" when within this many jitters of the prediction.
const POLL_GATE: f64 = 4.0;
/// A sample further than this from the source's line (and than ten times
/// its jitter, and its own round trip) is held back as a suspect: a single
/// one is a spike and is dropped; two in a row that agree mean the source's
/// time really moved (a server stepped), and the line restarts from them
/// instead of bending through the jump for a whole window.
const SUSPECT_MIN: f64 = 0.010;

/// Lowest and highest poll exponents accepted anywhere (chrony's range is
/// -6..24; below -4 is pointless over a real network, above 17 is 36 h):
/// `PollExponent`'s range, as bare numbers for the config file's checks.
pub const MIN_POLL: i8 = PollExponent::MIN.get();
pub const MAX_POLL: i8 = PollExponent::MAX.get();

/// Per-source settings for the algorithm.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSettings {
    pub minpoll: PollExponent,
    pub maxpoll: PollExponent,
    pub iburst: bool,
    pub prefer: bool,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            minpoll: PollExponent::saturating(6),
            maxpoll: PollExponent::saturating(10),
            iburst: true,
            prefer: false,
        }
    }
}

/// Why a source is out of use for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The server sent DENY or RSTR.
    Kissed(KissCode),
    /// Replaced by another address of its pool.
    Retired,
}

/// What the server said about itself in its last good reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerInfo {
    pub stratum: u8,
    pub leap: Leap,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub reference_id: [u8; 4],
}

/// Outcome of handing a reply to a source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplyOutcome {
    /// A new sample was stored.
    Sample(Measurement),
    /// The reply was not used, and why.
    Rejected(Reject),
}

#[derive(Clone, Debug)]
pub struct Source {
    pub settings: SourceSettings,
    poll: PollExponent,
    reach: u8,
    next_poll: f64,
    burst_left: u8,
    settle_polls_left: u8,
    pending: Option<PendingRequest>,
    last_server_transmit: Option<NtpTimestamp>,
    poll_counter: i32,
    polls_sent: u64,
    stopped: Option<Stopped>,
    server: Option<ServerInfo>,
    filter: SampleFilter,
    /// Samples held back as too far from the line (see SUSPECT_MIN).
    suspects: Vec<Sample>,
    last_measurement: Option<(f64, Measurement)>,
    last_reject: Option<Reject>,
}

impl Source {
    /// A source that polls for the first time at `now`.
    pub fn new(settings: SourceSettings, now: f64) -> Source {
        let minpoll = settings.minpoll;
        let maxpoll = settings.maxpoll.max(minpoll);
        let settings = SourceSettings {
            minpoll,
            maxpoll,
            ..settings
        };
        Source {
            poll: minpoll,
            reach: 0,
            next_poll: now,
            burst_left: if settings.iburst { BURST_COUNT } else { 0 },
            settle_polls_left: if settings.iburst { SETTLE_POLLS } else { 0 },
            settings,
            pending: None,
            last_server_transmit: None,
            poll_counter: 0,
            polls_sent: 0,
            stopped: None,
            server: None,
            filter: SampleFilter::new(),
            suspects: Vec::new(),
            last_measurement: None,
            last_reject: None,
        }
    }

    pub fn poll_exponent(&self) -> PollExponent {
        self.poll
    }

    /// Seconds between regular polls.
    pub fn poll_interval(&self) -> f64 {
        self.poll.interval().get()
    }

    pub fn reach(&self) -> u8 {
        self.reach
    }

    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }

    pub fn server_info(&self) -> Option<ServerInfo> {
        self.server
    }

    pub fn last_measurement(&self) -> Option<(f64, Measurement)> {
        self.last_measurement
    }

    pub fn last_reject(&self) -> Option<Reject> {
        self.last_reject
    }

    pub fn polls_sent(&self) -> u64 {
        self.polls_sent
    }

    pub fn sample_count(&self) -> usize {
        self.filter.len()
    }

    /// The time spanned by the samples kept.
    pub fn sample_span(&self) -> Seconds {
        self.filter.span()
    }

    pub fn last_sample_time(&self) -> Option<EngineInstant> {
        self.filter.last().map(|s| s.time)
    }

    /// When the source next wants to send (None once stopped).
    pub fn next_poll(&self) -> Option<f64> {
        self.stopped.is_none().then_some(self.next_poll)
    }

    /// Builds the request for a poll at `now`: `nonce` is a fresh random
    /// transmit timestamp and `sent_local` our clock reading as it leaves.
    /// Shifts the reach register and schedules the next poll.
    pub fn start_poll(
        &mut self,
        now: f64,
        nonce: NtpTimestamp,
        sent_local: NtpTimestamp,
    ) -> [u8; 48] {
        self.reach <<= 1;
        self.polls_sent += 1;
        if self.reach == 0 && self.pending.is_some() && self.burst_left == 0 {
            // Eight polls without an answer: poll less often (RFC 5905
            // backs off from unreachable servers) and burst again if allowed.
            self.poll = PollExponent::saturating(self.poll.get() + 1).min(self.settings.maxpoll);
            if self.settings.iburst {
                self.burst_left = BURST_COUNT;
            }
        }
        self.pending = Some(PendingRequest { nonce, sent_local });
        if self.burst_left > 0 {
            self.burst_left -= 1;
        }
        let interval = if self.burst_left > 0 {
            BURST_INTERVAL.min(self.poll_interval())
        } else {
            self.poll_interval()
        };
        self.next_poll = now + interval;
        Packet::client_request(nonce, self.poll.get()).encode()
    }

    /// Records when the request with `nonce` really left (the I/O task reads
    /// the clock just before sending, later than `start_poll` ran).
    pub fn set_sent_local(&mut self, nonce: NtpTimestamp, sent_local: NtpTimestamp) {
        if let Some(p) = self.pending.as_mut()
            && p.nonce == nonce
        {
            p.sent_local = sent_local;
        }
    }

    /// Handles a reply processed at `now` (our clock read `received_local`
    /// when it arrived, `received_age` seconds before now).
    /// `correction_at(t)` is the clock's total correction at engine instant
    /// `t` (stored samples are kept in the natural frame), and
    /// `default_slope` the engine's frequency estimate in that frame.
    ///
    /// The offset is measured at the middle of the exchange, half a round
    /// trip before the reply arrived: the sample is placed there, with the
    /// correction of that instant (during a fast slew the correction moves
    /// 83 µs per millisecond).
    pub fn handle_reply(
        &mut self,
        now: f64,
        packet: &Packet,
        received_local: NtpTimestamp,
        received_age: f64,
        correction_at: &dyn Fn(f64) -> f64,
        default_slope: f64,
    ) -> ReplyOutcome {
        if self.stopped.is_some() {
            return ReplyOutcome::Rejected(Reject::Unsolicited);
        }
        let result = check_reply(
            packet,
            self.pending.as_ref(),
            self.last_server_transmit,
            received_local,
        );
        let m = match result {
            Ok(m) => m,
            Err(reject) => {
                self.last_reject = Some(reject);
                if let Reject::Kiss(code) = reject {
                    // The origin matched, so the kiss is from our server.
                    self.pending = None;
                    match code {
                        KissCode::Rate => {
                            self.burst_left = 0;
                            self.poll =
                                PollExponent::saturating((self.poll.get() + 1).max(packet.poll))
                                    .clamp(self.settings.minpoll, self.settings.maxpoll);
                            self.next_poll = self.next_poll.max(now + self.poll_interval());
                        }
                        KissCode::Deny | KissCode::Restricted => {
                            self.stopped = Some(Stopped::Kissed(code));
                        }
                        KissCode::Other(_) => {}
                    }
                }
                return ReplyOutcome::Rejected(reject);
            }
        };
        self.pending = None;
        self.last_server_transmit = Some(m.server_transmit);
        self.reach |= 1;
        self.last_reject = None;
        let measured_at = now - received_age - m.delay / 2.0;
        let natural_offset = m.offset + correction_at(measured_at);
        let sample = Sample {
            time: EngineInstant::from_secs(measured_at),
            natural_offset: Seconds::new(natural_offset),
            delay: Seconds::new(m.delay),
        };
        let prior = self.filter.estimate(
            EngineInstant::from_secs(measured_at),
            Frequency::from_fraction(default_slope),
        );
        match prior {
            Some(prior) => {
                let residual = (natural_offset - prior.natural_offset.get()).abs();
                let jitter = prior.jitter.get();
                let gate = POLL_GATE * jitter.max(m.delay / 4.0).max(1e-6);
                self.adapt_poll(now, residual < gate);
                let limit = SUSPECT_MIN
                    .max(10.0 * jitter)
                    .max(m.delay)
                    .max(3.0 * prior.offset_sd.get());
                if residual > limit {
                    let slope = prior.slope.map_or(default_slope, Frequency::fraction);
                    self.hold_suspect(sample, slope, limit);
                } else {
                    self.suspects.clear();
                    self.filter.add(sample);
                }
            }
            None => self.filter.add(sample),
        }
        self.server = Some(ServerInfo {
            stratum: m.stratum,
            leap: m.leap,
            root_delay: m.root_delay,
            root_dispersion: m.root_dispersion,
            reference_id: m.reference_id,
        });
        self.last_measurement = Some((now, m));
        ReplyOutcome::Sample(m)
    }

    fn adapt_poll(&mut self, now: f64, good: bool) {
        let p = i32::from(self.poll.get().max(1));
        if good {
            // A good sample counts towards a longer poll in proportion to the
            // time it covers since the previous one: burst and settling
            // polls, seconds apart, are not a poll interval of good behaviour
            // each. (Counted whole, the ~16 samples of a start-up burst took
            // the shipped default from poll 6 to 9 within 30 s, on a
            // frequency known only to ~10 ppm, which then ran 512 s
            // unchecked: 3 ms off in a UML test-host run.)
            let covered = self.last_measurement.map_or(1.0, |(t, _)| {
                ((now - t) / self.poll_interval()).clamp(0.0, 1.0)
            });
            self.poll_counter += (f64::from(p) * covered).round() as i32;
            if self.poll_counter > POLL_ADJUST_LIMIT {
                self.poll_counter = 0;
                if self.poll < self.settings.maxpoll {
                    self.poll = PollExponent::saturating(self.poll.get() + 1);
                }
            }
        } else {
            self.poll_counter -= 2 * p;
            if self.poll_counter < -POLL_ADJUST_LIMIT {
                self.poll_counter = 0;
                if self.poll > self.settings.minpoll {
                    self.poll = PollExponent::saturating(self.poll.get() - 1);
                    self.next_poll = self.next_poll.min(now + self.poll_interval());
                }
            }
        }
    }

    /// The source's estimate at `now`, if it has samples and is usable.
    pub fn estimate(&self, now: EngineInstant, default_slope: Frequency) -> Option<Estimate> {
        if self.stopped.is_some() || self.reach == 0 {
            return None;
        }
        self.filter.estimate(now, default_slope)
    }

    /// Drops the outstanding request: after a step its T1 is on the other
    /// side of the jump, so its reply would give a bogus sample.
    pub fn forget_pending(&mut self) {
        self.pending = None;
    }

    /// A sample far from the line: kept aside; two that agree replace the
    /// line (the source's time moved), one alone is forgotten by the next
    /// good sample.
    fn hold_suspect(&mut self, sample: Sample, slope: f64, limit: f64) {
        if let Some(last) = self.suspects.last() {
            let predicted = last.natural_offset.get() + slope * (sample.time - last.time).get();
            if (sample.natural_offset.get() - predicted).abs() > limit {
                self.suspects.clear();
            }
        }
        self.suspects.push(sample);
        if self.suspects.len() >= 2 {
            self.filter.clear();
            for s in self.suspects.drain(..) {
                self.filter.add(s);
            }
        }
    }

    /// Whether this source is of no more use: refused us, or unreachable
    /// for a whole reach register (eight polls) after at least eight tries.
    pub fn is_dead(&self) -> bool {
        match self.stopped {
            Some(_) => true,
            None => self.reach == 0 && self.polls_sent >= 8,
        }
    }

    /// Stops polling this source for good (its pool replaced it).
    pub fn retire(&mut self) {
        self.stopped = Some(Stopped::Retired);
        self.pending = None;
    }

    /// Polls again soon, in a short burst (after a step, whose estimate
    /// needs confirming by measurements taken after it).
    pub fn burst_soon(&mut self, now: f64) {
        if self.stopped.is_some() {
            return;
        }
        self.burst_left = BURST_COUNT;
        self.settle_polls_left = SETTLE_POLLS;
        self.next_poll = self.next_poll.min(now + BURST_INTERVAL);
    }

    /// After a burst, while the engine's frequency estimate is still
    /// uncertain (the burst's few samples were taken during a fast slew, or
    /// the first one waited for ARP), polls once more at the burst interval
    /// instead of a whole poll interval later: the clock would run on the
    /// uncertain frequency until then. At most SETTLE_POLLS times per burst.
    pub fn poll_soon_while_settling(&mut self, now: f64) {
        if self.stopped.is_some() || self.burst_left > 0 || self.settle_polls_left == 0 {
            return;
        }
        if self.next_poll > now + BURST_INTERVAL {
            self.settle_polls_left -= 1;
            self.next_poll = now + BURST_INTERVAL;
        }
    }

    /// Forgets all samples (e.g. after a step when not in the natural frame).
    pub fn clear_samples(&mut self) {
        self.filter.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Mode, seconds_to_short};

    fn reply(nonce: NtpTimestamp, t2: NtpTimestamp, poll: i8) -> Packet {
        Packet {
            leap: Leap::NoWarning,
            version: 4,
            mode: Mode::Server,
            stratum: 1,
            poll,
            precision: -20,
            root_delay: seconds_to_short(0.0),
            root_dispersion: seconds_to_short(0.0001),
            reference_id: *b"GPS\0",
            reference_ts: t2,
            origin_ts: nonce,
            receive_ts: t2,
            transmit_ts: t2.add_seconds(0.0001),
            extensions: vec![],
            mac: None,
        }
    }

    fn local(t: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0).add_seconds(t)
    }

    /// Polls once at `now` and answers from a perfect server.
    /// A source polling between 2^minpoll and 2^maxpoll s, from time 0.
    fn polling(minpoll: i8, maxpoll: i8, iburst: bool) -> Source {
        Source::new(
            SourceSettings {
                minpoll: PollExponent::saturating(minpoll),
                maxpoll: PollExponent::saturating(maxpoll),
                iburst,
                prefer: false,
            },
            0.0,
        )
    }

    fn exchange(s: &mut Source, now: f64, nonce: u64) -> ReplyOutcome {
        let n = NtpTimestamp(nonce);
        s.start_poll(now, n, local(now));
        let p = reply(n, local(now + 0.001), 0);
        s.handle_reply(now + 0.002, &p, local(now + 0.002), 0.0, &|_| 0.0, 0.0)
    }

    #[test]
    fn iburst_then_regular_polls_and_reach() {
        let mut s = polling(6, 10, true);
        assert_eq!(s.next_poll(), Some(0.0));
        let mut now = 0.0;
        let mut times = vec![];
        for i in 0..6 {
            times.push(now);
            assert!(matches!(
                exchange(&mut s, now, 100 + i),
                ReplyOutcome::Sample(_)
            ));
            now = s.next_poll().expect("scheduled");
        }
        assert_eq!(&times[..4], &[0.0, 2.0, 4.0, 6.0], "burst of four at 2 s");
        assert_eq!(times[4] - times[3], 64.0, "then minpoll");
        assert_eq!(s.reach(), 0b11_1111);
    }

    #[test]
    fn reach_register_shifts_out_missed_polls_and_backs_off() {
        let mut s = polling(4, 8, false);
        assert!(matches!(exchange(&mut s, 0.0, 1), ReplyOutcome::Sample(_)));
        assert_eq!(s.reach(), 1);
        let mut now = s.next_poll().expect("scheduled");
        for i in 0..8 {
            s.start_poll(now, NtpTimestamp(1000 + i), local(now));
            now = s.next_poll().expect("scheduled");
        }
        assert_eq!(s.reach(), 0, "eight unanswered polls empty the register");
        s.start_poll(now, NtpTimestamp(5000), local(now));
        assert!(
            s.poll_exponent().get() > 4,
            "backed off from an unreachable server"
        );
        assert!(
            s.estimate(EngineInstant::from_secs(now), Frequency::ZERO)
                .is_none(),
            "unreachable source gives no estimate"
        );
        assert!(s.is_dead(), "eight unanswered polls: of no more use");
        s.retire();
        assert_eq!(s.stopped(), Some(Stopped::Retired));
        assert_eq!(s.next_poll(), None, "a retired source is never polled");
        // A fresh source that has not tried eight times is not dead.
        let fresh = Source::new(SourceSettings::default(), 0.0);
        assert!(!fresh.is_dead());
    }

    #[test]
    fn poll_rises_towards_maxpoll_when_stable() {
        let mut s = polling(4, 6, false);
        let mut now = 0.0;
        for i in 0..60 {
            exchange(&mut s, now, 10 + i);
            now = s.next_poll().expect("scheduled");
        }
        assert_eq!(s.poll_exponent().get(), 6);
    }

    #[test]
    fn burst_and_settling_samples_do_not_raise_the_poll() {
        let mut s = polling(6, 10, true);
        // A burst and its settling polls: 16 good samples 2 s apart.
        let mut now = 0.0;
        for i in 0..16 {
            exchange(&mut s, now, 10 + i);
            now += 2.0;
        }
        assert_eq!(
            s.poll_exponent().get(),
            6,
            "samples seconds apart raised the poll"
        );
        // Regular polls still raise it, one step per few polls.
        let mut steps = vec![];
        for i in 0..12 {
            now = s.next_poll().expect("scheduled").max(now);
            exchange(&mut s, now, 100 + i);
            steps.push(s.poll_exponent().get());
        }
        assert_eq!(steps.first(), Some(&6), "{steps:?}");
        assert!(steps.last() > Some(&6), "{steps:?}");
    }

    #[test]
    fn kiss_rate_backs_off_and_deny_stops() {
        let mut s = polling(4, 10, true);
        let n = NtpTimestamp(77);
        s.start_poll(0.0, n, local(0.0));
        let mut kod = reply(n, local(0.001), 8);
        kod.stratum = 0;
        kod.reference_id = *b"RATE";
        let out = s.handle_reply(0.002, &kod, local(0.002), 0.0, &|_| 0.0, 0.0);
        assert_eq!(out, ReplyOutcome::Rejected(Reject::Kiss(KissCode::Rate)));
        assert_eq!(
            s.poll_exponent().get(),
            8,
            "RATE raises poll to at least the server's"
        );
        assert!(s.next_poll().expect("still polling") >= 256.0);

        let n2 = NtpTimestamp(78);
        s.start_poll(300.0, n2, local(300.0));
        let mut deny = reply(n2, local(300.001), 8);
        deny.stratum = 0;
        deny.reference_id = *b"DENY";
        s.handle_reply(300.002, &deny, local(300.002), 0.0, &|_| 0.0, 0.0);
        assert_eq!(s.stopped(), Some(Stopped::Kissed(KissCode::Deny)));
        assert!(s.is_dead(), "a source that refused us is of no more use");
        assert_eq!(s.next_poll(), None, "a denied source is never polled again");
    }

    #[test]
    fn unknown_kiss_is_ignored_and_replay_rejected() {
        let mut s = Source::new(SourceSettings::default(), 0.0);
        let n = NtpTimestamp(9);
        s.start_poll(0.0, n, local(0.0));
        let mut odd = reply(n, local(0.001), 6);
        odd.stratum = 0;
        odd.reference_id = *b"ACST";
        s.handle_reply(0.002, &odd, local(0.002), 0.0, &|_| 0.0, 0.0);
        assert_eq!(s.stopped(), None);
        assert_eq!(s.poll_exponent().get(), 6);
        // The same good reply twice: the second is not a new sample.
        s.start_poll(2.0, NtpTimestamp(10), local(2.0));
        let good = reply(NtpTimestamp(10), local(2.001), 6);
        assert!(matches!(
            s.handle_reply(2.002, &good, local(2.002), 0.0, &|_| 0.0, 0.0),
            ReplyOutcome::Sample(_)
        ));
        assert!(matches!(
            s.handle_reply(2.003, &good, local(2.003), 0.0, &|_| 0.0, 0.0),
            ReplyOutcome::Rejected(_)
        ));
        assert_eq!(s.sample_count(), 1);
    }
}
