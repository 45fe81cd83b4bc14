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
