use super::blocker::{Blocker, group};

fn cannot_see(subject: &str, why: &str) -> Blocker {
    Blocker::CannotSee {
        subjects: vec![subject.into()],
        why: why.into(),
    }
}

#[test]
fn blockers_with_one_cause_are_one_line() {
    let grouped = group(vec![
        cannot_see("a.service", "not available: no bus"),
        cannot_see("the firewall", "permission denied: nft"),
        cannot_see("b.service", "not available: no bus"),
        Blocker::Recorded("something else".into()),
    ]);
    let lines: Vec<String> = grouped.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "cannot see a.service, b.service: not available: no bus",
            "cannot see the firewall: permission denied: nft",
            "something else",
        ]
    );
}

#[test]
fn blockers_are_saved_as_their_words() {
    let blocker = cannot_see("a: b.service", "why: this");
    let json = serde_json::to_string(&blocker).unwrap();
    assert_eq!(json, "\"cannot see a: b.service: why: this\"");
    let back: Blocker = serde_json::from_str(&json).unwrap();
    assert_eq!(back.to_string(), blocker.to_string());
}

mod order {
    use crate::plan::order::sort;
    use crate::resource::{
        PackageResource, Resource, ResourceId, ServiceResource, ServiceRole, SystemdUnitsResource,
    };

    fn service(unit: &str, role: ServiceRole, installed_by: Vec<ResourceId>) -> Resource {
        Resource::Service(ServiceResource {
            unit: unit.into(),
            role,
            enabled: None,
            running: None,
            masked: None,
            reason: String::new(),
            restart_on: Vec::new(),
            installed_by,
            after: vec![ResourceId::SystemdUnits],
        })
    }

    fn ids(resources: &[&Resource]) -> Vec<String> {
        resources.iter().map(|r| r.id().to_string()).collect()
    }

    #[test]
    fn edges_order_resources_whatever_order_they_come_in() {
        let chosen = service(
            "chrony.service",
            ServiceRole::Chosen,
            vec![ResourceId::Package("chrony".into())],
        );
        let package = Resource::Package(PackageResource {
            name: "chrony".into(),
            present: true,
            purpose: String::new(),
            after: vec![ResourceId::Service("ntpsec.service".into())],
        });
        let old = service("ntpsec.service", ServiceRole::Conflicting, Vec::new());
        let reload = Resource::SystemdUnits(SystemdUnitsResource::default());
        let resources = [chosen, package, reload, old];
        assert_eq!(
            ids(&sort(&resources).unwrap()),
            [
                "systemd",
                "service:ntpsec.service",
                "package:chrony",
                "service:chrony.service"
            ]
        );
    }

    #[test]
    fn an_order_that_respects_the_edges_is_kept() {
        let resources = [
            Resource::SystemdUnits(SystemdUnitsResource::default()),
            service("a.service", ServiceRole::Conflicting, Vec::new()),
            service("b.service", ServiceRole::Conflicting, Vec::new()),
        ];
        assert_eq!(
            ids(&sort(&resources).unwrap()),
            ["systemd", "service:a.service", "service:b.service"]
        );
    }

    #[test]
    fn a_cycle_is_an_error_naming_its_resources() {
        let a = service(
            "a.service",
            ServiceRole::Chosen,
            vec![ResourceId::Service("b.service".into())],
        );
        let b = service(
            "b.service",
            ServiceRole::Chosen,
            vec![ResourceId::Service("a.service".into())],
        );
        let err = sort(&[a, b]).unwrap_err();
        assert!(
            err.contains("service:a.service, service:b.service"),
            "{err}"
        );
    }
}
