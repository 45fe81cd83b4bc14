//! ntpd: ntp.conf for ntpsec (Debian 11+, Fedora) or classic ntp (RHEL 7,
//! older Debian and Ubuntu), and its key file.

use std::net::IpAddr;

use serde::Serialize;

use super::shared::{Dialect, Serving, daemon_context, key_lines, render, serving, source_lines};
use super::{config_content, config_file, error_at, key_file};
use crate::facts::{DaemonPaths, Facts};
use crate::resource::FileResource;
use crate::spec::{Cidr, Spec, SpecError};

const TEMPLATE: &str = include_str!("templates/ntp.conf.tera");

/// `restrict` address form that both ntpsec and classic ntp read:
/// "10.0.0.0 mask 255.0.0.0", "-6 2001:db8:: mask ffff:ffff::".
fn restrict_address(net: &Cidr) -> String {
    let net = net.0;
    match (net.network(), net.netmask()) {
        (IpAddr::V4(addr), IpAddr::V4(mask)) => format!("{addr} mask {mask}"),
        (addr, mask) => format!("-6 {addr} mask {mask}"),
    }
}

/// Serving as ntp.conf writes it: networks as `restrict` addresses.
#[derive(Serialize)]
struct RestrictServe {
    listen: Vec<IpAddr>,
    allow: Vec<String>,
    deny: Vec<String>,
    rate_limit: bool,
    local_stratum: Option<u8>,
}

impl From<Serving> for RestrictServe {
    fn from(s: Serving) -> RestrictServe {
        RestrictServe {
            listen: s.listen,
            allow: s.allow.iter().map(restrict_address).collect(),
            deny: s.deny.iter().map(restrict_address).collect(),
            rate_limit: s.rate_limit,
            local_stratum: s.local_stratum,
        }
    }
}

/// What ntpd cannot do as asked: errors at the value, and notes for what
/// it does differently.
fn limits(spec: &Spec, paths: &DaemonPaths) -> Result<Vec<String>, SpecError> {
    let ts = &spec.timesync;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for s in &ts.sources.value {
        if let Some(nts) = &s.nts
            && nts.value
            && !paths.ntpsec
        {
            problems.push(error_at(
                spec,
                &nts.referenced,
                "nts needs ntpsec, but ntpd on this distribution is classic ntp: use provider chrony for NTS".into(),
            ));
        }
        if let Some(m) = &s.max_sources {
            notes.push(format!(
                "ntpd has no per-pool maxSources; {} of pool {} is not written (ntpd uses `tos maxclock` for all sources)",
                m.value,
                s.host()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(SpecError::Invalid(problems));
    }
    if let Some(step) = &ts.step
        && step.limit.value != 3
        && step.limit.value != -1
    {
        notes.push(
            "ntpd has no step limit: it steps whenever the offset exceeds the threshold".into(),
        );
    }
    Ok(notes)
}

pub(super) fn files(
    spec: &Spec,
    _facts: &Facts,
    paths: &DaemonPaths,
) -> Result<(Vec<FileResource>, Vec<String>), SpecError> {
    let notes = limits(spec, paths)?;
    let keys = key_lines(spec);
    let keyfile = (!keys.is_empty()).then(|| paths.keyfile.clone()).flatten();
    let sources = source_lines(spec, Dialect::Ntpd);

    let mut context = daemon_context(spec, paths, &sources, keyfile.as_deref());
    context.insert(
        "source_hosts",
        &sources.iter().map(|s| s.host.clone()).collect::<Vec<_>>(),
    );
    // `restrict source` (ntp 4.2.8+, ntpsec) lets replies from servers and
    // pool members in; classic 4.2.6 needs one line per server instead.
    context.insert("restrict_source", &paths.ntpsec);
    context.insert(
        "leapfile",
        &paths
            .ntpsec
            .then_some("/usr/share/zoneinfo/leap-seconds.list"),
    );
    context.insert(
        "trusted_keys",
        &keys
            .iter()
            .map(|k| k.id.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    context.insert("serve", &serving(spec).map(RestrictServe::from));
    let whole = render("ntp.conf", TEMPLATE, &context);

    let content = config_content(spec.timesync.config, whole, &sources);
    let mut files = vec![config_file(
        paths.config.clone(),
        content,
        format!("{} configuration", paths.label),
    )];
    if let Some(keyfile) = keyfile {
        files.push(key_file(keyfile, &keys, 0o600, "root", "ntpd key file"));
    }
    Ok((files, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_addresses_use_masks() {
        assert_eq!(
            restrict_address(&"10.0.0.0/8".parse().unwrap()),
            "10.0.0.0 mask 255.0.0.0"
        );
        assert_eq!(
            restrict_address(&"192.168.1.0/24".parse().unwrap()),
            "192.168.1.0 mask 255.255.255.0"
        );
        assert_eq!(
            restrict_address(&"2001:db8::/32".parse().unwrap()),
            "-6 2001:db8:: mask ffff:ffff::"
        );
    }
}
