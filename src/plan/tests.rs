use super::group_blockers;

#[test]
fn blockers_with_one_cause_are_one_line() {
    let grouped = group_blockers(vec![
        "cannot see a.service: not available: no bus".into(),
        "cannot see the firewall: permission denied: nft".into(),
        "cannot see b.service: not available: no bus".into(),
        "something else".into(),
    ]);
    assert_eq!(
        grouped,
        [
            "cannot see a.service, b.service: not available: no bus",
            "cannot see the firewall: permission denied: nft",
            "something else",
        ]
    );
}
