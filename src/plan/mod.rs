//! Plans: the ordered changes that converge a host, each with its reason,
//! plus a fingerprint of everything observed so that a saved plan can be
//! refused when the host changed after it was made. Plans are data: they
//! are rendered by `render` and carried out by `apply`.

pub mod blocker;
pub mod order;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::facts::{Facts, FactsError};
use crate::host::{Host, HostError, Mode};
use crate::provider::{self, Desired, VerifyPlan};
use crate::resource::binary::{self, EngineBinary};
use crate::resource::file::sha256_hex;
use crate::resource::{
    Change, ChangeKind, Converge, DiffError, PlanContext, Resource, ResourceId, hash_of,
};
use crate::spec::{ProviderKind, Spec, SpecError};

pub use blocker::Blocker;

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
    pub provider: ProviderKind,
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
    pub blockers: Vec<Blocker>,
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

/// What planning the resources one by one gathers.
#[derive(Default)]
struct Gathered {
    changes: Vec<Change>,
    notes: Vec<String>,
    blockers: Vec<Blocker>,
    observed: BTreeMap<String, String>,
    /// Resources with changes so far: the sources of edges.
    changed: BTreeSet<ResourceId>,
}

impl Gathered {
    /// Observe one resource and add its changes.
    fn add<R: Converge>(&mut self, resource: &R, ctx: &Context<'_>) -> Result<(), PlanError> {
        let id = resource.id();
        let ctx = ctx.for_resource(&self.changed);
        let observed = match resource.observe(&ctx) {
            Ok(observed) => observed,
            Err(e) if is_blindness(&e.cause) => {
                self.blockers.push(Blocker::CannotSee {
                    subjects: vec![e.subject],
                    why: e.cause.to_string(),
                });
                return Ok(());
            }
            Err(e) => return Err(host_err(e.context)(e.cause)),
        };
        if let Some(hash) = resource.fingerprint(&observed) {
            self.observed.insert(id.to_string(), hash);
        }
        let diff = resource.diff(&observed, &ctx).map_err(|e| match e {
            DiffError::Host { context, cause } => PlanError::Host { context, cause },
            DiffError::Conflict(why) => PlanError::Conflict(why),
        })?;
        if !diff.changes.is_empty() {
            self.changed.insert(id);
        }
        self.changes.extend(diff.changes);
        self.notes.extend(diff.notes);
        Ok(())
    }

    fn add_resource(&mut self, resource: &Resource, ctx: &Context<'_>) -> Result<(), PlanError> {
        match resource {
            Resource::File(r) => self.add(r, ctx),
            Resource::Binary(r) => self.add(r, ctx),
            Resource::Package(r) => self.add(r, ctx),
            Resource::Service(r) => self.add(r, ctx),
            Resource::Firewall(r) => self.add(r, ctx),
            Resource::SystemdUnits(r) => self.add(r, ctx),
        }
    }
}

/// The parts of a [`PlanContext`] that stay the same for every resource.
struct Context<'a> {
    host: &'a Host,
    desired: &'a Desired,
}

impl<'a> Context<'a> {
    fn for_resource(&self, changed: &'a BTreeSet<ResourceId>) -> PlanContext<'a> {
        PlanContext {
            host: self.host,
            changed,
            daemon: &self.desired.daemon,
            conflicts: self.desired.conflicts,
            firewall: self.desired.firewall,
        }
    }
}

/// The executable the embedded engine runs, and a note on the choice;
/// None for the other providers (no package queries for them).
fn engine_binary(spec: &Spec, host: &Host) -> (Option<EngineBinary>, Option<String>) {
    if spec.provider() != ProviderKind::Embedded {
        return (None, None);
    }
    let (engine, note) = binary::choose(host, Path::new(provider::INSTALLED_BINARY));
    (Some(engine), note)
}

/// Notes about the host rather than about a resource: an offline root,
/// interrupted runs, not running as root.
fn host_notes(host: &Host, notes: &mut Vec<String>) -> Result<(), PlanError> {
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
    Ok(())
}

/// Observe the host and compute the changes that converge it to `spec`.
pub fn build(spec: &Spec, host: &Host) -> Result<Plan, PlanError> {
    let facts = Facts::detect_in(&host.files)?;
    let (engine_binary, engine_note) = engine_binary(spec, host);
    // Not used by the other providers.
    let engine = engine_binary.clone().unwrap_or_else(|| EngineBinary::Copy {
        path: PathBuf::from(provider::INSTALLED_BINARY),
        source: host.timectl_binary.clone(),
    });
    let desired = provider::compile(spec, &facts, &engine)?;
    let mut gathered = Gathered {
        notes: desired.notes.clone(),
        ..Gathered::default()
    };
    gathered.notes.extend(engine_note);
    if let Some(engine) = &engine_binary {
        // A package installed or removed after the plan makes it stale.
        gathered
            .observed
            .insert("engine-binary".to_string(), hash_of(engine));
    }
    host_notes(host, &mut gathered.notes)?;
    let ctx = Context {
        host,
        desired: &desired,
    };
    for resource in order::sort(&desired.resources).map_err(PlanError::Other)? {
        gathered.add_resource(resource, &ctx)?;
    }
    Ok(assemble(
        spec,
        host,
        &facts,
        &desired,
        gathered,
        engine_binary,
    ))
}

/// The plan from what was gathered.
fn assemble(
    spec: &Spec,
    host: &Host,
    facts: &Facts,
    desired: &Desired,
    gathered: Gathered,
    engine_binary: Option<EngineBinary>,
) -> Plan {
    let spec_sha256 = sha256_hex(spec.source.as_bytes());
    let version = env!("CARGO_PKG_VERSION").to_string();
    let observed = gathered.observed;
    let fingerprint = hash_of(&(&version, &spec_sha256, &host.root, host.mode, &observed));
    Plan {
        format_version: FORMAT_VERSION,
        timectl_version: version,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        root: host.root.clone(),
        mode: host.mode,
        os: facts.pretty_name.clone(),
        family: facts.family.to_string(),
        provider: spec.provider(),
        daemon: desired.daemon.label.clone(),
        unit: desired.daemon.unit.clone(),
        spec_path: spec.path.display().to_string(),
        spec_sha256,
        spec_text: spec.source.clone(),
        changes: gathered.changes,
        notes: gathered.notes,
        blockers: blocker::group(gathered.blockers),
        observed,
        fingerprint,
        step_now: desired.step_now,
        verify: desired.verify.clone(),
        engine_binary,
    }
}

#[cfg(test)]
mod tests;
