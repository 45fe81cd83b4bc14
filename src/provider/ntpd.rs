//! ntpd: ntp.conf for ntpsec (Debian 11+, Fedora) or classic ntp (RHEL 7,
//! older Debian and Ubuntu), and its key file.

use std::net::IpAddr;

use serde::Serialize;

use super::chrony::{key_lines, serve_context};
use super::{SourceLine, config_content, config_file, error_at, key_file, render, seconds};
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

#[derive(Serialize)]
struct RestrictServe {
    listen: Vec<String>,
    allow: Vec<String>,
    deny: Vec<String>,
    rate_limit: bool,
    local_stratum: Option<u8>,
}

pub(super) fn files(
    spec: &Spec,
    _facts: &Facts,
    paths: &DaemonPaths,
) -> Result<(Vec<FileResource>, Vec<String>), SpecError> {
    let ts = &spec.timesync;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut sources = Vec::new();
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
        sources.push(SourceLine::new(s, false));
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

    let keys = key_lines(spec);
    let keyfile = (!keys.is_empty()).then(|| paths.keyfile.clone()).flatten();
    let serve = serve_context(spec).map(|_| {
        let s = ts.serve.as_ref().map(|s| {
            (
                s.allow.value.iter().map(restrict_address).collect(),
                s.deny.iter().map(restrict_address).collect(),
            )
        });
        let (allow, deny) = s.unwrap_or_default();
        RestrictServe {
            listen: ts
                .serve
                .as_ref()
                .map(|s| s.listen.iter().map(|a| a.value.to_string()).collect())
                .unwrap_or_default(),
            allow,
            deny,
            rate_limit: ts.serve.as_ref().is_some_and(|s| s.rate_limit),
            local_stratum: ts
                .serve
                .as_ref()
                .and_then(|s| s.local_stratum.as_ref().map(|l| l.value)),
        }
    });
    let threshold = ts
        .step
        .as_ref()
        .map_or_else(|| "1".to_string(), |s| seconds(&s.threshold));

    let mut context = tera::Context::new();
    context.insert("header", "Managed by timectl.");
    context.insert("spec_path", &spec.path.display().to_string());
    context.insert("sources", &sources);
    context.insert(
        "source_hosts",
        &sources.iter().map(|s| s.host.clone()).collect::<Vec<_>>(),
    );
    // `restrict source` (ntp 4.2.8+, ntpsec) lets replies from servers and
    // pool members in; classic 4.2.6 needs one line per server instead.
    context.insert("restrict_source", &paths.ntpsec);
    context.insert("min_sources", &spec.min_sources());
    context.insert("step_threshold", &threshold);
    context.insert(
        "driftfile",
        &ts.driftfile.as_ref().map_or_else(
            || paths.driftfile.display().to_string(),
            |d| d.value.clone(),
        ),
    );
    context.insert(
        "leapfile",
        &paths
            .ntpsec
            .then_some("/usr/share/zoneinfo/leap-seconds.list"),
    );
    context.insert(
        "keyfile",
        &keyfile.as_ref().map(|k| k.display().to_string()),
    );
    context.insert(
        "trusted_keys",
        &keys
            .iter()
            .map(|k| k.id.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    context.insert("serve", &serve);
    context.insert(
        "extra_config",
        &ts.extra_config.as_ref().map(|e| e.value.trim_end()),
    );
    let whole = render("ntp.conf", TEMPLATE, &context);

    let content = config_content(ts.config, whole, &sources);
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
