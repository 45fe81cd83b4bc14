use super::*;

fn parse(text: &str) -> Result<Spec, SpecError> {
    Spec::parse(Path::new("t.yaml"), text.to_string())
}

/// The single diagnostic of a spec that must fail, as (line, column, message).
fn fails(text: &str) -> (u64, u64, String) {
    match parse(text) {
        Ok(_) => panic!("spec should have been rejected:\n{text}"),
        Err(e) => {
            let d = e.diagnostics();
            assert_eq!(d.len(), 1, "expected one problem, got: {e}");
            (d[0].line, d[0].column, d[0].message.clone())
        }
    }
}

const FULL: &str = "\
timesync:
  provider: chrony
  sources:
    - server: time.bora.net
      iburst: true
    - pool: 2.rhel.pool.ntp.org
      maxSources: 4
    - server: ntp.example.com
      nts: true
      prefer: true
      minpoll: 4
      maxpoll: 10
  minSources: 2
  step: { threshold: 1s, limit: 3, now: true }
  serve: { allow: [10.0.0.0/8], rateLimit: true }
  firewall: auto
  conflicts: disable
  config: managed
  verify: { synchronized: true, within: 60s, maxOffset: 100ms }
";

#[test]
fn the_design_example_is_valid() {
    let spec = parse(FULL).unwrap();
    let ts = &spec.timesync;
    assert_eq!(spec.provider(), ProviderKind::Chrony);
    assert_eq!(ts.sources.value.len(), 3);
    assert!(ts.sources.value[1].is_pool());
    assert_eq!(ts.sources.value[1].max_count(), 4);
    assert_eq!(spec.min_sources(), 2);
    let step = ts.step.as_ref().unwrap();
    assert_eq!(step.threshold, Duration::from_secs(1));
    assert_eq!(step.limit.value, 3);
    assert!(step.now);
    assert_eq!(
        ts.verify.as_ref().unwrap().max_offset,
        Some(Duration::from_millis(100))
    );
    assert!(spec.wants_open_port());
}

#[test]
fn defaults_are_the_safe_ones() {
    let spec = parse("timesync:\n  sources:\n    - server: 192.0.2.1\n").unwrap();
    assert_eq!(spec.provider(), ProviderKind::Embedded);
    let ts = &spec.timesync;
    assert!(ts.sources.value[0].iburst);
    assert_eq!(ts.conflicts, ConflictPolicy::Disable);
    assert_eq!(ts.config, ConfigMode::Managed);
    assert_eq!(ts.firewall, FirewallMode::Auto);
    assert!(ts.clock_control);
    assert!(!spec.wants_open_port());
    assert_eq!(spec.min_sources(), 1);
}

#[test]
fn unknown_key_is_reported_where_it_stands() {
    let (line, col, msg) =
        fails("timesync:\n  sources:\n    - server: a.example\n      ibrust: true\n");
    assert_eq!((line, col), (4, 7));
    assert!(msg.contains("unknown field `ibrust`"), "{msg}");
    assert!(
        msg.contains("iburst"),
        "should list what was expected: {msg}"
    );
}

#[test]
fn unknown_top_level_key() {
    let (line, col, msg) = fails("timesync:\n  sources: []\nntp: {}\n");
    assert_eq!((line, col), (3, 1));
    assert!(msg.contains("unknown field `ntp`"), "{msg}");
}

#[test]
fn wrong_type() {
    let (line, col, msg) =
        fails("timesync:\n  sources:\n    - server: a.example\n      iburst: often\n");
    assert_eq!((line, col), (4, 15));
    assert!(msg.contains("bool"), "{msg}");
}

#[test]
fn bad_provider_lists_the_choices() {
    let (line, col, msg) =
        fails("timesync:\n  provider: chronyd\n  sources:\n    - server: a.example\n");
    assert_eq!((line, col), (2, 13));
    assert!(
        msg.contains("chrony") && msg.contains("ntpd") && msg.contains("embedded"),
        "{msg}"
    );
}

#[test]
fn bad_address() {
    let (line, col, msg) = fails("timesync:\n  sources:\n    - server: 10.0.0.300\n");
    assert_eq!((line, col), (3, 15));
    assert!(
        msg.contains("10.0.0.300") && msg.contains("expected"),
        "{msg}"
    );
    let (line, _, msg) = fails("timesync:\n  sources:\n    - pool: bad_name.example\n");
    assert_eq!(line, 3);
    assert!(msg.contains("DNS label"), "{msg}");
}

#[test]
fn bad_duration() {
    let (line, col, msg) =
        fails("timesync:\n  sources:\n    - server: a.example\n  verify:\n    within: 60\n");
    assert_eq!((line, col), (5, 13));
    assert!(msg.contains("unit"), "{msg}");
    let (line, _, msg) =
        fails("timesync:\n  sources:\n    - server: a.example\n  step: { threshold: 1 parsec }\n");
    assert_eq!(line, 4);
    assert!(msg.contains("invalid duration"), "{msg}");
}

#[test]
fn bad_cidr() {
    let (line, col, msg) = fails(
        "timesync:\n  sources:\n    - server: a.example\n  serve:\n    allow: [10.0.0.0/33]\n",
    );
    assert_eq!((line, col), (5, 13));
    assert!(msg.contains("CIDR"), "{msg}");
}

#[test]
fn minpoll_above_maxpoll() {
    let (line, col, msg) = fails(
        "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n      minpoll: 8\n      maxpoll: 6\n",
    );
    assert_eq!((line, col), (5, 16));
    assert!(msg.contains("minpoll 8 is greater than maxpoll 6"), "{msg}");
}

#[test]
fn poll_range_depends_on_provider() {
    let text =
        "timesync:\n  provider: PROVIDER\n  sources:\n    - server: a.example\n      minpoll: -2\n";
    assert!(parse(&text.replace("PROVIDER", "chrony")).is_ok());
    let (line, _, msg) = fails(&text.replace("PROVIDER", "ntpd"));
    assert_eq!(line, 5);
    assert!(msg.contains("3 to 17"), "{msg}");
}

#[test]
fn min_sources_above_what_sources_give() {
    let (line, col, msg) = fails(
        "timesync:\n  sources:\n    - server: a.example\n    - server: b.example\n  minSources: 3\n",
    );
    assert_eq!((line, col), (5, 15));
    assert!(msg.contains("at most 2"), "{msg}");
    // A pool counts as up to maxSources servers.
    assert!(
        parse(
            "timesync:\n  sources:\n    - pool: p.example\n      maxSources: 3\n  minSources: 3\n"
        )
        .is_ok()
    );
}

#[test]
fn nts_only_where_the_provider_supports_it() {
    // The embedded engine and chrony do NTS, with a KE port and trust anchors.
    for provider in ["embedded", "chrony"] {
        assert!(
            parse(&format!(
                "timesync:\n  provider: {provider}\n  ntsTrustedCerts: /etc/ssl/corp-ca.pem\n  sources:\n    - server: a.example\n      nts: true\n      ntsPort: 14460\n  serve:\n    allow: [10.0.0.0/8]\n    nts: {{ certificate: /etc/ssl/ntp.crt, key: /etc/ssl/ntp.key }}\n"
            ))
            .is_ok(),
            "{provider}"
        );
    }
    // timesyncd has no NTS at all.
    let (line, col, msg) = fails(
        "timesync:\n  provider: timesyncd\n  sources:\n    - server: a.example\n      nts: true\n",
    );
    assert_eq!((line, col), (5, 12));
    assert!(msg.contains("has no NTS"), "{msg}");
    // An NTS-KE port on a source without NTS is a mistake.
    let (line, col, msg) =
        fails("timesync:\n  sources:\n    - server: a.example\n      ntsPort: 4460\n");
    assert_eq!((line, col), (4, 16));
    assert!(msg.contains("only to a source with `nts: true`"), "{msg}");
    let (_, _, msg) = fails(
        "timesync:\n  sources:\n    - server: a.example\n      nts: true\n      ntsPort: 0\n",
    );
    assert!(msg.contains("invalid ntsPort 0"), "{msg}");
    // ntpd neither serves NTS nor reads ntsTrustedCerts here.
    let (line, col, msg) = fails(
        "timesync:\n  provider: ntpd\n  sources:\n    - server: a.example\n  serve:\n    allow: [10.0.0.0/8]\n    nts: { certificate: /etc/ssl/ntp.crt, key: /etc/ssl/ntp.key }\n",
    );
    assert_eq!((line, col), (7, 25));
    assert!(
        msg.contains("serve.nts is served by provider embedded or chrony, not ntpd"),
        "{msg}"
    );
    let (line, _, msg) = fails(
        "timesync:\n  provider: ntpd\n  ntsTrustedCerts: /etc/ca.pem\n  sources:\n    - server: a.example\n",
    );
    assert_eq!(line, 3);
    assert!(
        msg.contains("ntsTrustedCerts is read by provider embedded or chrony"),
        "{msg}"
    );
    // The certificate is a path a config line can hold.
    let (line, _, msg) = fails(
        "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  serve:\n    allow: [10.0.0.0/8]\n    nts: { certificate: \"/etc/ssl/a b.crt\", key: /etc/ssl/ntp.key }\n",
    );
    assert_eq!(line, 7);
    assert!(msg.contains("invalid path"), "{msg}");
}

#[test]
fn server_and_pool_together() {
    let (line, _, msg) =
        fails("timesync:\n  sources:\n    - server: a.example\n      pool: b.example\n");
    assert_eq!(line, 4);
    assert!(msg.contains("exactly one"), "{msg}");
}

#[test]
fn undefined_key_reference() {
    let (line, _, msg) = fails(
        "timesync:\n  provider: chrony\n  keys:\n    - { id: 1, secret: abc }\n  sources:\n    - server: a.example\n      key: 2\n",
    );
    assert_eq!(line, 7);
    assert!(
        msg.contains("key 2 is not defined") && msg.contains('1'),
        "{msg}"
    );
}

#[test]
fn several_problems_are_all_reported() {
    let err = parse(
        "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n      minpoll: 9\n      maxpoll: 7\n  minSources: 5\n",
    )
    .unwrap_err();
    assert_eq!(err.diagnostics().len(), 2, "{err}");
}

#[test]
fn rendered_error_names_file_line_column_and_quotes_the_line() {
    let err =
        parse("timesync:\n  sources:\n    - server: a.example\n      ibrust: true\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("t.yaml:4:7: unknown field `ibrust`"),
        "{text}"
    );
    assert!(text.contains("4 |       ibrust: true"), "{text}");
    assert!(text.contains("  |       ^"), "{text}");
}

#[test]
fn syntax_error_has_a_position() {
    let (line, col, msg) = fails("timesync:\n  sources: [\n");
    assert!(line >= 2 && col > 0, "{line}:{col} {msg}");
}

#[test]
fn empty_sources_need_a_local_stratum() {
    let (line, _, msg) = fails("timesync:\n  sources: []\n");
    assert_eq!(line, 2);
    assert!(msg.contains("at least one"), "{msg}");
    assert!(
        parse("timesync:\n  sources: []\n  serve: { allow: [10.0.0.0/8], localStratum: 10 }\n")
            .is_ok()
    );
}

#[test]
fn secrets_are_not_in_debug_output() {
    let spec = parse(
        "timesync:\n  provider: chrony\n  keys:\n    - { id: 7, type: SHA1, secret: topsecretvalue }\n  sources:\n    - server: a.example\n      key: 7\n",
    )
    .unwrap();
    assert!(!format!("{spec:?}").contains("topsecretvalue"));
}

#[test]
fn secret_values_are_masked_in_place() {
    use super::error::mask_secrets;
    let text = "keys:\n  - { id: 1, secret: abcdef, type: SHA1 }\n  - {id: 2,secret: x}\n  - id: 3\n    secret: \"q u o\" # comment\n    'secret': 'it''s'\n    secret:\n      on the next line\n    secret: >\n      folded\n      more\n  - id: 4\n    notsecret: visible\n    secret_x: visible\n";
    let (masked, found) = mask_secrets(text);
    assert_eq!(masked.lines().count(), text.lines().count());
    for (a, b) in text.lines().zip(masked.lines()) {
        assert_eq!(a.chars().count(), b.chars().count(), "{a:?} / {b:?}");
    }
    assert!(
        masked.contains("{ id: 1, secret: ******, type: SHA1 }"),
        "{masked}"
    );
    assert!(
        masked.contains("{id: 2,secret: *}"),
        "flow without a space after the comma: {masked}"
    );
    assert!(masked.contains("secret: ******* # comment"), "{masked}");
    assert!(masked.contains("'secret': *******\n"), "{masked}");
    assert!(masked.contains("      ** *** **** ****\n"), "{masked}");
    assert!(masked.contains("      ******\n      ****\n"), "{masked}");
    assert!(masked.contains("notsecret: visible") && masked.contains("secret_x: visible"));
    for value in ["abcdef", "q u o", "on the next line", "folded"] {
        assert!(!masked.contains(value), "{value}: {masked}");
        assert!(
            found.iter().any(|f| f.contains(value)),
            "{value}: {found:?}"
        );
    }
}

#[test]
fn diagnostics_cut_long_values_and_never_quote_secrets() {
    let long = "b".repeat(5000);
    let d = Diagnostic::new(
        "t.yaml",
        &format!("x: {long}\n  secret: hunter2hunter2\n"),
        1,
        4,
        format!("bad value {long} and hunter2hunter2"),
    );
    let shown = d.to_string();
    assert!(shown.len() < 400, "{shown}");
    assert!(shown.contains('…'));
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn metrics_endpoint_for_the_embedded_engine() {
    let base = "timesync:\n  sources:\n    - server: 192.0.2.1\n";
    let spec = parse(&format!("{base}  metrics: {{ listen: 127.0.0.1:9975 }}\n")).unwrap();
    let m = spec.timesync.metrics.as_ref().expect("metrics");
    assert_eq!(m.listen.value.to_string(), "127.0.0.1:9975");
    assert!(!m.allow_remote);
    let spec = parse(&format!(
        "{base}  metrics:\n    listen: \"[::]:9975\"\n    allowRemote: true\n"
    ))
    .unwrap();
    assert!(
        spec.timesync
            .metrics
            .as_ref()
            .is_some_and(|m| m.allow_remote)
    );
    assert!(parse(base).unwrap().timesync.metrics.is_none());

    let (line, col, msg) = fails(&format!("{base}  metrics:\n    listen: 192.0.2.7:9975\n"));
    assert_eq!((line, col), (5, 13));
    assert!(
        msg.contains("192.0.2.7:9975 is not a loopback address")
            && msg.contains("allowRemote: true"),
        "{msg}"
    );
    let (line, col, msg) = fails(&format!(
        "{base}  metrics:\n    listen: time.example.com:9975\n"
    ));
    assert_eq!((line, col), (5, 13));
    assert!(msg.contains("expected ADDR:PORT"), "{msg}");
    let (line, _, msg) = fails(&format!("{base}  metrics:\n    listen: \"127.0.0.1:0\"\n"));
    assert_eq!(line, 5);
    assert!(msg.contains("port 0"), "{msg}");
    let (line, col, msg) = fails(&format!(
        "{base}  metrics:\n    listen: 127.0.0.1:9975\n    alowRemote: true\n"
    ));
    assert_eq!((line, col), (6, 5));
    assert!(msg.contains("unknown field `alowRemote`"), "{msg}");
    let (line, col, msg) = fails(
        "timesync:\n  provider: chrony\n  sources:\n    - server: 192.0.2.1\n  metrics: { listen: 127.0.0.1:9975 }\n",
    );
    assert_eq!((line, col), (5, 22));
    assert!(msg.contains("embedded engine only"), "{msg}");
}

/// A value that reaches a config file cannot carry a second directive:
/// refused at the value, saying what is wrong with it.
#[test]
fn config_file_values_cannot_add_directives() {
    let (line, col, msg) = fails(
        "timesync:\n  provider: chrony\n  driftfile: \"/var/lib/x\\nserver evil.example\"\n  sources:\n    - server: a.example\n",
    );
    assert_eq!((line, col), (3, 14));
    assert!(msg.contains("a newline"), "{msg}");
    assert!(msg.contains("expected an absolute path"), "{msg}");
    for (bad, what) in [
        ("\"/var/lib/my drift\"", "a space"),
        ("\"/var/lib/x\\tdrift\"", "a tab"),
        ("\"/var/lib/x#1\"", "'#'"),
        ("var/lib/drift", "not absolute"),
        ("/var/lib/../../etc/shadow", "'..'"),
    ] {
        let (line, _, msg) = fails(&format!(
            "timesync:\n  provider: ntpd\n  driftfile: {bad}\n  sources:\n    - server: a.example\n"
        ));
        assert_eq!(line, 3, "{bad}: {msg}");
        assert!(msg.contains(what), "{bad}: {msg}");
    }
    assert!(
        parse("timesync:\n  driftfile: /srv/time/drift\n  sources:\n    - server: a.example\n")
            .is_ok()
    );
}

#[test]
fn extra_config_is_lines_of_text() {
    let ok = "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  extraConfig: \"log tracking\\n\\tlogdir /var/log/chrony\\n\"\n";
    assert!(parse(ok).is_ok());
    for (bad, what) in [
        (
            "\"log tracking\\r\\nrtcsync\"",
            "line 1 contains a carriage return",
        ),
        (
            "\"log tracking\\nrtc\\u0000sync\"",
            "line 2 contains the character U+0000",
        ),
        ("\"\\e[31mred\"", "U+001B"),
    ] {
        let (line, col, msg) = fails(&format!(
            "timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  extraConfig: {bad}\n"
        ));
        assert_eq!((line, col), (5, 16), "{bad}: {msg}");
        assert!(msg.contains(what), "{bad}: {msg}");
    }
}

#[test]
fn ntpd_key_secrets_cannot_hold_a_comment_sign() {
    let text = "timesync:\n  provider: PROVIDER\n  keys:\n    - { id: 3, secret: \"ab#cd\" }\n  sources:\n    - server: a.example\n      key: 3\n";
    let (line, col, msg) = fails(&text.replace("PROVIDER", "ntpd"));
    assert_eq!((line, col), (4, 13));
    assert!(msg.contains("'#'") && !msg.contains("ab#cd"), "{msg}");
    // chrony reads '#' only at the start of a line as a comment.
    assert!(parse(&text.replace("PROVIDER", "chrony")).is_ok());
}

/// What systemd-timesyncd cannot do is refused at load, at the value, with
/// the reason.
#[test]
fn timesyncd_refuses_what_it_cannot_do() {
    let head = "timesync:\n  provider: timesyncd\n";
    let one = "  sources:\n    - server: a.example\n";
    for (body, at, reason) in [
        (
            format!("{head}{one}  serve: {{ allow: [10.0.0.0/8] }}\n"),
            (5, 19),
            "cannot serve time",
        ),
        (
            format!("{head}  keys: [{{ id: 1, secret: abc }}]\n{one}"),
            (3, 16),
            "no symmetric keys",
        ),
        (
            format!("{head}{one}      nts: true\n"),
            (5, 12),
            "has no NTS",
        ),
        (
            format!("{head}{one}      port: 10123\n"),
            (4, 15),
            "port 123",
        ),
        (
            format!("{head}{one}      prefer: true\n"),
            (4, 15),
            "put the preferred one first",
        ),
        (
            format!("{head}  clockControl: false\n{one}"),
            (2, 13),
            "leaves the clock alone",
        ),
        (
            format!("{head}  driftfile: /var/lib/x\n{one}"),
            (3, 14),
            "no drift file",
        ),
        (
            format!("{head}  sources:\n    - pool: p.example\n      maxSources: 2\n"),
            (5, 19),
            "one server at a time",
        ),
        (
            format!(
                "{head}  minSources: 2\n  sources:\n    - server: a.example\n    - server: b.example\n"
            ),
            (3, 15),
            "one server at a time",
        ),
        (
            format!(
                "{head}  sources:\n    - server: a.example\n      minpoll: 5\n    - server: b.example\n      minpoll: 6\n"
            ),
            (7, 16),
            "the same minpoll",
        ),
        (
            format!("{head}{one}      minpoll: 3\n"),
            (5, 16),
            "accepts 4 to 17",
        ),
    ] {
        let (line, col, msg) = fails(&body);
        assert_eq!((line, col), at, "{body}: {msg}");
        assert!(msg.contains(reason), "{body}: {msg}");
    }
    let ok = parse(&format!("{head}  sources:\n    - server: a.example\n      minpoll: 5\n      maxpoll: 9\n    - pool: p.example\n      minpoll: 5\n  step: {{ now: true }}\n  extraConfig: RootDistanceMaxSec=2\n")).unwrap();
    assert_eq!(ok.provider(), ProviderKind::Timesyncd);
}
