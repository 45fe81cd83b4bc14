//! schemas/timectl.schema.json is what `timectl schema` prints; this fails
//! when the types change and the committed schema was not regenerated
//! (`cargo run -- schema > schemas/timectl.schema.json`).

#[test]
fn committed_schema_matches_the_types() {
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/timectl.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        committed,
        timectl::spec::json_schema(),
        "schemas/timectl.schema.json is stale: run `cargo run -- schema > schemas/timectl.schema.json`"
    );
}

#[test]
fn schema_rejects_unknown_keys_and_knows_the_design_keys() {
    let schema = timectl::spec::json_schema();
    let ts = &schema["$defs"]["TimeSync"];
    assert_eq!(ts["additionalProperties"], false);
    for key in [
        "provider",
        "sources",
        "minSources",
        "step",
        "serve",
        "firewall",
        "conflicts",
        "config",
        "verify",
        "metrics",
    ] {
        assert!(
            ts["properties"].get(key).is_some(),
            "{key} missing from the schema"
        );
    }
    let source = &schema["$defs"]["Source"]["properties"];
    for key in [
        "server",
        "pool",
        "iburst",
        "prefer",
        "nts",
        "minpoll",
        "maxpoll",
        "maxSources",
        "port",
    ] {
        assert!(source.get(key).is_some(), "{key} missing from Source");
    }
}

#[test]
fn schema_describes_the_metrics_endpoint() {
    let schema = timectl::spec::json_schema();
    let metrics = &schema["$defs"]["Metrics"];
    assert_eq!(metrics["additionalProperties"], false);
    assert_eq!(metrics["required"], serde_json::json!(["listen"]));
    assert!(metrics["properties"].get("allowRemote").is_some());
    assert_eq!(schema["$defs"]["ListenAddr"]["type"], "string");
}
