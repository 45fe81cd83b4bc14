//! Plans: the ordered changes that converge a host, each with its reason,
//! plus a fingerprint of everything observed so that a saved plan can be
//! refused when the host changed after it was made. Plans are data: they
//! are rendered by `render` and carried out by `apply`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::{Facts, FactsError};
use crate::host::{Host, HostError, Mode};
use crate::provider::{self, VerifyPlan};
use crate::resource::binary::{self, EngineBinary};
use crate::resource::file::sha256_hex;
use crate::resource::{Action, Change, ChangeKind, Resource, ServiceRole};
use crate::spec::{ConflictPolicy, ProviderKind, Spec, SpecError};

/// Version of the saved-plan and `--json` formats (docs/json-format.md).
pub const FORMAT_VERSION: u32 = 1;

/// Everything `apply` needs, and everything a reviewer wants to see.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub timectl_version: String,
    /// Seconds since the Unix epoch when the plan was made.
    pub created_at: u64,
    pub root: PathBuf,
    pub mode: Mode,
    pub os: String,
    pub family: String,
    pub provider: String,
    /// The daemon that will own the clock ("chronyd").
    pub daemon: String,
    pub unit: String,
    pub spec_path: String,
    pub spec_sha256: String,
    /// The desired-state text, so a saved plan can be re-checked.
    pub spec_text: String,
    pub changes: Vec<Change>,
    /// Things to know that are not changes.
    pub notes: Vec<String>,
    /// Reasons apply must refuse (the plan could not see everything).
    pub blockers: Vec<String>,
    /// A hash of each observed resource.
    pub observed: BTreeMap<String, String>,
    pub fingerprint: String,
    /// Step the clock once after the changes.
    pub step_now: bool,
    pub verify: Option<VerifyPlan>,
    /// The executable the embedded engine's unit runs (embedded provider
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_binary: Option<EngineBinary>,
}

/// Counts for the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.kind {
                ChangeKind::Add => s.add += 1,
                ChangeKind::Change => s.change += 1,
                ChangeKind::Remove => s.remove += 1,
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Save for a later `apply PLANFILE`. The file may hold key material,
    /// so only its owner can read it: it is always written as a new file,
    /// mode 0600, that atomically replaces what was there (an existing
    /// 0644 file is not reused, and a reader never sees half a plan).
    pub fn save(&self, path: &Path) -> Result<(), PlanError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| PlanError::Other(format!("cannot encode plan: {e}")))?;
        crate::textfile::replace_file(path, format!("{text}\n").as_bytes(), 0o600)
            .map_err(|e| PlanError::Other(format!("cannot write {}: {e}", path.display())))
    }

    /// Whether a file looks like a saved plan rather than a spec.
    pub fn looks_like_plan(text: &str) -> bool {
        text.trim_start().starts_with('{') && text.contains("\"format_version\"")
    }

    pub fn from_json(path: &Path, text: &str) -> Result<Plan, PlanError> {
        let plan: Plan = serde_json::from_str(text).map_err(|e| {
            PlanError::Other(format!(
                "{}:{}:{}: not a valid saved plan: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        if plan.format_version != FORMAT_VERSION {
            return Err(PlanError::Other(format!(
                "{}: saved plan format {} is not supported (this timectl writes format {FORMAT_VERSION}); make a new plan",
                path.display(),
                plan.format_version
            )));
        }
        Ok(plan)
    }

    /// Refuse a saved plan when the host, the spec or timectl changed since.
    pub fn check_still_valid(&self, fresh: &Plan) -> Result<(), PlanError> {
        let mut reasons = Vec::new();
        if self.timectl_version != fresh.timectl_version {
            reasons.push(format!(
                "the plan was made by timectl {}, this is {}",
                self.timectl_version, fresh.timectl_version
            ));
        }
        if self.root != fresh.root || self.mode != fresh.mode {
            reasons.push(format!(
                "the plan is for {} ({}), this run is for {} ({})",
                self.root.display(),
                self.mode,
                fresh.root.display(),
                fresh.mode
            ));
        }
        for (id, hash) in &self.observed {
            match fresh.observed.get(id) {
                Some(now) if now == hash => {}
                Some(_) => reasons.push(format!("{id} changed")),
                None => reasons.push(format!("{id} is no longer managed")),
            }
        }
        for id in fresh.observed.keys() {
            if !self.observed.contains_key(id) {
                reasons.push(format!("{id} is newly managed"));
            }
        }
        if reasons.is_empty() && self.fingerprint != fresh.fingerprint {
            reasons.push("the observed state differs".into());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Stale(reasons))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error("{context}: {cause}")]
    Host { context: String, cause: HostError },
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the saved plan is stale: the host changed since it was made, so it was not applied:\n  - {}\nrun `timectl plan` again",
        .0.join("\n  - ")
    )]
    Stale(Vec<String>),
    #[error("{0}")]
    Other(String),
}

fn host_err(context: impl Into<String>) -> impl FnOnce(HostError) -> PlanError {
    let context = context.into();
    move |cause| PlanError::Host { context, cause }
}

/// Errors that mean "could not see", which a plan reports rather than
/// failing on (an unprivileged user planning a live host).
fn is_blindness(e: &HostError) -> bool {
    matches!(e, HostError::Permission(_) | HostError::Unavailable(_))
}

fn hash_of<T: Serialize>(value: &T) -> String {
    sha256_hex(&serde_json::to_vec(value).unwrap_or_default())
}

/// "cannot see X: why" lines with the same reason become one line naming
/// every X (an unreachable systemd would otherwise repeat itself per unit).
fn group_blockers(blockers: Vec<String>) -> Vec<String> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for line in blockers {
        let Some((subject, why)) = line
            .strip_prefix("cannot see ")
            .and_then(|rest| rest.split_once(": "))
        else {
            grouped.push((line, Vec::new()));
            continue;
        };
        match grouped.iter_mut().find(|(w, s)| !s.is_empty() && w == why) {
            Some((_, subjects)) => subjects.push(subject.to_string()),
            None => grouped.push((why.to_string(), vec![subject.to_string()])),
        }
    }
    grouped
        .into_iter()
        .map(|(why, subjects)| {
            if subjects.is_empty() {
                why
            } else {
                format!("cannot see {}: {why}", subjects.join(", "))
            }
        })
        .collect()
}

/// Observe the host and compute the changes that converge it to `spec`.
pub fn build(spec: &Spec, host: &Host) -> Result<Plan, PlanError> {
    let facts = Facts::detect_in(&host.files)?;
    let copy_to = Path::new(provider::INSTALLED_BINARY);
    let (engine, engine_note) = if spec.provider() == ProviderKind::Embedded {
        binary::choose(host, copy_to)
    } else {
        // Not used: no package queries for the other providers.
        (
            EngineBinary::Copy {
                path: copy_to.to_path_buf(),
                source: host.timectl_binary.clone(),
            },
            None,
        )
    };
    let desired = provider::compile(spec, &facts, &engine)?;
    let mut changes: Vec<Change> = Vec::new();
    let mut notes = desired.notes.clone();
    notes.extend(engine_note);
    let mut blockers = Vec::new();
    let mut observed = BTreeMap::new();
    let engine_binary = (spec.provider() == ProviderKind::Embedded).then_some(engine);
    if let Some(engine) = &engine_binary {
        // A package installed or removed after the plan makes it stale.
        observed.insert("engine-binary".to_string(), hash_of(engine));
    }
    let live = host.services.runs_units();
    if host.mode == Mode::Offline {
        notes.push(format!(
            "offline root {}: services are not started, stopped or restarted, only enabled or disabled at boot",
            host.root.display()
        ));
    }

    // A run that was killed is reported until it is rolled back or a later
    // run converges.
    match crate::apply::journal::interrupted(&host.files, false) {
        Ok(runs) => {
            for (i, run) in runs.iter().enumerate() {
                notes.insert(i, run.describe_interruption());
            }
        }
        Err(e @ HostError::OutsideRoot { .. }) => {
            return Err(host_err("reading the run journals")(e));
        }
        Err(e) => notes.push(format!("the run journals could not be read: {e}")),
    }

    if !host.manage_owners {
        notes.push(format!(
            "running as uid {}, not root: file owners are left as they are (only content and mode are managed)",
            nix::unistd::geteuid()
        ));
    }

    // The chosen daemon's package is installed earlier in the plan, so its
    // unit may not exist yet when the plan is made.
    let mut will_install = false;
    let mut changed: Vec<String> = Vec::new();
    let mut reload_pending = false;

    for resource in &desired.resources {
        let id = resource.id();
        match resource {
            Resource::Service(svc) => {
                let status = match svc.observe(host) {
                    Ok(s) => s,
                    Err(e) if is_blindness(&e) => {
                        blockers.push(format!("cannot see {}: {e}", svc.unit));
                        continue;
                    }
                    Err(e) => return Err(host_err(format!("observing {}", svc.unit))(e)),
                };
                observed.insert(id.clone(), hash_of(&status));
                // A conflicting daemon's unit name can be another name
                // (Alias=) of the chosen daemon's unit: systemd resolves it
                // to the chosen unit, which must never be stopped.
                if svc.role == ServiceRole::Conflicting
                    && status.name != svc.unit
                    && (status.name == desired.daemon.unit
                        || desired.daemon.unit_aliases.contains(&status.name))
                {
                    notes.push(format!(
                        "{} is another name of {}, the chosen daemon's unit: left alone",
                        svc.unit, status.name
                    ));
                    continue;
                }
                if svc.role == ServiceRole::Conflicting
                    && desired.conflicts == ConflictPolicy::Fail
                    && (status.enablement.is_enabled()
                        || status.activity.as_ref().is_some_and(|a| a.is_running()))
                {
                    return Err(PlanError::Conflict(format!(
                        "{} is {}{}, and the desired state says `conflicts: fail`: refusing to replace it with {} (use conflicts: disable to switch)",
                        svc.unit,
                        status.enablement,
                        status
                            .activity
                            .as_ref()
                            .map_or(String::new(), |a| format!(" and {a}")),
                        desired.daemon.label
                    )));
                }
                if svc.role == ServiceRole::Chosen && reload_pending && live {
                    changes.push(Change {
                        resource: "systemd".into(),
                        kind: ChangeKind::Change,
                        summary: "reload systemd unit files".into(),
                        reason: "a unit file or drop-in changed".into(),
                        diff: None,
                        action: Action::ReloadUnits,
                    });
                    reload_pending = false;
                }
                let plan = svc
                    .plan(host, &status, &changed, will_install)
                    .map_err(host_err(format!("planning {}", svc.unit)))?;
                changes.extend(plan);
            }
            Resource::Package(pkg) => {
                let obs = pkg.observe(host);
                if let crate::resource::package::PackageObservation::Unknown(why) = &obs {
                    notes.push(format!("package {} not checked: {why}", pkg.name));
                }
                observed.insert(id.clone(), hash_of(&obs));
                let plan = pkg
                    .plan(host, &obs)
                    .map_err(host_err(format!("planning package {}", pkg.name)))?;
                if !plan.is_empty() {
                    will_install = true;
                }
                changes.extend(plan);
            }
            Resource::File(file) => match file.plan(host) {
                Ok((obs, plan)) => {
                    observed.insert(id.clone(), hash_of(&obs));
                    if !plan.is_empty() {
                        changed.push(id.clone());
                        reload_pending |= file.unit_file;
                        // A unit file written in this plan: the unit
                        // exists by the time it is enabled.
                        will_install |= file.unit_file;
                    }
                    changes.extend(plan);
                }
                Err(e) if is_blindness(&e) => {
                    blockers.push(format!("cannot see {}: {e}", file.path.display()));
                }
                Err(e) => {
                    return Err(host_err(format!("observing {}", file.path.display()))(e));
                }
            },
            Resource::Binary(bin) => {
                let (obs, plan) = bin
                    .plan(host)
                    .map_err(host_err(format!("observing {}", bin.path.display())))?;
                observed.insert(id.clone(), hash_of(&obs));
                if !plan.is_empty() {
                    changed.push(id.clone());
                }
                changes.extend(plan);
            }
            Resource::Firewall(fw) => match host.firewall_backend(desired.firewall) {
                Ok(Some(backend)) => match backend.observe() {
                    Ok(state) => {
                        observed.insert(id.clone(), hash_of(&state));
                        changes.extend(
                            fw.plan(backend.as_ref(), &state)
                                .map_err(host_err("planning the firewall"))?,
                        );
                    }
                    Err(e) if is_blindness(&e) => {
                        blockers.push(format!(
                            "cannot see the firewall ({}): {e}",
                            backend.describe()
                        ));
                    }
                    Err(e) => return Err(host_err("observing the firewall")(e)),
                },
                Ok(None) => {
                    if fw.open {
                        notes.push(format!(
                                "UDP 123 should be open ({}), but no firewall backend was found: nothing to open",
                                fw.reason
                            ));
                    }
                }
                Err(e) if is_blindness(&e) => {
                    blockers.push(format!("cannot see the firewall: {e}"));
                }
                Err(e) => return Err(host_err("choosing the firewall backend")(e)),
            },
        }
    }

    let blockers = group_blockers(blockers);
    let spec_sha256 = sha256_hex(spec.source.as_bytes());
    let version = env!("CARGO_PKG_VERSION").to_string();
    let fingerprint = hash_of(&(&version, &spec_sha256, &host.root, host.mode, &observed));
    Ok(Plan {
        format_version: FORMAT_VERSION,
        timectl_version: version,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        root: host.root.clone(),
        mode: host.mode,
        os: facts.pretty_name.clone(),
        family: facts.family.to_string(),
        provider: spec.provider().name().to_string(),
        daemon: desired.daemon.label.clone(),
        unit: desired.daemon.unit.clone(),
        spec_path: spec.path.display().to_string(),
        spec_sha256,
        spec_text: spec.source.clone(),
        changes,
        notes,
        blockers,
        observed,
        fingerprint,
        step_now: desired.step_now,
        verify: desired.verify,
        engine_binary,
    })
}

#[cfg(test)]
mod tests;
