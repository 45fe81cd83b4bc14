//! Providers compile a desired-state file and the host's facts into the
//! resources that must exist: the conflicting daemons stopped, the chosen
//! daemon's package, its config files (rendered with tera templates), the
//! firewall opening, and the daemon enabled and running. Providers do no
//! I/O: what the host looks like now is the resources' business.

mod chrony;
mod ntpd;

use std::path::PathBuf;

use serde::Serialize;

use crate::facts::{Daemon, DaemonPaths, Facts};
use crate::resource::{
    FileContent, FileResource, FirewallResource, PackageResource, Resource, ServiceResource,
    ServiceRole,
};
use crate::spec::{ConflictPolicy, Diagnostic, FirewallMode, ProviderKind, Spec, SpecError};

/// Everything a host must look like, in the order it must be done.
#[derive(Debug, Clone)]
pub struct Desired {
    pub daemon: DaemonPaths,
    pub resources: Vec<Resource>,
    pub firewall: FirewallMode,
    pub conflicts: ConflictPolicy,
    /// Step the clock once during apply.
    pub step_now: bool,
    pub verify: Option<VerifyPlan>,
    /// Things the user should know that are not changes.
    pub notes: Vec<String>,
}

/// What "synchronised" means after apply.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VerifyPlan {
    pub synchronized: bool,
    pub within_seconds: f64,
    pub max_offset_seconds: Option<f64>,
}

/// Compile the spec for this host.
pub fn compile(spec: &Spec, facts: &Facts) -> Result<Desired, SpecError> {
    let ts = &spec.timesync;
    let (daemon, files, notes) = match spec.provider() {
        ProviderKind::Chrony => {
            let paths = facts.daemon(Daemon::Chrony);
            let (files, notes) = chrony::files(spec, facts, &paths)?;
            (paths, files, notes)
        }
        ProviderKind::Ntpd => {
            let paths = facts.daemon(Daemon::Ntpd);
            let (files, notes) = ntpd::files(spec, facts, &paths)?;
            (paths, files, notes)
        }
        ProviderKind::Embedded => {
            let at = ts
                .provider
                .as_ref()
                .map(|p| p.referenced)
                .unwrap_or(ts.sources.referenced);
            return Err(SpecError::Invalid(vec![spec.diagnostic(
                &at,
                "provider embedded is not available yet: use provider chrony or ntpd",
            )]));
        }
    };

    let mut resources = Vec::new();
    let chosen = daemon.daemon;
    for other in facts.conflicting(chosen) {
        // Two names for one unit (openntpd and ntpd on RHEL share
        // ntpd.service) must never stop the chosen daemon.
        if other.unit == daemon.unit {
            continue;
        }
        let (enabled, masked) = match ts.conflicts {
            ConflictPolicy::Disable | ConflictPolicy::Fail => (Some(false), None),
            ConflictPolicy::Stop => (None, None),
            ConflictPolicy::Mask => (Some(false), Some(true)),
        };
        resources.push(Resource::Service(ServiceResource {
            unit: other.unit.clone(),
            role: ServiceRole::Conflicting,
            enabled,
            running: Some(false),
            masked,
            reason: format!(
                "{} conflicts with {}: only one daemon may own the clock",
                other.label, daemon.label
            ),
            restart_on: Vec::new(),
        }));
    }
    if let Some(package) = &daemon.package {
        resources.push(Resource::Package(PackageResource {
            name: package.clone(),
            present: true,
            purpose: daemon.label.clone(),
        }));
    }
    let restart_on: Vec<String> = files
        .iter()
        .map(|f| format!("file:{}", f.path.display()))
        .collect();
    resources.extend(files.into_iter().map(Resource::File));
    if ts.firewall != FirewallMode::None {
        let open = spec.wants_open_port();
        let reason = match &ts.serve {
            Some(serve) if open => format!(
                "this host serves time to {}",
                serve
                    .allow
                    .value
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "openFirewall: true".to_string(),
        };
        resources.push(Resource::Firewall(FirewallResource { open, reason }));
    }
    resources.push(Resource::Service(ServiceResource {
        unit: daemon.unit.clone(),
        role: ServiceRole::Chosen,
        enabled: Some(true),
        running: Some(true),
        masked: Some(false),
        reason: format!("{} is the chosen time daemon", daemon.label),
        restart_on,
    }));

    Ok(Desired {
        daemon,
        resources,
        firewall: ts.firewall,
        conflicts: ts.conflicts,
        step_now: ts.step.as_ref().is_some_and(|s| s.now),
        verify: ts.verify.as_ref().map(|v| VerifyPlan {
            synchronized: v.synchronized,
            within_seconds: v.within.as_secs_f64(),
            max_offset_seconds: v.max_offset.map(|d| d.as_secs_f64()),
        }),
        notes,
    })
}

/// Render one of the built-in templates.
fn render(name: &str, template: &str, context: &tera::Context) -> String {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(Vec::<&str>::new());
    // The templates are part of the binary and covered by tests; a failure
    // here is a programming error, not a user error.
    tera.add_raw_template(name, template)
        .and_then(|()| tera.render(name, context))
        .unwrap_or_else(|e| panic!("built-in template {name} failed: {e:?}"))
}

/// A managed whole-file resource owned by root.
fn config_file(path: PathBuf, content: FileContent, purpose: String) -> FileResource {
    FileResource {
        path,
        content,
        mode: 0o644,
        owner: "root".into(),
        group: "root".into(),
        sensitive: false,
        purpose,
        unit_file: false,
    }
}

/// A diagnostic at a value of the spec.
fn error_at(spec: &Spec, at: &serde_saphyr::Location, message: String) -> Diagnostic {
    spec.diagnostic(at, message)
}

/// Seconds as config files write them: `1`, `0.5`, `0.128`.
fn seconds(d: &crate::spec::Duration) -> String {
    let s = d.as_secs_f64();
    let text = format!("{s:.6}");
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

#[cfg(test)]
mod tests;
