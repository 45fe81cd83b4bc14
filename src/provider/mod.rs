//! Providers compile a desired-state file and the host's facts into the
//! resources that must exist: the conflicting daemons stopped, the chosen
//! daemon's package, its config files (rendered with tera templates), the
//! firewall opening, and the daemon enabled and running. Providers do no
//! I/O: what the host looks like now is the resources' business.

mod chrony;
mod embedded;
mod ntpd;
mod shared;
mod timesyncd;

pub use embedded::{CONTROL_SOCKET, INSTALLED_BINARY};

use std::path::PathBuf;

use serde::Serialize;

use crate::facts::{Daemon, DaemonPaths, Facts};
use crate::resource::binary::EngineBinary;
use crate::resource::{
    FileContent, FileResource, FirewallResource, PackageResource, Resource, ResourceId,
    ServiceResource, ServiceRole, SystemdUnitsResource,
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
    /// Undo the apply when verification fails.
    #[serde(default = "yes")]
    pub rollback: bool,
}

fn yes() -> bool {
    true
}

/// Compile the spec for this host. `engine` is the executable the embedded
/// engine's unit runs (unused by the other providers).
pub fn compile(spec: &Spec, facts: &Facts, engine: &EngineBinary) -> Result<Desired, SpecError> {
    let ts = &spec.timesync;
    let (daemon, own, mut notes) = own_resources(spec, facts, engine)?;
    notes.extend(spec_notes(spec));

    let mut resources = conflicting_resources(spec, facts, &daemon);
    if let Some(package) = &daemon.package {
        resources.push(Resource::Package(PackageResource {
            name: package.clone(),
            present: true,
            purpose: daemon.label.clone(),
            after: resources.iter().map(Resource::id).collect(),
        }));
    }
    let restart_on: Vec<ResourceId> = own.iter().map(Resource::id).collect();
    resources.extend(own);
    resources.extend(firewall_resource(spec));
    let unit_files: Vec<ResourceId> = resources
        .iter()
        .filter(|r| matches!(r, Resource::File(f) if f.unit_file))
        .map(Resource::id)
        .collect();
    let installed_by = (daemon.package.iter())
        .map(|p| ResourceId::Package(p.clone()))
        .chain(unit_files.iter().cloned())
        .collect();
    resources.push(Resource::SystemdUnits(SystemdUnitsResource {
        reload_on: unit_files,
    }));
    resources.push(chosen_service(&daemon, restart_on, installed_by));

    Ok(Desired {
        daemon,
        resources,
        firewall: firewall_mode(spec),
        conflicts: ts.conflicts,
        step_now: ts.step.as_ref().is_some_and(|s| s.now) && ts.clock_control,
        verify: ts.verify.as_ref().map(|v| VerifyPlan {
            synchronized: v.synchronized,
            within_seconds: v.within.as_secs_f64(),
            max_offset_seconds: v.max_offset.map(|d| d.as_secs_f64()),
            rollback: v.rollback,
        }),
        notes,
    })
}

/// The chosen daemon's paths and the resources its provider owns (config
/// files, drop-ins, for the engine also its binary and unit), with notes.
fn own_resources(
    spec: &Spec,
    facts: &Facts,
    engine: &EngineBinary,
) -> Result<(DaemonPaths, Vec<Resource>, Vec<String>), SpecError> {
    let files = |(files, notes): (Vec<FileResource>, Vec<String>)| {
        (
            files.into_iter().map(Resource::File).collect::<Vec<_>>(),
            notes,
        )
    };
    Ok(match spec.provider() {
        ProviderKind::Chrony => {
            let paths = facts.daemon(Daemon::Chrony);
            let (own, notes) = files(chrony::files(spec, facts, &paths)?);
            (paths, own, notes)
        }
        ProviderKind::Ntpd => {
            let paths = facts.daemon(Daemon::Ntpd);
            let (own, notes) = files(ntpd::files(spec, facts, &paths)?);
            (paths, own, notes)
        }
        ProviderKind::Timesyncd => {
            let paths = facts.daemon(Daemon::Timesyncd);
            let (own, notes) = files(timesyncd::files(spec, facts, &paths)?);
            (paths, own, notes)
        }
        ProviderKind::Embedded => {
            let paths = facts.daemon(Daemon::Embedded);
            let (own, notes) = embedded::resources(spec, &paths, engine)?;
            (paths, own, notes)
        }
    })
}

/// Notes on spec settings that have no effect as written.
fn spec_notes(spec: &Spec) -> Vec<String> {
    let ts = &spec.timesync;
    let mut notes = Vec::new();
    if ts.step.as_ref().is_some_and(|s| s.now) && !ts.clock_control {
        notes.push(
            "step.now is ignored: clockControl is false, so the daemon may not step the clock"
                .into(),
        );
    }
    if spec.provider() == ProviderKind::Embedded && ts.config == crate::spec::ConfigMode::Edit {
        notes.push(
            "config: edit applies to chrony and ntpd files; the embedded engine's config is always managed whole".into(),
        );
    }
    notes
}

/// The conflicting daemons, stopped (and disabled or masked) as the
/// `conflicts` policy says, with any chrony drop-in timectl wrote earlier.
fn conflicting_resources(spec: &Spec, facts: &Facts, daemon: &DaemonPaths) -> Vec<Resource> {
    let (enabled, masked) = match spec.timesync.conflicts {
        ConflictPolicy::Disable | ConflictPolicy::Fail => (Some(false), None),
        ConflictPolicy::Stop => (None, None),
        ConflictPolicy::Mask => (Some(false), Some(true)),
    };
    let mut resources = Vec::new();
    for other in facts.conflicting(daemon.daemon) {
        // Two names for one unit (openntpd and ntpd on RHEL share
        // ntpd.service) must never stop the chosen daemon.
        if other.unit == daemon.unit {
            continue;
        }
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
            installed_by: Vec::new(),
            after: Vec::new(),
        }));
        // A drop-in timectl wrote when chrony was the chosen daemon goes
        // with it.
        if other.daemon == Daemon::Chrony {
            resources.push(Resource::File(FileResource {
                unit_file: true,
                ..config_file(
                    chrony::no_clock_control_drop_in(&other.unit),
                    FileContent::Absent,
                    format!("timectl's drop-in for {}", other.unit),
                )
            }));
        }
    }
    resources
}

/// The NTP port, open when the host serves time (or `openFirewall`), closed
/// otherwise; no resource with `firewall: none`.
fn firewall_resource(spec: &Spec) -> Option<Resource> {
    let ts = &spec.timesync;
    if ts.firewall == FirewallMode::None {
        return None;
    }
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
        _ if open => "openFirewall: true".to_string(),
        _ => "this host does not serve time (no `serve`, or openFirewall: false)".to_string(),
    };
    Some(Resource::Firewall(FirewallResource {
        open,
        reason,
        nts_ke: spec.serves_nts(),
    }))
}

/// The chosen daemon's service: enabled and running, restarted when one
/// of `restart_on` changes, after the systemd reload and the firewall.
fn chosen_service(
    daemon: &DaemonPaths,
    restart_on: Vec<ResourceId>,
    installed_by: Vec<ResourceId>,
) -> Resource {
    Resource::Service(ServiceResource {
        unit: daemon.unit.clone(),
        role: ServiceRole::Chosen,
        enabled: Some(true),
        running: Some(true),
        masked: Some(false),
        reason: format!("{} is the chosen time daemon", daemon.label),
        restart_on,
        installed_by,
        after: vec![ResourceId::SystemdUnits, ResourceId::Firewall],
    })
}

/// The firewall backend preference: the one place plan and apply read it.
pub fn firewall_mode(spec: &Spec) -> FirewallMode {
    spec.timesync.firewall
}

/// The config file's content: the whole rendered file (`config: managed`),
/// or an edit of the admin's file that swaps only its source lines.
fn config_content(
    mode: crate::spec::ConfigMode,
    whole: String,
    sources: &[shared::SourceLine],
) -> FileContent {
    match mode {
        crate::spec::ConfigMode::Managed => FileContent::Whole(whole),
        crate::spec::ConfigMode::Edit => FileContent::Edit(crate::resource::file::SourcesEdit {
            replaces: vec!["server".into(), "pool".into(), "peer".into()],
            lines: sources.iter().map(ToString::to_string).collect(),
            if_missing: whole,
        }),
    }
}

/// The symmetric key file (`id type secret` lines, the same for chrony and
/// ntpd): sensitive, readable by root and the daemon's group only.
fn key_file(
    path: PathBuf,
    keys: &[shared::KeyLine],
    mode: u32,
    group: &str,
    purpose: &str,
) -> FileResource {
    let mut context = tera::Context::new();
    context.insert("header", "Managed by timectl.");
    context.insert("keys", keys);
    FileResource {
        mode,
        group: group.into(),
        sensitive: true,
        ..config_file(
            path,
            FileContent::Whole(shared::render(
                "keys",
                include_str!("templates/keys.tera"),
                &context,
            )),
            purpose.into(),
        )
    }
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
        validate: None,
    }
}

/// A diagnostic at a value of the spec.
fn error_at(spec: &Spec, at: &serde_saphyr::Location, message: String) -> Diagnostic {
    spec.diagnostic(at, message)
}

#[cfg(test)]
mod tests;
