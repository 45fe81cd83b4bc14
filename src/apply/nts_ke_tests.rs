//! TCP 4460 (NTS-KE) next to UDP 123 on the in-memory host: the plan shows
//! both openings, apply opens both, a second plan is empty, only what
//! timectl opened is closed, and a rollback puts both back.
//!
//! The host serves NTS when the spec has `serve.nts` ([`serve_nts`]); the
//! tests go through the real plan, apply and convergence check, and the
//! resource-level ones plan a [`FirewallResource`] directly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::tests::{Fixture, ntpsec_host};
use super::*;
use crate::facts::Facts;
use crate::host::FirewallState;
use crate::host::memory::{MemoryHost, Op, Times};
use crate::resource::binary::EngineBinary;
use crate::resource::firewall::FirewallObservation;
use crate::resource::{
    Action, ChangeKind, Converge, FirewallResource, PlanContext, ResourceId, hash_of,
};

fn quiet(_: Progress<'_>) {}

fn firewall(open: bool, nts_ke: bool) -> FirewallResource {
    FirewallResource {
        open,
        nts_ke,
        reason: "this host serves time to 10.0.0.0/8".into(),
    }
}

/// The changes `resource` plans on the fixture's host.
fn firewall_changes(f: &Fixture, resource: &FirewallResource) -> Vec<crate::resource::Change> {
    let facts = Facts::detect_in(&f.host.files).unwrap();
    let engine = EngineBinary::Copy {
        path: PathBuf::from(crate::provider::INSTALLED_BINARY),
        source: f.host.timectl_binary.clone(),
    };
    let desired = crate::provider::compile(&f.spec, &facts, &engine).unwrap();
    let changed = BTreeSet::new();
    let ctx = PlanContext {
        host: &f.host,
        changed: &changed,
        daemon: &desired.daemon,
        conflicts: desired.conflicts,
        firewall: desired.firewall,
    };
    let observed = resource.observe(&ctx).unwrap();
    resource.diff(&observed, &ctx).unwrap().changes
}

/// Makes the fixture's spec serve NTS too (`serve.nts`), or not.
fn serve_nts(f: &mut Fixture, nts: bool) {
    let text = if nts {
        super::tests::SWITCH.replace(
            "serve: { allow: [10.0.0.0/8] }",
            "serve: { allow: [10.0.0.0/8], nts: { certificate: /etc/ssl/ntp.pem, key: /etc/ssl/ntp.key } }",
        )
    } else {
        super::tests::SWITCH.to_string()
    };
    assert_eq!(text.contains("nts:"), nts);
    f.spec = Spec::parse(Path::new("site.yaml"), text).unwrap();
}

fn plan_of(f: &Fixture) -> Plan {
    plan::build(&f.spec, &f.host).unwrap()
}

fn apply_plan(f: &Fixture, plan: &Plan) -> Report {
    apply(plan, &f.spec, &f.host, &mut quiet).unwrap()
}

fn firewall_summaries(plan: &Plan) -> Vec<String> {
    (plan.changes.iter())
        .filter(|c| c.resource == ResourceId::Firewall)
        .map(|c| c.summary.clone())
        .collect()
}

fn ports(memory: &MemoryHost) -> [(bool, bool); 2] {
    let s = memory.state();
    [
        (s.firewall_open, s.firewall_opened_by_timectl),
        (s.nts_ke_open, s.nts_ke_opened_by_timectl),
    ]
}

#[test]
fn both_ports_open_in_their_own_lines_and_a_second_plan_is_empty() {
    let mut f = ntpsec_host();
    serve_nts(&mut f, true);
    let plan = plan_of(&f);
    assert_eq!(
        firewall_summaries(&plan),
        [
            "open UDP 123 in the firewall (in memory): udp dport 123 accept",
            "open TCP 4460 (NTS-KE) in the firewall (in memory): tcp dport 4460 accept",
        ]
    );
    let actions: Vec<&Action> = (plan.changes.iter())
        .filter(|c| c.resource == ResourceId::Firewall)
        .map(|c| &c.action)
        .collect();
    assert_eq!(actions, [&Action::OpenFirewall, &Action::OpenNtsKe]);
    assert!(
        plan.changes
            .iter()
            .all(|c| c.resource != ResourceId::Firewall || c.kind == ChangeKind::Add)
    );

    let report = apply_plan(&f, &plan);
    assert_eq!(report.outcome, Outcome::Converged, "{:?}", report.error);
    let log = f.memory.log();
    let open = log.iter().position(|l| l == "Open").unwrap();
    assert_eq!(log[open + 1], "Open nts-ke", "{log:?}");
    assert_eq!(ports(&f.memory), [(true, true), (true, true)]);

    // Idempotent: nothing left to open, and applying again changes nothing.
    assert!(firewall_changes(&f, &firewall(true, true)).is_empty());
    let again = plan_of(&f);
    assert!(again.is_empty(), "{:?}", again.changes);
    let before = f.memory.log().len();
    let report = apply_plan(&f, &again);
    assert_eq!(report.outcome, Outcome::NoChanges);
    assert_eq!(f.memory.log().len(), before);
}

#[test]
fn ntp_without_nts_closes_the_tcp_4460_timectl_opened_and_keeps_udp_123() {
    let mut f = ntpsec_host();
    serve_nts(&mut f, true);
    let report = apply_plan(&f, &plan_of(&f));
    assert_eq!(report.outcome, Outcome::Converged, "{:?}", report.error);
    serve_nts(&mut f, false);
    // NTP still served, NTS no longer.
    let plan = plan_of(&f);
    // chrony.conf loses its NTS lines (and chrony restarts); the firewall
    // closes TCP 4460 and nothing else.
    let firewall: Vec<_> = (plan.changes.iter())
        .filter(|c| c.resource == ResourceId::Firewall)
        .collect();
    assert_eq!(firewall.len(), 1, "{:?}", plan.changes);
    let change = firewall[0];
    assert_eq!(change.action, Action::CloseNtsKe);
    assert_eq!(change.kind, ChangeKind::Remove);
    assert_eq!(
        change.summary,
        "close TCP 4460 (NTS-KE) in the firewall (in memory): remove what timectl opened (tcp dport 4460 accept)"
    );
    assert!(change.reason.contains("does not serve NTS"), "{change:?}");
    let report = apply_plan(&f, &plan);
    assert_eq!(report.outcome, Outcome::Converged, "{:?}", report.error);
    let log = f.memory.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("Close"))
            .collect::<Vec<_>>(),
        ["Close nts-ke"],
        "{log:?}"
    );
    assert_eq!(ports(&f.memory), [(true, true), (false, false)]);
    assert!(plan::build(&f.spec, &f.host).unwrap().is_empty());
}

#[test]
fn not_serving_closes_both_ports_timectl_opened() {
    let mut f = ntpsec_host();
    serve_nts(&mut f, true);
    let report = apply_plan(&f, &plan_of(&f));
    assert_eq!(report.outcome, Outcome::Converged, "{:?}", report.error);
    serve_nts(&mut f, false);
    let changes = firewall_changes(&f, &firewall(false, false));
    let actions: Vec<&Action> = changes.iter().map(|c| &c.action).collect();
    assert_eq!(actions, [&Action::CloseFirewall, &Action::CloseNtsKe]);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Remove));
    // nts_ke without open asks for nothing to be open either.
    let also = firewall_changes(&f, &firewall(false, true));
    assert_eq!(also, changes);
}

#[test]
fn an_admins_tcp_4460_is_neither_opened_again_nor_closed() {
    let f = ntpsec_host();
    // Both opened by the administrator (the clone shares the state).
    let _ = f
        .memory
        .clone()
        .with_nts_ke_open(true)
        .with_firewall_open(true);
    assert!(firewall_changes(&f, &firewall(true, true)).is_empty());
    assert!(firewall_changes(&f, &firewall(true, false)).is_empty());
    assert!(firewall_changes(&f, &firewall(false, false)).is_empty());
    assert_eq!(ports(&f.memory), [(true, false), (true, false)]);
}

#[test]
fn rollback_when_opening_tcp_4460_fails_closes_udp_123_again() {
    let mut f = ntpsec_host();
    serve_nts(&mut f, true);
    let before = f.memory.state();
    f.memory.fail(Op::Open, "nts-ke", Times::Always);
    let report = apply_plan(&f, &plan_of(&f));
    assert_eq!(report.outcome, Outcome::RolledBack, "{:?}", report.error);
    assert!(report.not_restored.is_empty(), "{:?}", report.not_restored);
    let log = f.memory.log();
    let open = log.iter().position(|l| l == "Open").unwrap();
    // Opening TCP 4460 failed (not logged); UDP 123 is closed again.
    assert_eq!(log[open + 1], "Close", "{log:?}");
    assert!(!log.iter().any(|l| l == "Open nts-ke"), "{log:?}");
    assert_eq!(f.memory.state(), before);
}

#[test]
fn rollback_after_both_opened_closes_both() {
    let mut f = ntpsec_host();
    serve_nts(&mut f, true);
    let before = f.memory.state();
    f.memory.fail(Op::Enable, "chrony.service", Times::Always);
    let report = apply_plan(&f, &plan_of(&f));
    assert_eq!(report.outcome, Outcome::RolledBack, "{:?}", report.error);
    assert!(report.not_restored.is_empty(), "{:?}", report.not_restored);
    let log = f.memory.log();
    let closes: Vec<&String> = log.iter().filter(|l| l.starts_with("Close")).collect();
    // Undone in reverse order.
    assert_eq!(closes, ["Close nts-ke", "Close"], "{log:?}");
    assert_eq!(f.memory.state(), before);
    assert_eq!(ports(&f.memory), [(false, false), (false, false)]);
}

#[test]
fn the_fingerprint_is_unchanged_where_nts_plays_no_part() {
    let f = ntpsec_host();
    let seen = |nts_ke: FirewallState| FirewallObservation::Seen {
        backend: Box::new(f.memory.clone()),
        state: FirewallState {
            ntp_open: false,
            detail: "udp dport 123 accept".into(),
            opened_by_timectl: false,
        },
        nts_ke,
    };
    let closed = FirewallState {
        ntp_open: false,
        detail: "tcp dport 4460 accept".into(),
        opened_by_timectl: false,
    };
    let ntp_only = FirewallState {
        ntp_open: false,
        detail: "udp dport 123 accept".into(),
        opened_by_timectl: false,
    };
    // As it was computed before TCP 4460 was managed.
    let old = Some(hash_of(&ntp_only));
    assert_eq!(
        firewall(true, false).fingerprint(&seen(closed.clone())),
        old
    );
    assert_eq!(
        firewall(false, false).fingerprint(&seen(closed.clone())),
        old
    );
    // An admin's opening of TCP 4460 does not matter to this plan either.
    let admin = FirewallState {
        ntp_open: true,
        ..closed.clone()
    };
    assert_eq!(firewall(true, false).fingerprint(&seen(admin)), old);
    // Wanted, or timectl's own: it counts.
    assert_ne!(firewall(true, true).fingerprint(&seen(closed.clone())), old);
    let ours = FirewallState {
        ntp_open: true,
        opened_by_timectl: true,
        ..closed
    };
    assert_ne!(firewall(true, false).fingerprint(&seen(ours)), old);
}
