//! The semantic checks of a desired-state file: everything that needs
//! more than one value (the provider and what it can do, key ids, counts
//! of sources), each reported at the value it is about.

use super::{Diagnostic, EMBEDDED_EXTRA_CONFIG, ProviderKind, Source, Spec, values};

impl Spec {
    /// The semantic checks, in the order of the file's keys.
    pub(super) fn check(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        self.check_has_sources(&mut out);
        self.check_keys(&mut out);
        self.check_sources(&mut out);
        self.check_min_sources(&mut out);
        self.check_step(&mut out);
        self.check_serve(&mut out);
        self.check_metrics(&mut out);
        self.check_nts_trust(&mut out);
        self.check_provider_limits(&mut out);
        self.check_extra_config(&mut out);
        out
    }

    /// At least one source, unless the host is its own reference.
    fn check_has_sources(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let serves_locally = ts.serve.as_ref().is_some_and(|s| s.local_stratum.is_some());
        if ts.sources.value.is_empty() && !serves_locally {
            out.push(self.diagnostic(
                &ts.sources.referenced,
                "no sources: expected at least one `server` or `pool` (or `serve.localStratum` for a host that is its own reference)",
            ));
        }
    }

    /// Key ids in range and unique; secrets the provider's key file can hold.
    fn check_keys(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let provider = self.provider();
        let key_ids = self.key_ids();
        for (i, key) in ts.keys.iter().enumerate() {
            if !(1..=65534).contains(&key.id.value) {
                out.push(self.diagnostic(
                    &key.id.referenced,
                    format!("invalid key id {}: expected 1 to 65534", key.id.value),
                ));
            }
            // ntpd's key file ends a line at '#': the rest of the secret
            // would be lost without a word.
            if provider == ProviderKind::Ntpd && key.secret.expose().contains('#') {
                out.push(self.diagnostic(
                    &key.id.referenced,
                    format!(
                        "the secret of key {} contains '#', which ntpd's key file reads as the start of a comment: expected a secret without '#' (or HEX:...)",
                        key.id.value
                    ),
                ));
            }
            if key_ids[..i].contains(&key.id.value) {
                out.push(self.diagnostic(
                    &key.id.referenced,
                    format!("duplicate key id {}", key.id.value),
                ));
            }
        }
    }

    fn key_ids(&self) -> Vec<u32> {
        self.timesync.keys.iter().map(|k| k.id.value).collect()
    }

    /// Each source, against the provider's poll range and the keys.
    fn check_sources(&self, out: &mut Vec<Diagnostic>) {
        let provider = self.provider();
        let (poll_min, poll_max) = match provider {
            ProviderKind::Chrony => (-6, 24),
            ProviderKind::Ntpd => (3, 17),
            ProviderKind::Embedded => (-4, 17),
            // PollIntervalMinSec is at least 16 s.
            ProviderKind::Timesyncd => (4, 17),
        };
        let key_ids = self.key_ids();
        for source in &self.timesync.sources.value {
            self.check_source(source, provider, (poll_min, poll_max), out);
            self.check_source_auth(source, provider, &key_ids, out);
        }
    }

    /// minSources between 1 and what the sources can give.
    fn check_min_sources(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let capacity: u32 = ts.sources.value.iter().map(Source::max_count).sum();
        if let Some(min) = &ts.min_sources {
            if min.value == 0 {
                out.push(self.diagnostic(&min.referenced, "minSources must be at least 1"));
            } else if min.value > capacity && !ts.sources.value.is_empty() {
                out.push(self.diagnostic(
                    &min.referenced,
                    format!(
                        "minSources is {} but the sources give at most {capacity} server(s): expected a number from 1 to {capacity}",
                        min.value
                    ),
                ));
            }
        }
    }

    /// A step limit of -1 or more.
    fn check_step(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        if let Some(step) = &ts.step
            && step.limit.value < -1
        {
            out.push(self.diagnostic(
                &step.limit.referenced,
                format!(
                    "invalid step limit {}: expected -1 (always) or a count of updates, 0 or more",
                    step.limit.value
                ),
            ));
        }
    }

    /// Serving: an allow list, chrony's one address per family, a stratum.
    fn check_serve(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let provider = self.provider();
        if let Some(serve) = &ts.serve {
            if serve.allow.value.is_empty() {
                out.push(self.diagnostic(
                    &serve.allow.referenced,
                    "serve.allow is empty: expected at least one network (0.0.0.0/0 and ::/0 serve everyone)",
                ));
            }
            if provider == ProviderKind::Chrony {
                for family_v4 in [true, false] {
                    let same: Vec<_> = serve
                        .listen
                        .iter()
                        .filter(|a| a.value.is_ipv4() == family_v4)
                        .collect();
                    if let Some(extra) = same.get(1) {
                        out.push(self.diagnostic(
                            &extra.referenced,
                            "chrony serves on at most one IPv4 and one IPv6 address (bindaddress): expected one address per family",
                        ));
                    }
                }
            }
            if let Some(nts) = &serve.nts
                && !matches!(provider, ProviderKind::Embedded | ProviderKind::Chrony)
            {
                out.push(self.diagnostic(
                    &nts.certificate.referenced,
                    format!(
                        "serve.nts is served by provider embedded or chrony, not {}: remove `serve.nts` or change the provider",
                        provider.name()
                    ),
                ));
            }
            if let Some(stratum) = &serve.local_stratum
                && !(1..=15).contains(&stratum.value)
            {
                out.push(self.diagnostic(
                    &stratum.referenced,
                    format!("invalid localStratum {}: expected 1 to 15", stratum.value),
                ));
            }
        }
    }

    /// NTS trust anchors only where the provider reads them.
    fn check_nts_trust(&self, out: &mut Vec<Diagnostic>) {
        let provider = self.provider();
        if let Some(certs) = &self.timesync.nts_trusted_certs
            && !matches!(provider, ProviderKind::Embedded | ProviderKind::Chrony)
        {
            out.push(self.diagnostic(
                &certs.referenced,
                format!(
                    "ntsTrustedCerts is read by provider embedded or chrony, not {}: remove it",
                    provider.name()
                ),
            ));
        }
    }

    /// Metrics only with the embedded engine, on loopback unless allowed.
    fn check_metrics(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let provider = self.provider();
        if let Some(metrics) = &ts.metrics {
            let at = &metrics.listen.referenced;
            if provider != ProviderKind::Embedded {
                out.push(self.diagnostic(
                    at,
                    format!(
                        "metrics is served by the embedded engine only, not by provider {}: remove `metrics` or use the embedded provider",
                        provider.name()
                    ),
                ));
            } else if let Err(problem) = crate::engine::config::check_metrics_listen(
                metrics.listen.value.0,
                metrics.allow_remote,
            ) {
                out.push(self.diagnostic(
                    at,
                    problem.with_remedy(crate::engine::config::ALLOW_REMOTE_HINT),
                ));
            }
        }
    }

    /// What the chosen provider cannot do at all.
    fn check_provider_limits(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let provider = self.provider();
        let provider_at = ts
            .provider
            .as_ref()
            .map(|p| p.referenced)
            .unwrap_or(ts.sources.referenced);
        if provider == ProviderKind::Timesyncd {
            self.check_timesyncd(provider_at, out);
        }
        if !ts.clock_control && provider == ProviderKind::Ntpd {
            out.push(self.diagnostic(
                &provider_at,
                "clockControl: false is not supported with provider ntpd (ntpd has no no-clock-control mode); use chrony or the embedded engine",
            ));
        }
    }

    /// extraConfig: lines of text, and not for the embedded engine.
    fn check_extra_config(&self, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let provider = self.provider();
        if let Some(extra) = &ts.extra_config {
            if let Some(problem) = extra_config_problem(&extra.value) {
                out.push(self.diagnostic(&extra.referenced, problem));
            }
            if provider == ProviderKind::Embedded {
                out.push(self.diagnostic(&extra.referenced, EMBEDDED_EXTRA_CONFIG));
            }
        }
    }

    /// What systemd-timesyncd cannot do: it is an SNTP client of one server
    /// at a time, with one poll range, no authentication and no mode that
    /// leaves the clock alone.
    fn check_timesyncd(&self, provider_at: serde_saphyr::Location, out: &mut Vec<Diagnostic>) {
        let ts = &self.timesync;
        let mut refuse = |at: &serde_saphyr::Location, what: &str| {
            out.push(self.diagnostic(at, format!("provider timesyncd {what}")));
        };
        if let Some(serve) = &ts.serve {
            refuse(
                &serve.allow.referenced,
                "is a client only and cannot serve time (systemd-timesyncd answers no NTP requests): remove `serve`, or use provider chrony, ntpd or embedded",
            );
        }
        if let Some(key) = ts.keys.first() {
            refuse(
                &key.id.referenced,
                "has no symmetric keys: remove `keys`, or use provider chrony or ntpd",
            );
        }
        if !ts.clock_control {
            refuse(
                &provider_at,
                "has no mode that leaves the clock alone (clockControl: false): use chrony or the embedded engine",
            );
        }
        if let Some(drift) = &ts.driftfile {
            refuse(
                &drift.referenced,
                "keeps no drift file (it saves only the last time it knew): remove `driftfile`",
            );
        }
        if let Some(min) = ts.min_sources.as_ref().filter(|m| m.value > 1) {
            refuse(
                &min.referenced,
                "uses one server at a time, so no number of sources can agree: remove `minSources` or set it to 1",
            );
        }
        for source in &ts.sources.value {
            self.check_timesyncd_source(source, &mut refuse);
        }
        for (name, polls) in [
            (
                "minpoll",
                ts.sources
                    .value
                    .iter()
                    .filter_map(|s| s.minpoll.as_ref())
                    .collect::<Vec<_>>(),
            ),
            (
                "maxpoll",
                ts.sources
                    .value
                    .iter()
                    .filter_map(|s| s.maxpoll.as_ref())
                    .collect(),
            ),
        ] {
            if let Some(other) = polls.iter().find(|p| p.value != polls[0].value) {
                refuse(
                    &other.referenced,
                    &format!(
                        "has one poll range for all its servers (PollIntervalMinSec/PollIntervalMaxSec): expected the same {name} on every source that sets it"
                    ),
                );
            }
        }
    }

    fn check_timesyncd_source(
        &self,
        source: &Source,
        refuse: &mut impl FnMut(&serde_saphyr::Location, &str),
    ) {
        let at = source
            .server
            .as_ref()
            .or(source.pool.as_ref())
            .map_or(self.timesync.sources.referenced, |h| h.referenced);
        if let Some(nts) = source.nts.as_ref().filter(|n| n.value) {
            refuse(
                &nts.referenced,
                "has no NTS: use provider chrony for NTS sources",
            );
        }
        if let Some(key) = &source.key {
            refuse(
                &key.referenced,
                "has no symmetric keys: remove `key`, or use provider chrony or ntpd",
            );
        }
        if source.port.is_some() {
            refuse(
                &at,
                "always asks port 123: remove `port`, or use provider chrony or embedded",
            );
        }
        if source.prefer {
            refuse(
                &at,
                "has no `prefer`: it tries its servers in the order listed, so put the preferred one first",
            );
        }
        if let Some(max) = &source.max_sources {
            refuse(
                &max.referenced,
                "uses one server at a time, also of a pool: remove `maxSources`",
            );
        }
    }

    /// One source: exactly one of server and pool, maxSources, the poll range.
    fn check_source(
        &self,
        source: &Source,
        provider: ProviderKind,
        (poll_min, poll_max): (i8, i8),
        out: &mut Vec<Diagnostic>,
    ) {
        let at = source
            .server
            .as_ref()
            .or(source.pool.as_ref())
            .map(|h| h.referenced);
        match (&source.server, &source.pool) {
            (Some(_), Some(p)) => out.push(self.diagnostic(
                &p.referenced,
                "a source has both `server` and `pool`: expected exactly one of them",
            )),
            (None, None) => out.push(self.diagnostic(
                &at.unwrap_or(self.timesync.sources.referenced),
                "a source has neither `server` nor `pool`: expected exactly one of them",
            )),
            _ => {}
        }
        if let (Some(max), false) = (&source.max_sources, source.is_pool()) {
            out.push(self.diagnostic(
                &max.referenced,
                "maxSources applies only to a `pool` source",
            ));
        }
        if let Some(max) = &source.max_sources
            && !(1..=16).contains(&max.value)
        {
            out.push(self.diagnostic(
                &max.referenced,
                format!("invalid maxSources {}: expected 1 to 16", max.value),
            ));
        }
        for poll in [&source.minpoll, &source.maxpoll].into_iter().flatten() {
            if !(poll_min..=poll_max).contains(&poll.value) {
                out.push(self.diagnostic(
                    &poll.referenced,
                    format!(
                        "invalid poll exponent {}: provider {} accepts {poll_min} to {poll_max} (a power of two in seconds)",
                        poll.value,
                        provider.name()
                    ),
                ));
            }
        }
        if let (Some(min), Some(max)) = (&source.minpoll, &source.maxpoll)
            && min.value > max.value
        {
            out.push(self.diagnostic(
                &min.referenced,
                format!(
                    "minpoll {} is greater than maxpoll {}: expected minpoll <= maxpoll",
                    min.value, max.value
                ),
            ));
        }
    }

    /// One source's authentication and port, for what the provider has.
    fn check_source_auth(
        &self,
        source: &Source,
        provider: ProviderKind,
        key_ids: &[u32],
        out: &mut Vec<Diagnostic>,
    ) {
        let at = source
            .server
            .as_ref()
            .or(source.pool.as_ref())
            .map(|h| h.referenced);
        if let Some(nts) = &source.nts
            && nts.value
            && source.key.is_some()
        {
            out.push(self.diagnostic(
                &nts.referenced,
                "a source cannot use both nts and a symmetric key",
            ));
        }
        if let Some(port) = &source.nts_port {
            if !source.nts.as_ref().is_some_and(|n| n.value) {
                out.push(self.diagnostic(
                    &port.referenced,
                    "ntsPort applies only to a source with `nts: true`",
                ));
            } else if port.value == 0 {
                out.push(self.diagnostic(
                    &port.referenced,
                    "invalid ntsPort 0: expected a TCP port 1 to 65535",
                ));
            } else if !matches!(provider, ProviderKind::Embedded | ProviderKind::Chrony) {
                out.push(self.diagnostic(
                    &port.referenced,
                    format!(
                        "ntsPort is written for provider embedded and chrony, not {}: remove it",
                        provider.name()
                    ),
                ));
            }
        }
        if let Some(key) = &source.key {
            if !key_ids.contains(&key.value) {
                out.push(self.diagnostic(
                    &key.referenced,
                    format!(
                        "key {} is not defined: expected one of the ids under `keys` ({})",
                        key.value,
                        if key_ids.is_empty() {
                            "none defined".to_string()
                        } else {
                            key_ids
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                ));
            }
            if provider == ProviderKind::Embedded {
                out.push(self.diagnostic(
                    &key.referenced,
                    "symmetric keys are not supported by the embedded engine yet",
                ));
            }
        }
        if source.port.is_some() && provider == ProviderKind::Ntpd {
            out.push(self.diagnostic(
                &at.unwrap_or(self.timesync.sources.referenced),
                "ntpd cannot use a server on another port than 123: remove `port` or use provider chrony or embedded",
            ));
        }
        if source.port == Some(0) {
            out.push(self.diagnostic(
                &at.unwrap_or(self.timesync.sources.referenced),
                "invalid port 0: expected 1 to 65535",
            ));
        }
    }
}

/// What is wrong with an `extraConfig` text, if anything. It is copied
/// into the config file as lines, so newlines (and tabs, which both
/// daemons read as spaces) are its point; any other control character (a
/// carriage return, a NUL, an escape) is a pasting accident that the
/// daemon would read in its own way.
fn extra_config_problem(text: &str) -> Option<String> {
    text.split('\n').enumerate().find_map(|(n, line)| {
        line.chars()
            .find(|c| c.is_control() && *c != '\t')
            .map(|c| {
                format!(
                    "extraConfig line {} contains {}: expected lines of text (newlines and tabs only)",
                    n + 1,
                    values::describe_char(c)
                )
            })
    })
}
