//! The engine's core: its sources, selection, combining and discipline,
//! wired together without I/O. The daemon and the simulation drive the same
//! `Engine`: they call `on_timer` when `next_wakeup` comes, send the
//! requests it asks for, hand it the replies, and apply its clock actions.

use serde::Serialize;

use super::combine::{Candidate, Combined, combine};
use super::discipline::{ClockAction, Discipline, Observed, PHI, StepNowError, StepPolicy};

/// Smallest round-trip delay a correctness interval is built from (ntpd's
/// `tos mindist` default). Sources on one LAN measure microsecond delays;
/// without a floor their microsecond-wide intervals miss each other by a
/// few microseconds of path asymmetry, the majority is lost and selection
/// flaps. A falseticker milliseconds off is still rejected.
const MIN_DISTANCE: f64 = 1e-3;
/// While the frequency estimate is less certain than this (s/s), or the
/// offset than SETTLE_OFFSET_SD (s), the selected sources poll again at the
/// burst interval (a few times, see Source::poll_soon_while_settling).
const SETTLE_SKEW: f64 = 5e-6;
const SETTLE_OFFSET_SD: f64 = 100e-6;
/// ... or while a selected source's samples span less than this (s).
const SETTLE_SPAN: f64 = 12.0;

/// Half-width of a source's correctness interval (RFC 5905's root
/// distance): half the round trip to the reference clock (at least
/// MIN_DISTANCE), the server's root dispersion, our jitter, the aging of
/// the estimate, and 1 µs for timestamp precision.
fn root_distance(
    root_delay: f64,
    root_dispersion: f64,
    min_delay: f64,
    jitter: f64,
    aging: f64,
) -> f64 {
    (root_delay + min_delay).max(MIN_DISTANCE) / 2.0 + root_dispersion + jitter + aging + 1e-6
}
use super::proto::{Leap, MAX_STRATUM, NtpTimestamp, Packet, seconds_to_short};
use super::select::{Interval, select};
use super::source::{ReplyOutcome, Source, SourceSettings, Stopped};
use super::units::{EngineInstant, Frequency, PollExponent, Seconds};

/// Engine-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// Fewest truechimers needed to update the clock.
    pub min_sources: usize,
    pub step: StepPolicy,
    /// Whether the clock may be changed (off: compute, never adjust).
    pub clock_control: bool,
    /// Frequency from the drift file.
    pub initial_frequency: Option<Frequency>,
    /// The kernel's frequency when the engine starts (kept without a drift
    /// file, as chronyd does; 0 when unknown or without clock control).
    pub kernel_frequency: Frequency,
    /// Stratum to serve while unsynchronised (None: serve stratum 16).
    pub local_stratum: Option<u8>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            min_sources: 1,
            step: StepPolicy::default(),
            clock_control: false,
            initial_frequency: None,
            kernel_frequency: Frequency::ZERO,
            local_stratum: None,
        }
    }
}

/// What the engine wants done.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Send a request to this source: call `Engine::build_request`.
    Poll(usize),
    /// Change the clock.
    Clock(ClockAction),
}

/// Selection state of a source, as `chronyc sources` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// The system peer (`*`).
    Selected,
    /// A truechimer combined with the system peer (`+`).
    Combined,
    /// Rejected by the intersection algorithm (`x`).
    Falseticker,
    /// Not enough samples or no majority yet (`?`).
    Unselected,
    /// No reply in the last eight polls (`?`).
    Unreachable,
    /// Refused us with a DENY or RSTR kiss (`-`).
    Denied,
}

impl SourceState {
    /// The mark chronyc puts in front of the source.
    pub fn mark(self) -> char {
        match self {
            SourceState::Selected => '*',
            SourceState::Combined => '+',
            SourceState::Falseticker => 'x',
            SourceState::Unselected | SourceState::Unreachable => '?',
            SourceState::Denied => '-',
        }
    }
}

/// What the server half answers with (RFC 5905 system variables).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerState {
    pub leap: Leap,
    pub stratum: u8,
    pub reference_id: [u8; 4],
    pub root_delay: f64,
    pub root_dispersion: f64,
    /// Local time of the last clock update.
    pub reference_time: NtpTimestamp,
    /// The system peer's poll interval.
    pub poll: PollExponent,
    pub precision: i8,
}

impl ServerState {
    pub fn unsynchronized(local_stratum: Option<u8>) -> ServerState {
        match local_stratum {
            Some(stratum) => ServerState {
                leap: Leap::NoWarning,
                stratum,
                reference_id: *b"LOCL",
                root_delay: 0.0,
                root_dispersion: 0.0,
                reference_time: NtpTimestamp::ZERO,
                poll: PollExponent::saturating(6),
                precision: -20,
            },
            None => ServerState {
                leap: Leap::Unsynchronized,
                stratum: MAX_STRATUM,
                reference_id: [0; 4],
                root_delay: 0.0,
                root_dispersion: 0.0,
                reference_time: NtpTimestamp::ZERO,
                poll: PollExponent::saturating(6),
                precision: -20,
            },
        }
    }

    /// The reply to a client request received at `received` and sent at
    /// `transmit` (both local clock readings). Mirrors the client's version.
    pub fn reply(
        &self,
        request: &Packet,
        received: NtpTimestamp,
        transmit: NtpTimestamp,
    ) -> Packet {
        let age = if self.reference_time.is_zero() {
            0.0
        } else {
            transmit.diff_seconds(self.reference_time).max(0.0)
        };
        Packet {
            leap: self.leap,
            version: request.version,
            mode: super::proto::Mode::Server,
            stratum: self.stratum,
            // Echo the client's poll interval, as chrony and ntpd do.
            poll: request.poll,
            precision: self.precision,
            root_delay: seconds_to_short(self.root_delay),
            root_dispersion: seconds_to_short(self.root_dispersion + PHI.fraction() * age),
            reference_id: self.reference_id,
            reference_ts: self.reference_time,
            origin_ts: request.transmit_ts,
            receive_ts: received,
            transmit_ts: transmit,
            extensions: Vec::new(),
            mac: None,
        }
    }
}

/// One source in a status report.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SourceReport {
    /// Position among the engine's sources (not part of the status JSON).
    #[serde(skip)]
    pub index: usize,
    pub state: SourceState,
    pub selected: bool,
    pub reach: u8,
    pub poll: PollExponent,
    pub stratum: Option<u8>,
    /// Local minus source time of the last sample, seconds (chrony's sign).
    pub last_offset_seconds: Option<f64>,
    pub delay_seconds: Option<f64>,
    pub jitter_seconds: Option<f64>,
    pub last_sample_age_seconds: Option<f64>,
    pub samples: usize,
    pub last_error: Option<String>,
}

/// The system in a status report (`chronyc tracking`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemReport {
    pub synchronized: bool,
    pub clock_control: bool,
    /// Local clock minus true time, estimated now (positive: clock fast).
    pub offset_seconds: Option<f64>,
    /// The estimate's error bound (the system peer's root distance): the
    /// clock is within `offset_seconds` ± this of the reference's time.
    pub offset_bound_seconds: Option<f64>,
    /// The offset measured at the last update, same sign.
    pub last_offset_seconds: Option<f64>,
    /// Frequency correction the clock needs, ppm (positive: speed up).
    pub frequency_ppm: f64,
    pub skew_ppm: f64,
    pub stratum: u8,
    pub leap: &'static str,
    pub reference_id: String,
    pub system_peer: Option<usize>,
    pub root_delay_seconds: f64,
    pub root_dispersion_seconds: f64,
    pub last_update_age_seconds: Option<f64>,
    pub updates: u64,
    pub steps: u64,
    /// Clock updates since the last step: 0 means the offset shown is the
    /// step's own estimate, not yet confirmed by a measurement after it.
    pub updates_since_step: u64,
    /// The leap second armed in the kernel ("insert", "delete", "none").
    pub kernel_leap: &'static str,
    pub sources: Vec<SourceReport>,
}

/// Where the system offset stood at the last update, in the natural frame.
#[derive(Clone, Copy, Debug)]
struct SystemEstimate {
    at: f64,
    natural_offset: f64,
    measured_offset: f64,
    /// Root distance of the system peer at the update.
    bound: f64,
}

pub struct Engine {
    settings: EngineSettings,
    sources: Vec<Source>,
    states: Vec<SourceState>,
    discipline: Discipline,
    server: ServerState,
    system_peer: Option<usize>,
    synchronized: bool,
    estimate: Option<SystemEstimate>,
    last_update: Option<f64>,
    /// The local clock reading at the last `observe_clock`.
    observed_local: Option<(f64, NtpTimestamp)>,
    /// Whether the kernel was last told the clock is synchronised.
    kernel_synchronized: bool,
}

impl Engine {
    pub fn new(settings: EngineSettings, now: EngineInstant) -> Engine {
        let now = now.as_secs();
        let discipline = Discipline::new(
            settings.clock_control,
            settings.step,
            settings.initial_frequency,
            settings.kernel_frequency,
            now,
        );
        Engine {
            server: ServerState::unsynchronized(settings.local_stratum),
            settings,
            sources: Vec::new(),
            states: Vec::new(),
            discipline,
            system_peer: None,
            synchronized: false,
            estimate: None,
            last_update: None,
            observed_local: None,
            kernel_synchronized: false,
        }
    }

    /// The kernel's STA_UNSYNC follows the engine's state: cleared with the
    /// error bound at every update, set again once synchronisation is lost.
    fn kernel_sync_actions(&mut self, bound: Option<f64>) -> Vec<Action> {
        if !self.discipline.clock_control() {
            return vec![];
        }
        match bound {
            Some(b) if self.synchronized => {
                self.kernel_synchronized = true;
                vec![Action::Clock(ClockAction::SetSynchronized(Some(
                    Seconds::new(b),
                )))]
            }
            _ if self.kernel_synchronized && !self.synchronized => {
                self.kernel_synchronized = false;
                vec![Action::Clock(ClockAction::SetSynchronized(None))]
            }
            _ => vec![],
        }
    }

    /// What the clocks read at engine instant `now`: the local clock
    /// (CLOCK_REALTIME) and the correction the kernel has made so far
    /// (CLOCK_REALTIME minus CLOCK_MONOTONIC_RAW, from start). The daemon
    /// calls this before every other call; it returns clock actions (a leap
    /// second done: disarm the kernel flag).
    pub fn observe_clock(
        &mut self,
        now: EngineInstant,
        local: NtpTimestamp,
        correction: Seconds,
    ) -> Vec<Action> {
        let (now, correction) = (now.as_secs(), correction.get());
        self.observed_local = Some((now, local));
        match self
            .discipline
            .observe(now, unix_seconds(local), correction)
        {
            Observed::AsExpected => vec![],
            Observed::Jumped(by) => {
                // Requests in flight were sent on the other side of the jump.
                tracing::warn!("the clock was moved by {by:+.6} s by something else");
                for s in &mut self.sources {
                    s.forget_pending();
                }
                vec![]
            }
            Observed::Leap(action) => {
                tracing::info!("the kernel applied the leap second");
                vec![Action::Clock(action)]
            }
        }
    }

    /// Clock actions to run once at start (the drift-file frequency).
    pub fn start_actions(&self) -> Vec<Action> {
        self.discipline
            .start_actions()
            .into_iter()
            .map(Action::Clock)
            .collect()
    }

    /// Adds a source that polls first at `now`; returns its index.
    pub fn add_source(&mut self, settings: SourceSettings, now: EngineInstant) -> usize {
        let now = now.as_secs();
        self.sources.push(Source::new(settings, now));
        self.states.push(SourceState::Unselected);
        self.sources.len() - 1
    }

    pub fn source(&self, index: usize) -> Option<&Source> {
        self.sources.get(index)
    }

    /// Sources that are of no more use (refused us, or unreachable for
    /// eight polls), and not retired yet: a pool's may be replaced.
    pub fn dead_sources(&self) -> Vec<usize> {
        self.sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_dead() && s.stopped() != Some(Stopped::Retired))
            .map(|(i, _)| i)
            .collect()
    }

    /// Stops a source for good (its pool gave a replacement).
    pub fn retire_source(&mut self, index: usize) {
        if let Some(s) = self.sources.get_mut(index) {
            s.retire();
            self.states[index] = SourceState::Unreachable;
        }
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    pub fn discipline(&self) -> &Discipline {
        &self.discipline
    }

    pub fn synchronized(&self) -> bool {
        self.synchronized
    }

    pub fn system_peer(&self) -> Option<usize> {
        self.system_peer
    }

    pub fn source_state(&self, index: usize) -> Option<SourceState> {
        self.states.get(index).copied()
    }

    /// Server variables (what the server half answers with).
    pub fn server_state(&self) -> ServerState {
        self.server
    }

    /// The next instant `on_timer` has work.
    pub fn next_wakeup(&self) -> Option<EngineInstant> {
        let polls = self.sources.iter().filter_map(Source::next_poll);
        let next = polls.chain(self.discipline.next_timer()).reduce(f64::min);
        next.map(EngineInstant::from_secs)
    }

    /// Runs due timers: returns polls to send and clock actions.
    pub fn on_timer(&mut self, now: EngineInstant) -> Vec<Action> {
        let now = now.as_secs();
        let mut actions: Vec<Action> = self
            .discipline
            .on_timer(now)
            .into_iter()
            .map(Action::Clock)
            .collect();
        for (i, s) in self.sources.iter().enumerate() {
            if s.next_poll().is_some_and(|t| t <= now) {
                actions.push(Action::Poll(i));
            }
        }
        actions.extend(self.kernel_sync_actions(None));
        actions
    }

    /// The request for a poll of source `index`: `nonce` is random,
    /// `sent_local` is the clock reading taken just before sending.
    pub fn build_request(
        &mut self,
        index: usize,
        now: EngineInstant,
        nonce: NtpTimestamp,
        sent_local: NtpTimestamp,
    ) -> Option<[u8; 48]> {
        let now = now.as_secs();
        let source = self.sources.get_mut(index)?;
        let bytes = source.start_poll(now, nonce, sent_local);
        if source.reach() == 0 && self.states[index] != SourceState::Denied {
            self.states[index] = SourceState::Unreachable;
            // Once no selected or combined source is reachable any more, the
            // engine no longer knows the time: say so (and serve LI=3).
            let still_used = self
                .states
                .iter()
                .any(|s| matches!(s, SourceState::Selected | SourceState::Combined));
            if self.synchronized && !still_used {
                self.lose_sync();
            }
        }
        Some(bytes)
    }

    /// The request with `nonce` to source `index` really left at `sent_local`.
    pub fn set_sent_local(&mut self, index: usize, nonce: NtpTimestamp, sent_local: NtpTimestamp) {
        if let Some(s) = self.sources.get_mut(index) {
            s.set_sent_local(nonce, sent_local);
        }
    }

    /// A datagram from source `index`, received at `now` when the local
    /// clock read `received_local`. Returns what happened to it and the
    /// clock actions that follow.
    pub fn on_reply(
        &mut self,
        index: usize,
        now: EngineInstant,
        bytes: &[u8],
        received_local: NtpTimestamp,
    ) -> (ReplyOutcome, Vec<Action>) {
        let now = now.as_secs();
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(_) => {
                return (
                    ReplyOutcome::Rejected(super::proto::Reject::Undecodable),
                    vec![],
                );
            }
        };
        // Seconds from the reception to now (the last clock observation).
        let received_age = match self.observed_local {
            Some((at, local)) if at == now => local.diff_seconds(received_local).clamp(0.0, 1.0),
            _ => 0.0,
        };
        let discipline = &self.discipline;
        let correction_at = |t: f64| discipline.correction(t);
        let slope = self.discipline.natural_slope().fraction();
        let Some(source) = self.sources.get_mut(index) else {
            return (
                ReplyOutcome::Rejected(super::proto::Reject::Unsolicited),
                vec![],
            );
        };
        let outcome = source.handle_reply(
            now,
            &packet,
            received_local,
            received_age,
            &correction_at,
            slope,
        );
        if source.stopped().is_some() {
            self.states[index] = SourceState::Denied;
        }
        let actions = match outcome {
            ReplyOutcome::Sample(_) => self.update(now, index, received_local),
            ReplyOutcome::Rejected(_) => vec![],
        };
        (outcome, actions)
    }

    /// Selection, combining and discipline after a new sample from `fresh`.
    fn update(&mut self, now: f64, fresh: usize, now_local: NtpTimestamp) -> Vec<Action> {
        if self.waiting_for_first_answers() {
            return vec![];
        }
        let correction = self.discipline.correction(now);
        let default_slope = self.discipline.natural_slope();
        let candidates = self.candidates(now, correction, default_slope);
        let Some((chosen, peer, truechimers)) = self.select_peer(&candidates) else {
            return vec![];
        };
        if !truechimers.contains(&fresh) {
            // A falseticker's sample changes nothing on the clock.
            return vec![];
        }
        let Some(combined) = combine(&chosen) else {
            return vec![];
        };
        let mut actions = self.discipline_update(now, &combined, correction, peer.distance.get());
        self.settle_polls(now, &chosen, combined.offset_sd.get());
        let leap = majority_leap(
            chosen
                .iter()
                .filter_map(|c| self.sources[c.index].server_info())
                .map(|i| i.leap),
        );
        actions.extend(self.discipline.announce_leap(unix_seconds(now_local), leap));
        self.last_update = Some(now);
        self.synchronized = true;
        self.update_server_state(now, now_local, &peer, leap, default_slope);
        let mut actions: Vec<Action> = actions.into_iter().map(Action::Clock).collect();
        actions.extend(self.kernel_sync_actions(Some(peer.distance.get())));
        actions
    }

    /// At start, give every source a chance to answer before selecting,
    /// so a falseticker that happens to answer first is never selected
    /// alone (a source that missed its first few polls is not waited for).
    fn waiting_for_first_answers(&self) -> bool {
        let still_starting =
            |s: &Source| s.stopped().is_none() && s.sample_count() == 0 && s.polls_sent() < 3;
        !self.synchronized && self.sources.iter().any(still_starting)
    }

    /// Every source with an estimate, as a candidate for selection; the
    /// others' states say why they are not (denied, unreachable, no
    /// estimate yet).
    fn candidates(
        &mut self,
        now: f64,
        correction: f64,
        default_slope: Frequency,
    ) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            match s.stopped() {
                Some(Stopped::Kissed(_)) => {
                    self.states[i] = SourceState::Denied;
                    continue;
                }
                Some(Stopped::Retired) => {
                    self.states[i] = SourceState::Unreachable;
                    continue;
                }
                None => {}
            }
            let (Some(est), Some(info), Some(last)) = (
                s.estimate(EngineInstant::from_secs(now), default_slope),
                s.server_info(),
                s.last_sample_time(),
            ) else {
                self.states[i] = if s.reach() == 0 {
                    SourceState::Unreachable
                } else {
                    SourceState::Unselected
                };
                continue;
            };
            // The offset is extrapolated along the regression line, so it ages
            // with the slope's uncertainty (at most PHI) plus 1 ppm for the
            // clock's own instability (chrony's maxclockerror), not a flat PHI.
            let aging =
                (est.slope_sd.fraction().min(PHI.fraction()) + 1e-6) * (now - last.as_secs());
            candidates.push(Candidate {
                index: i,
                offset: Seconds::new(est.natural_offset.get() - correction),
                distance: Seconds::new(root_distance(
                    info.root_delay,
                    info.root_dispersion,
                    est.min_delay.get(),
                    est.jitter.get(),
                    aging,
                )),
                slope: est.slope,
                slope_sd: est.slope_sd,
                offset_sd: est.offset_sd,
            });
        }
        candidates
    }

    /// Selection among the candidates: marks falsetickers, truechimers and
    /// the system peer (a preferred truechimer if any, else the one with the
    /// smallest root distance). Returns the truechimers' candidates, the
    /// peer and the truechimers' indices; None (and sync lost) without a
    /// majority.
    fn select_peer(
        &mut self,
        candidates: &[Candidate],
    ) -> Option<(Vec<Candidate>, Candidate, Vec<usize>)> {
        let intervals: Vec<Interval> = candidates
            .iter()
            .map(|c| Interval {
                index: c.index,
                offset: c.offset,
                distance: c.distance,
            })
            .collect();
        let selection =
            select(&intervals).filter(|s| s.truechimers.len() >= self.settings.min_sources.max(1));
        let Some(selection) = selection else {
            for c in candidates {
                self.states[c.index] = SourceState::Unselected;
            }
            if self.synchronized {
                tracing::warn!("no majority among sources: {intervals:?}");
            }
            self.lose_sync();
            return None;
        };
        for &i in &selection.falsetickers {
            self.states[i] = SourceState::Falseticker;
        }
        let chosen: Vec<Candidate> = candidates
            .iter()
            .filter(|c| selection.truechimers.contains(&c.index))
            .copied()
            .collect();
        let peer = chosen
            .iter()
            .min_by(|a, b| {
                let pa = self.sources[a.index].settings.prefer;
                let pb = self.sources[b.index].settings.prefer;
                pb.cmp(&pa).then(a.distance.total_cmp(&b.distance))
            })
            .copied();
        let Some(peer) = peer else {
            self.lose_sync();
            return None;
        };
        for c in &chosen {
            self.states[c.index] = if c.index == peer.index {
                SourceState::Selected
            } else {
                SourceState::Combined
            };
        }
        self.system_peer = Some(peer.index);
        Some((chosen, peer, selection.truechimers))
    }

    /// Hands the combined estimate to the discipline and records it as the
    /// system estimate (`correction` is the discipline's before the update).
    fn discipline_update(
        &mut self,
        now: f64,
        combined: &Combined,
        correction: f64,
        bound: f64,
    ) -> Vec<ClockAction> {
        let slew_time = match self.last_update {
            Some(t) => (now - t).clamp(1.0, 1024.0),
            None => 2.0,
        };
        let actions = self.discipline.update(
            now,
            combined.offset,
            combined.slope.map(|s| (s, combined.slope_sd)),
            Seconds::new(slew_time),
        );
        self.estimate = Some(SystemEstimate {
            at: now,
            natural_offset: combined.offset.get() + correction,
            measured_offset: combined.offset.get(),
            bound,
        });
        self.after_step(now, &actions);
        actions
    }

    /// While the estimate is uncertain, the chosen sources poll soon.
    fn settle_polls(&mut self, now: f64, chosen: &[Candidate], combined_offset_sd: f64) {
        if !self.discipline.clock_control() {
            return;
        }
        let uncertain = self.discipline.frequency_sd().fraction() > SETTLE_SKEW
            || combined_offset_sd > SETTLE_OFFSET_SD;
        for c in chosen {
            // A burst's samples span 6 s: on a noisy path their slope
            // may be 15 ppm off while its error looks small (seen on
            // the UML test host after step.now), so a short span counts
            // as uncertain too.
            let source = &mut self.sources[c.index];
            if uncertain || source.sample_span().get() < SETTLE_SPAN {
                source.poll_soon_while_settling(now);
            }
        }
    }

    /// What the server tells its clients, from the system peer.
    fn update_server_state(
        &mut self,
        now: f64,
        now_local: NtpTimestamp,
        peer: &Candidate,
        leap: Leap,
        default_slope: Frequency,
    ) {
        let peer_source = &self.sources[peer.index];
        let Some(info) = peer_source.server_info() else {
            return;
        };
        let delay = peer_source
            .estimate(EngineInstant::from_secs(now), default_slope)
            .map(|e| e.min_delay.get())
            .unwrap_or(0.0);
        self.server = ServerState {
            leap,
            stratum: (info.stratum + 1).min(MAX_STRATUM),
            reference_id: self.server.reference_id,
            root_delay: info.root_delay + delay,
            root_dispersion: peer.distance.get() - info.root_delay / 2.0 - delay / 2.0,
            reference_time: now_local,
            poll: peer_source.poll_exponent(),
            precision: -20,
        };
    }

    /// After a step: requests in flight were timed across it (forget
    /// them), and the estimate that led to it is unconfirmed, so every
    /// source polls again soon (a short burst, as after iburst) instead of
    /// waiting a whole poll interval.
    fn after_step(&mut self, now: f64, actions: &[ClockAction]) {
        if actions.iter().any(|a| matches!(a, ClockAction::Step(_))) {
            for s in &mut self.sources {
                s.forget_pending();
                s.burst_soon(now);
            }
        }
    }

    fn lose_sync(&mut self) {
        self.synchronized = false;
        self.system_peer = None;
        self.server = ServerState::unsynchronized(self.settings.local_stratum);
    }

    /// The reference ID the server reports is the system peer's address;
    /// the daemon (which knows addresses) sets it here.
    pub fn set_reference_id(&mut self, id: [u8; 4]) {
        if self.synchronized {
            self.server.reference_id = id;
        }
    }

    /// Estimated offset (server minus local) now, if synchronised once.
    pub fn current_offset(&self, now: EngineInstant) -> Option<Seconds> {
        self.offset_at(now.as_secs()).map(Seconds::new)
    }

    fn offset_at(&self, now: f64) -> Option<f64> {
        let e = self.estimate?;
        // Carried forward with the frequency the discipline settled on (what
        // the clock runs by), not the last update's raw slope: a few samples
        // after a burst give a slope hundreds of ppm off, and the status
        // would drift away from the clock's real offset by that much.
        let slope = self.discipline.natural_slope().fraction();
        Some(e.natural_offset + slope * (now - e.at) - self.discipline.correction(now))
    }

    /// One step by the current offset estimate (`step.now`).
    pub fn step_now(&mut self, now: EngineInstant) -> Result<(Seconds, Vec<Action>), StepNowError> {
        let now = now.as_secs();
        let offset = self.offset_at(now);
        let actions = self.discipline.step_now(now, offset)?;
        self.after_step(now, &actions);
        Ok((
            Seconds::new(offset.unwrap_or(0.0)),
            actions.into_iter().map(Action::Clock).collect(),
        ))
    }

    /// A status report at `now`.
    pub fn report(&self, now: EngineInstant) -> SystemReport {
        let now = now.as_secs();
        let slope = self.discipline.natural_slope();
        let sources = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let est = s.estimate(EngineInstant::from_secs(now), slope);
                SourceReport {
                    index: i,
                    state: self.states[i],
                    selected: self.system_peer == Some(i),
                    reach: s.reach(),
                    poll: s.poll_exponent(),
                    stratum: s.server_info().map(|x| x.stratum),
                    last_offset_seconds: s.last_measurement().map(|(_, m)| -m.offset),
                    delay_seconds: s.last_measurement().map(|(_, m)| m.delay),
                    jitter_seconds: est.map(|e| e.jitter.get()),
                    last_sample_age_seconds: s.last_sample_time().map(|t| now - t.as_secs()),
                    samples: s.sample_count(),
                    last_error: s.last_reject().map(|r| r.to_string()),
                }
            })
            .collect();
        let leap = match self.server.leap {
            Leap::NoWarning => "normal",
            Leap::InsertSecond => "insert_second",
            Leap::DeleteSecond => "delete_second",
            Leap::Unsynchronized => "unsynchronized",
        };
        SystemReport {
            synchronized: self.synchronized,
            clock_control: self.discipline.clock_control(),
            offset_seconds: self.offset_at(now).map(|o| -o),
            offset_bound_seconds: self
                .estimate
                .map(|e| e.bound + PHI.fraction() * (now - e.at).max(0.0)),
            last_offset_seconds: self.estimate.map(|e| -e.measured_offset),
            frequency_ppm: self.discipline.frequency().ppm(),
            skew_ppm: self.discipline.frequency_sd().ppm(),
            stratum: self.server.stratum,
            leap,
            reference_id: refid_string(self.server.reference_id, self.server.stratum),
            system_peer: self.system_peer,
            root_delay_seconds: self.server.root_delay,
            root_dispersion_seconds: self.server.root_dispersion,
            last_update_age_seconds: self.last_update.map(|t| now - t),
            updates: self.discipline.updates(),
            steps: self.discipline.steps(),
            updates_since_step: self.discipline.updates_since_step(),
            kernel_leap: match self.discipline.armed_leap() {
                super::discipline::LeapAction::Insert => "insert",
                super::discipline::LeapAction::Delete => "delete",
                super::discipline::LeapAction::None => "none",
            },
            sources,
        }
    }
}

/// The leap second announced by a majority of the given sources' leap
/// indicators (chrony's rule: a lone source's flag cannot fool the clock
/// when others say nothing).
fn majority_leap(leaps: impl Iterator<Item = Leap>) -> Leap {
    let (mut insert, mut delete, mut total) = (0, 0, 0);
    for l in leaps {
        total += 1;
        match l {
            Leap::InsertSecond => insert += 1,
            Leap::DeleteSecond => delete += 1,
            _ => {}
        }
    }
    if insert * 2 > total {
        Leap::InsertSecond
    } else if delete * 2 > total {
        Leap::DeleteSecond
    } else {
        Leap::NoWarning
    }
}

/// A local clock reading as Unix seconds (UTC, for day boundaries).
fn unix_seconds(t: NtpTimestamp) -> f64 {
    // Any pivot within 68 years of the reading picks the right era.
    t.to_unix_near(1_800_000_000)
}

/// A reference ID as text: a dotted quad, or ASCII for stratum 0/1 codes.
pub fn refid_string(id: [u8; 4], stratum: u8) -> String {
    if stratum <= 1 || id == *b"LOCL" {
        id.iter()
            .take_while(|&&b| b != 0)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect()
    } else {
        format!("{}.{}.{}.{}", id[0], id[1], id[2], id[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::{Interval, select};

    /// Two peers on one LAN sharing one clock, measured 13 µs apart by path
    /// asymmetry with microsecond delays and jitter (as seen on a veth
    /// link): they must agree, or selection loses its majority and flaps.
    /// A server 20 ms off is still a falseticker.
    #[test]
    fn lan_sources_a_few_microseconds_apart_agree() {
        let lan = |index, offset| Interval {
            index,
            offset: Seconds::new(offset),
            distance: Seconds::new(root_distance(0.0, 15e-6, 8e-6, 2e-6, 1e-6)),
        };
        let selection = select(&[lan(0, 6.8e-6), lan(1, -6.6e-6), lan(2, 0.020)]).unwrap();
        assert_eq!(selection.truechimers, [0, 1]);
        assert_eq!(selection.falsetickers, [2]);
        // The intervals measured on the test host before the floor existed
        // (6.8 ± 4.4 µs and -6.6 ± 3.4 µs) have no majority.
        let measured = [
            Interval {
                index: 0,
                offset: Seconds::new(6.8e-6),
                distance: Seconds::new(4.4e-6),
            },
            Interval {
                index: 1,
                offset: Seconds::new(-6.6e-6),
                distance: Seconds::new(3.4e-6),
            },
        ];
        assert!(select(&measured).is_none_or(|s| s.truechimers.len() < 2));
        assert!(root_distance(0.0, 0.0, 8e-6, 0.0, 0.0) >= MIN_DISTANCE / 2.0);
        // Long paths are not shortened by the floor.
        let far = root_distance(0.010, 0.0, 0.004, 0.0, 0.0);
        assert!((far - (0.007 + 1e-6)).abs() < 1e-12);
    }
}
