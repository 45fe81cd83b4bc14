//! Rendered config files compared with texts written and reviewed by hand
//! (not copied from the renderer's output).

use std::path::Path;

use super::*;
use crate::facts::Facts;
use crate::resource::{FileContent, Resource, ServiceRole};

/// The engine run from a copy of `source` (a host without the package).
fn copy_of(source: &str) -> crate::resource::binary::EngineBinary {
    crate::resource::binary::EngineBinary::Copy {
        path: INSTALLED_BINARY.into(),
        source: source.into(),
    }
}

fn spec(text: &str) -> Spec {
    Spec::parse(Path::new("site.yaml"), text.to_string()).unwrap()
}

fn rhel9() -> Facts {
    Facts::from_os_release(Path::new("os-release"), "ID=rhel\nVERSION_ID=9.4\n").unwrap()
}

fn debian12() -> Facts {
    Facts::from_os_release(Path::new("os-release"), "ID=debian\nVERSION_ID=12\n").unwrap()
}

fn centos7() -> Facts {
    Facts::from_os_release(Path::new("os-release"), "ID=centos\nVERSION_ID=7\n").unwrap()
}

fn file<'a>(desired: &'a Desired, path: &str) -> &'a crate::resource::FileResource {
    desired
        .resources
        .iter()
        .find_map(|r| match r {
            Resource::File(f) if f.path == Path::new(path) => Some(f),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no file resource {path}"))
}

fn whole(f: &crate::resource::FileResource) -> &str {
    match &f.content {
        FileContent::Whole(t) => t,
        other => panic!("expected whole content, got {other:?}"),
    }
}

#[test]
fn chrony_on_rhel_client() {
    let d = compile(
        &spec(
            "timesync:\n  provider: chrony\n  sources:\n    - server: ntp1.example.com\n      prefer: true\n      minpoll: 4\n      maxpoll: 8\n    - pool: 2.rhel.pool.ntp.org\n      maxSources: 2\n      iburst: false\n  minSources: 2\n  step: { threshold: 0.5s, limit: -1 }\n",
        ),
        &rhel9(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let expected = "\
# Managed by timectl. Desired state: site.yaml
# Changes made here are overwritten by the next `timectl apply`; edit the
# desired-state file instead.

# Time sources.
server ntp1.example.com iburst prefer minpoll 4 maxpoll 8
pool 2.rhel.pool.ntp.org maxsources 2

# Update the clock only when this many sources agree.
minsources 2

# Step the clock when it is off by more than 0.5 s, at any update;
# slew it otherwise.
makestep 0.5 -1

# Frequency error of the system clock, kept across restarts.
driftfile /var/lib/chrony/drift

# Copy system time to the hardware clock (kernel 11-minute mode).
rtcsync

# Leap seconds from the system's time zone data.
leapsectz right/UTC
logdir /var/log/chrony
";
    assert_eq!(whole(file(&d, "/etc/chrony.conf")), expected);
    assert_eq!(d.daemon.unit, "chronyd.service");
}

#[test]
fn chrony_on_debian_serving_with_keys_and_nts() {
    let d = compile(
        &spec(
            "timesync:\n  provider: chrony\n  keys:\n    - { id: 5, type: SHA1, secret: HEX:0123ABCD }\n  sources:\n    - server: 192.0.2.1\n      key: 5\n      port: 10123\n    - server: nts.example.net\n      nts: true\n  rtcsync: false\n  serve:\n    allow: [10.0.0.0/8]\n    deny: [10.9.0.0/16]\n    localStratum: 10\n  extraConfig: |\n    log tracking\n",
        ),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let expected = "\
# Managed by timectl. Desired state: site.yaml
# Changes made here are overwritten by the next `timectl apply`; edit the
# desired-state file instead.

# Time sources.
server 192.0.2.1 port 10123 iburst key 5
server nts.example.net iburst nts

# Step the clock when it is off by more than 1 s, only in the first 3 updates;
# slew it otherwise.
makestep 1 3

# Frequency error of the system clock, kept across restarts.
driftfile /var/lib/chrony/chrony.drift

# Symmetric keys for authenticated sources.
keyfile /etc/chrony/chrony.keys

# Keep NTS cookies (and a server's cookie keys) across restarts.
ntsdumpdir /var/lib/chrony

# Leap seconds from the system's time zone data.
leapsectz right/UTC
logdir /var/log/chrony

# Serve time to these networks.
allow 10.0.0.0/8
deny 10.9.0.0/16
ratelimit interval 1 burst 16
# Keep serving at this stratum when no source is reachable.
local stratum 10

# Extra configuration from the desired state.
log tracking
";
    assert_eq!(whole(file(&d, "/etc/chrony/chrony.conf")), expected);
    let keys = file(&d, "/etc/chrony/chrony.keys");
    assert!(keys.sensitive);
    assert_eq!((keys.mode, keys.group.as_str()), (0o640, "_chrony"));
    assert!(whole(keys).contains("\n5 SHA1 HEX:0123ABCD\n"));
}

#[test]
fn ntpsec_serving_uses_restrict_source() {
    let d = compile(
        &spec(
            "timesync:\n  provider: ntpd\n  sources:\n    - pool: 2.debian.pool.ntp.org\n  serve:\n    allow: [192.168.1.0/24, \"2001:db8::/32\"]\n    localStratum: 12\n",
        ),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let expected = "\
# Managed by timectl. Desired state: site.yaml
# Changes made here are overwritten by the next `timectl apply`; edit the
# desired-state file instead.

# Frequency error of the system clock, kept across restarts.
driftfile /var/lib/ntpsec/ntp.drift
leapfile /usr/share/zoneinfo/leap-seconds.list

# Time sources.
pool 2.debian.pool.ntp.org iburst

# Step the clock when it is off by more than 1 s.
tinker step 1

# Access control.
# Serve only the allowed networks: everything else is ignored, except
# replies from this host's own sources.
restrict default ignore
restrict -6 default ignore
restrict source nomodify notrap noquery
restrict 192.168.1.0 mask 255.255.255.0 kod limited nomodify notrap nopeer noquery
restrict -6 2001:db8:: mask ffff:ffff:: kod limited nomodify notrap nopeer noquery
# Keep serving at this stratum when no source is reachable.
tos orphan 12
restrict 127.0.0.1
restrict ::1
";
    assert_eq!(whole(file(&d, "/etc/ntpsec/ntp.conf")), expected);
    assert_eq!(d.daemon.unit, "ntpsec.service");
}

#[test]
fn classic_ntp_serving_restricts_each_server() {
    let d = compile(
        &spec(
            "timesync:\n  provider: ntpd\n  sources:\n    - server: 0.centos.pool.ntp.org\n    - server: 1.centos.pool.ntp.org\n  serve: { allow: [10.0.0.0/8], rateLimit: false }\n",
        ),
        &centos7(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let text = whole(file(&d, "/etc/ntp.conf"));
    assert!(text.contains("restrict 0.centos.pool.ntp.org nomodify notrap noquery\nrestrict 1.centos.pool.ntp.org nomodify notrap noquery\n"), "{text}");
    assert!(!text.contains("restrict source"), "{text}");
    assert!(
        text.contains("restrict 10.0.0.0 mask 255.0.0.0 nomodify notrap nopeer noquery\n"),
        "{text}"
    );
    assert!(!text.contains("leapfile"), "{text}");
}

#[test]
fn nts_with_classic_ntp_is_an_error_at_the_value() {
    let err = compile(
        &spec(
            "timesync:\n  provider: ntpd\n  sources:\n    - server: a.example\n      nts: true\n",
        ),
        &centos7(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (5, 12));
    assert!(d.message.contains("ntpsec"), "{}", d.message);
    // The same spec is fine where ntpd is ntpsec.
    assert!(
        compile(
            &spec("timesync:\n  provider: ntpd\n  sources:\n    - server: a.example\n      nts: true\n"),
            &debian12(),
            &copy_of("/usr/bin/timectl"),
        )
        .is_ok()
    );
}

#[test]
fn conflicting_daemons_come_first_and_the_chosen_one_last() {
    let d = compile(
        &spec("timesync:\n  provider: chrony\n  conflicts: mask\n  sources:\n    - server: a.example\n"),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let services: Vec<_> = d
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    let last = services.last().unwrap();
    assert_eq!(last.unit, "chrony.service");
    assert_eq!(last.role, ServiceRole::Chosen);
    assert_eq!(last.restart_on.len(), 2, "config file and drop-in");
    let ntpsec = services
        .iter()
        .find(|s| s.unit == "ntpsec.service")
        .unwrap();
    assert_eq!(
        (ntpsec.running, ntpsec.enabled, ntpsec.masked),
        (Some(false), Some(false), Some(true))
    );
    assert!(
        matches!(d.resources[0], Resource::Service(ref s) if s.role == ServiceRole::Conflicting)
    );
}

#[test]
fn clock_control_off_adds_a_chronyd_x_drop_in() {
    let on = compile(
        &spec("timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n"),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let drop_in = "/etc/systemd/system/chrony.service.d/timectl-no-clock-control.conf";
    assert!(matches!(file(&on, drop_in).content, FileContent::Absent));
    let off = compile(
        &spec("timesync:\n  provider: chrony\n  clockControl: false\n  sources:\n    - server: a.example\n"),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let text = whole(file(&off, drop_in));
    assert!(text.contains("ConditionCapability=\n"));
    assert!(text.contains("ExecStart=\nExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x\n"));
    assert!(file(&off, drop_in).unit_file);
}

#[test]
fn embedded_unit_holds_only_the_capabilities_it_needs() {
    let unit_of = |text: &str| {
        let d = compile(&spec(text), &debian12(), &copy_of("/usr/bin/timectl")).unwrap();
        whole(file(&d, "/etc/systemd/system/timectl-engine.service")).to_string()
    };
    let client = unit_of("timesync:\n  sources:\n    - server: a.example\n");
    assert!(
        client.contains("\nCapabilityBoundingSet=CAP_SYS_TIME\nAmbientCapabilities=CAP_SYS_TIME\n"),
        "{client}"
    );
    assert!(!client.contains("ProtectClock=yes"));
    let server = unit_of(
        "timesync:\n  sources:\n    - server: a.example\n  serve: { allow: [10.0.0.0/8] }\n",
    );
    assert!(
        server.contains("\nCapabilityBoundingSet=CAP_SYS_TIME CAP_NET_BIND_SERVICE\n"),
        "{server}"
    );
    let contained =
        unit_of("timesync:\n  clockControl: false\n  sources:\n    - server: a.example\n");
    // No clock control: no capability at all, and the clock is protected.
    assert!(
        contained.contains("\nCapabilityBoundingSet=\nAmbientCapabilities=\n"),
        "{contained}"
    );
    assert!(contained.contains("\nProtectClock=yes\n"), "{contained}");
    // The clock's system calls pass the filter only with clock control.
    assert!(client.contains("\nSystemCallFilter=@system-service @clock\n"));
    assert!(contained.contains("\nSystemCallFilter=@system-service\n"));
    for unit in [&client, &server, &contained] {
        assert!(unit.contains("ExecStart=/usr/local/libexec/timectl/timectl daemon --config /etc/timectl/engine.yaml\n"));
        assert!(unit.contains("\nDynamicUser=yes\n") && unit.contains("\nProtectSystem=strict\n"));
        assert!(
            unit.contains("\nStateDirectory=timectl-engine\n")
                && unit.contains("\nRuntimeDirectory=timectl\n")
        );
    }
}

#[test]
fn embedded_installs_this_timectl_and_restarts_on_any_of_its_files() {
    let d = compile(
        &spec("timesync:\n  sources:\n    - server: 192.0.2.1\n      port: 11123\n"),
        &rhel9(),
        &copy_of("/opt/build/timectl"),
    )
    .unwrap();
    let binary = d
        .resources
        .iter()
        .find_map(|r| match r {
            Resource::Binary(b) => Some(b),
            _ => None,
        })
        .unwrap();
    assert_eq!(binary.path, Path::new("/usr/local/libexec/timectl/timectl"));
    assert_eq!(
        binary.source.as_deref(),
        Some(Path::new("/opt/build/timectl"))
    );
    let Some(Resource::Service(engine)) = d.resources.last() else {
        panic!("the engine's service must come last");
    };
    assert_eq!(engine.unit, "timectl-engine.service");
    assert_eq!(
        engine.restart_on,
        [
            "binary:/usr/local/libexec/timectl/timectl",
            "file:/etc/timectl/engine.yaml",
            "file:/etc/systemd/system/timectl-engine.service"
        ]
    );
    let config = whole(file(&d, "/etc/timectl/engine.yaml"));
    assert!(
        config.contains("  - server: \"192.0.2.1\"\n    port: 11123\n    iburst: true\n"),
        "{config}"
    );
}

#[test]
fn embedded_refuses_extra_config() {
    // Validation refuses it (so `validate` and `plan` agree), at the value.
    let err = Spec::parse(
        Path::new("site.yaml"),
        "timesync:\n  extraConfig: \"x: 1\"\n  sources:\n    - server: a.example\n".to_string(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("site.yaml:2:16: extraConfig is not supported with the embedded engine"),
        "{err}"
    );
}

/// The engine's config as the embedded provider renders it is read by the
/// engine's own loader, with the values the desired state asked for.
#[test]
fn embedded_config_is_what_the_engine_reads() {
    use crate::engine::config::EngineConfig;
    let d = compile(
        &spec(
            "timesync:\n  clockControl: false\n  sources:\n    - server: 192.0.2.1\n      port: 11123\n      minpoll: -2\n      maxpoll: 0\n      prefer: true\n    - pool: pool.example.org\n      maxSources: 3\n      iburst: false\n  minSources: 2\n  step: { threshold: 250ms, limit: -1 }\n  serve:\n    allow: [10.0.0.0/8, \"2001:db8::/32\"]\n    deny: [10.1.0.0/16]\n    localStratum: 9\n",
        ),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let text = whole(file(&d, "/etc/timectl/engine.yaml"));
    let config = EngineConfig::parse(text, Path::new("/etc/timectl/engine.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.sources.len(), 2);
    let server = &config.sources[0];
    assert_eq!(server.server.as_deref(), Some("192.0.2.1"));
    assert_eq!(
        (server.port, server.minpoll, server.maxpoll),
        (11123, -2, 0)
    );
    assert!(server.prefer && server.iburst);
    let pool = &config.sources[1];
    assert_eq!(pool.pool.as_deref(), Some("pool.example.org"));
    assert_eq!((pool.max_sources, pool.iburst, pool.port), (3, false, 123));
    assert_eq!(config.min_sources, 2);
    assert!((config.step.threshold - 0.25).abs() < 1e-9);
    assert_eq!(config.step.limit, -1);
    assert!(!config.clock_control);
    let serve = config.serve.expect("serve");
    assert_eq!(serve.allow.len(), 2);
    assert_eq!(serve.deny.len(), 1);
    assert_eq!(serve.local_stratum, Some(9));
    assert!(serve.rate_limit.is_some());
    assert_eq!(
        config.control_socket.as_deref(),
        Some(Path::new("/run/timectl/engine.sock"))
    );
    assert_eq!(
        config.drift_file.as_deref(),
        Some(Path::new("/var/lib/timectl-engine/drift"))
    );

    // Client only, all defaults.
    let d = compile(
        &spec("timesync:\n  sources:\n    - pool: 2.debian.pool.ntp.org\n"),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let config =
        EngineConfig::parse(whole(file(&d, "/etc/timectl/engine.yaml")), Path::new("e")).unwrap();
    assert!(config.serve.is_none() && config.clock_control);
    assert_eq!((config.step.limit, config.min_sources), (3, 1));
}

#[test]
fn listen_addresses_for_each_daemon() {
    let text = "timesync:\n  provider: PROVIDER\n  sources:\n    - server: a.example\n  serve:\n    allow: [10.0.0.0/8]\n    listen: [10.1.2.3, \"2001:db8::7\"]\n";
    let chrony = compile(
        &spec(&text.replace("PROVIDER", "chrony")),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    let conf = whole(file(&chrony, "/etc/chrony/chrony.conf"));
    assert!(
        conf.contains("\nbindaddress 10.1.2.3\nbindaddress 2001:db8::7\nallow 10.0.0.0/8\n"),
        "{conf}"
    );
    let ntpd = compile(
        &spec(&text.replace("PROVIDER", "ntpd")),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    let conf = whole(file(&ntpd, "/etc/ntpsec/ntp.conf"));
    assert!(
        conf.contains(
            "\ninterface ignore wildcard\ninterface listen 10.1.2.3\ninterface listen 2001:db8::7\n"
        ),
        "{conf}"
    );
    let engine = compile(
        &spec(&text.replace("PROVIDER", "embedded")),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    let conf = whole(file(&engine, "/etc/timectl/engine.yaml"));
    let parsed = crate::engine::config::EngineConfig::parse(conf, Path::new("e")).unwrap();
    let listen: Vec<String> = parsed
        .serve
        .unwrap()
        .listen
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(listen, ["10.1.2.3:123", "[2001:db8::7]:123"]);
    // chrony binds one address per family.
    let err = Spec::parse(
        Path::new("s.yaml"),
        text.replace("PROVIDER", "chrony")
            .replace("2001:db8::7", "10.1.2.4"),
    )
    .unwrap_err();
    assert_eq!(err.diagnostics()[0].line, 7, "{err}");
}

#[test]
fn step_now_is_dropped_with_a_note_without_clock_control() {
    let d = compile(
        &spec("timesync:\n  provider: chrony\n  clockControl: false\n  step: { now: true }\n  sources:\n    - server: a.example\n"),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    assert!(!d.step_now);
    assert!(
        d.notes.iter().any(|n| n.contains("step.now is ignored")),
        "{:?}",
        d.notes
    );
    let d = compile(
        &spec("timesync:\n  provider: chrony\n  step: { now: true }\n  sources:\n    - server: a.example\n"),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    assert!(d.step_now);
}

#[test]
fn leaving_chrony_removes_timectls_chrony_drop_in() {
    let d = compile(
        &spec("timesync:\n  provider: ntpd\n  sources:\n    - server: a.example\n"),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    let drop_in = file(
        &d,
        "/etc/systemd/system/chrony.service.d/timectl-no-clock-control.conf",
    );
    assert!(matches!(drop_in.content, FileContent::Absent));
    assert!(drop_in.unit_file);
}

/// The embedded provider's resources for `text` on Debian 12, and the
/// engine config it renders, read back as the engine reads it.
fn embedded_config(text: &str) -> (Desired, crate::engine::config::EngineConfig) {
    let d = compile(&spec(text), &debian12(), &copy_of("/usr/bin/timectl")).unwrap();
    let rendered = whole(file(&d, "/etc/timectl/engine.yaml")).to_string();
    let config = crate::engine::config::EngineConfig::parse(&rendered, Path::new("e"))
        .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    (d, config)
}

#[test]
fn embedded_metrics_reach_the_engine_config_and_never_the_firewall() {
    use crate::engine::config::MetricsConfig;
    let base = "timesync:\n  sources:\n    - server: 192.0.2.1\n  serve: { allow: [10.0.0.0/8] }\n";
    let (_, config) = embedded_config(&format!("{base}  metrics: {{ listen: 127.0.0.1:9975 }}\n"));
    assert_eq!(
        config.metrics,
        Some(MetricsConfig {
            listen: "127.0.0.1:9975".parse().unwrap(),
            allow_remote: false
        })
    );
    let (d, config) = embedded_config(&format!(
        "{base}  metrics: {{ listen: \"[2001:db8::5]:9100\", allowRemote: true }}\n"
    ));
    assert_eq!(
        config
            .metrics
            .map(|m| (m.listen.to_string(), m.allow_remote)),
        Some(("[2001:db8::5]:9100".to_string(), true))
    );
    // The firewall step is about NTP (UDP 123) only: nothing but the
    // engine's own config mentions the metrics port.
    for r in &d.resources {
        let shown = format!("{r:?}");
        if !shown.contains("/etc/timectl/engine.yaml") {
            assert!(!shown.contains("9100"), "{shown}");
        }
    }
    let firewall: Vec<_> = d
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Firewall(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(firewall.len(), 1);
    assert!(
        firewall[0].reason.contains("serves time"),
        "{:?}",
        firewall[0]
    );

    // No metrics: no section.
    let (d, config) = embedded_config(base);
    let text = whole(file(&d, "/etc/timectl/engine.yaml"));
    assert!(!text.contains("metrics"), "{text}");
    assert_eq!(config.metrics, None);
}

/// The engine's file is the serialised `EngineConfig`: read back by the
/// engine's own loader it is exactly the config built from the spec, for
/// every shape of source, serving and metrics.
#[test]
fn embedded_config_round_trips_through_the_engine_loader() {
    for text in [
        "timesync:\n  sources:\n    - pool: 2.debian.pool.ntp.org\n",
        "timesync:\n  sources:\n    - pool: pool.example.org\n      maxSources: 3\n      iburst: false\n    - server: \"2001:db8::1\"\n      port: 11123\n      minpoll: -2\n      maxpoll: 0\n      prefer: true\n  minSources: 2\n  step: { threshold: 250ms, limit: -1 }\n",
        "timesync:\n  clockControl: false\n  driftfile: /srv/drift\n  sources:\n    - server: yes.example\n  serve:\n    allow: [10.0.0.0/8, \"2001:db8::/32\"]\n    deny: [10.1.0.0/16]\n    listen: [10.1.2.3]\n    rateLimit: false\n    localStratum: 9\n  metrics: { listen: \"[::1]:9100\" }\n",
        "timesync:\n  sources: []\n  serve: { allow: [0.0.0.0/0], localStratum: 8 }\n",
    ] {
        let spec = spec(text);
        let paths = debian12().daemon(crate::facts::Daemon::Embedded);
        let built = embedded::engine_config(&spec, &paths);
        let rendered = embedded::config_text(&spec, &built);
        let read = crate::engine::config::EngineConfig::parse(&rendered, Path::new("e"))
            .unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        assert_eq!(read, built, "{rendered}");
        assert!(!rendered.contains("null"), "{rendered}");
    }
}

/// The whole file for a typical server, checked by hand: every value the
/// engine reads, under comments that say what each section is for.
#[test]
fn embedded_config_file_as_written() {
    let d = compile(
        &spec(
            "timesync:\n  sources:\n    - pool: 2.debian.pool.ntp.org\n    - server: 192.0.2.1\n      prefer: true\n  serve:\n    allow: [10.0.0.0/8]\n  metrics: { listen: 127.0.0.1:9975 }\n",
        ),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let expected = "\
# Managed by timectl. Desired state: site.yaml
# Changes made here are overwritten by the next `timectl apply`; edit the
# desired-state file instead. Format: docs/engine-config.md.

# Time sources.
sources:
  - pool: 2.debian.pool.ntp.org
    port: 123
    iburst: true
    minpoll: 6
    maxpoll: 10
    prefer: false
    maxSources: 4
  - server: \"192.0.2.1\"
    port: 123
    iburst: true
    minpoll: 6
    maxpoll: 10
    prefer: true
    maxSources: 4

# Update the clock only when this many sources agree.
minSources: 1

# Step when the clock is off by more than threshold seconds, only in the first 3 update(s).
step:
  threshold: 1.0
  limit: 3

# Serve time to these networks.
serve:
  listen: []
  allow:
    - 10.0.0.0/8
  deny: []
  rateLimit:
    interval: 2.0
    burst: 8

# false: compute and serve, never adjust the system clock (like chronyd -x).
clockControl: true
driftFile: /var/lib/timectl-engine/drift
controlSocket: /run/timectl/engine.sock

# Prometheus metrics at http://127.0.0.1:9975/metrics (docs/metrics.md).
# timectl never opens the firewall for them.
metrics:
  listen: 127.0.0.1:9975
  allowRemote: false
";
    assert_eq!(whole(file(&d, "/etc/timectl/engine.yaml")), expected);
}

#[test]
fn timesyncd_drop_in_on_debian() {
    let d = compile(
        &spec(
            "timesync:\n  provider: timesyncd\n  sources:\n    - server: ntp1.example.com\n      minpoll: 4\n    - pool: 2.debian.pool.ntp.org\n      maxpoll: 10\n  extraConfig: RootDistanceMaxSec=2\n",
        ),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    let expected = "\
# Managed by timectl. Desired state: site.yaml
# Changes made here are overwritten by the next `timectl apply`; edit the
# desired-state file instead.
[Time]
# Time sources, tried one at a time in this order. (FallbackNTP= is used
# only while this list is empty, so it is left as the distribution ships it.)
NTP=ntp1.example.com 2.debian.pool.ntp.org

# Poll between 2^4 and 2^10 seconds.
PollIntervalMinSec=16
PollIntervalMaxSec=1024

# Extra configuration from the desired state.
RootDistanceMaxSec=2
";
    let drop_in = file(&d, "/etc/systemd/timesyncd.conf.d/timectl.conf");
    assert_eq!(whole(drop_in), expected);
    assert!(!drop_in.unit_file, "timesyncd's own config, not a unit");
    assert_eq!(d.daemon.unit, "systemd-timesyncd.service");
    assert!(
        d.resources.iter().any(
            |r| matches!(r, Resource::Package(p) if p.name == "systemd-timesyncd" && p.present)
        )
    );
    // chrony, ntpsec, the engine and openntpd are stopped and disabled.
    let conflicting: Vec<&str> = d
        .resources
        .iter()
        .filter_map(|r| match r {
            Resource::Service(s) if s.role == ServiceRole::Conflicting => Some(s.unit.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        conflicting,
        [
            "timectl-engine.service",
            "chrony.service",
            "ntpsec.service",
            "openntpd.service"
        ]
    );
    let Some(Resource::Service(chosen)) = d.resources.last() else {
        panic!("the chosen daemon comes last");
    };
    assert_eq!(
        (chosen.unit.as_str(), chosen.masked, chosen.restart_on.len()),
        ("systemd-timesyncd.service", Some(false), 1)
    );
    // No firewall opening: timesyncd serves nothing.
    assert!(
        d.resources
            .iter()
            .any(|r| matches!(r, Resource::Firewall(f) if !f.open))
    );
}

#[test]
fn timesyncd_without_poll_bounds_and_with_step_notes() {
    let d = compile(
        &spec("timesync:\n  provider: timesyncd\n  config: edit\n  step: { threshold: 2s }\n  sources:\n    - server: 192.0.2.1\n"),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap();
    let text = whole(file(&d, "/etc/systemd/timesyncd.conf.d/timectl.conf"));
    assert!(
        text.contains("\nNTP=192.0.2.1\n") && !text.contains("PollInterval"),
        "{text}"
    );
    assert!(d.notes.iter().any(|n| n.contains("0.4 s")), "{:?}", d.notes);
    assert!(
        d.notes.iter().any(|n| n.contains("config: edit")),
        "{:?}",
        d.notes
    );
}

#[test]
fn timesyncd_is_refused_on_rhel_at_the_provider() {
    let err = compile(
        &spec("timesync:\n  provider: timesyncd\n  sources:\n    - server: a.example\n"),
        &rhel9(),
        &copy_of("/t"),
    )
    .unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (2, 13));
    assert!(
        d.message.contains("does not ship systemd-timesyncd") && d.message.contains("chrony"),
        "{}",
        d.message
    );
}

/// A config the engine would refuse at start is an error at plan time,
/// not a file written and a failed start: minpoll 12 alone is above the
/// engine's default maxpoll 10.
#[test]
fn embedded_config_the_engine_would_refuse_is_never_written() {
    let err = compile(
        &spec("timesync:\n  sources:\n    - server: a.example\n      minpoll: 12\n"),
        &debian12(),
        &copy_of("/t"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("site.yaml:3:5: the embedded engine would refuse this configuration")
            && err.contains("minpoll 12 is above maxpoll 10"),
        "{err}"
    );
}

#[test]
fn chrony_serving_nts_with_trusted_certs_and_a_ke_port() {
    let d = compile(
        &spec(
            "timesync:\n  provider: chrony\n  ntsTrustedCerts: /etc/ssl/corp-ca.pem\n  sources:\n    - server: nts.example.net\n      nts: true\n      ntsPort: 14460\n  serve:\n    allow: [10.0.0.0/8]\n    nts: { certificate: /etc/ssl/ntp.crt, key: /etc/ssl/private/ntp.key }\n",
        ),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    let conf = whole(file(&d, "/etc/chrony/chrony.conf"));
    let lines: Vec<&str> = conf.lines().collect();
    assert!(
        d.notes.iter().any(|n| n.contains(
            "ntsserverkey /etc/ssl/private/ntp.key after dropping root privileges: both must be readable by user _chrony"
        )),
        "{:?}",
        d.notes
    );
    for want in [
        "server nts.example.net iburst nts ntsport 14460",
        "ntstrustedcerts /etc/ssl/corp-ca.pem",
        "ntsdumpdir /var/lib/chrony",
        "ntsservercert /etc/ssl/ntp.crt",
        "ntsserverkey /etc/ssl/private/ntp.key",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{conf}");
    }
    // Without serve.nts and NTS sources, none of it.
    let plain = compile(
        &spec("timesync:\n  provider: chrony\n  sources:\n    - server: a.example\n  serve:\n    allow: [10.0.0.0/8]\n"),
        &debian12(),
        &copy_of("/usr/bin/timectl"),
    )
    .unwrap();
    assert!(!whole(file(&plain, "/etc/chrony/chrony.conf")).contains("nts"));
}

#[test]
fn embedded_nts_sources_and_serving_reach_the_engine_and_its_unit() {
    let text = "timesync:\n  ntsTrustedCerts: /etc/ssl/corp-ca.pem\n  sources:\n    - server: nts.example.net\n      nts: true\n    - server: 192.0.2.7\n      nts: true\n      ntsPort: 14460\n    - server: 192.0.2.8\n  serve:\n    allow: [10.0.0.0/8]\n    listen: [192.0.2.1]\n    nts: { certificate: /etc/ssl/ntp.crt, key: /etc/ssl/private/ntp.key }\n";
    let (d, config) = embedded_config(text);
    let nts: Vec<(bool, u16)> = config.sources.iter().map(|s| (s.nts, s.nts_port)).collect();
    assert_eq!(nts, vec![(true, 4460), (true, 14460), (false, 4460)]);
    assert_eq!(
        config.nts_trusted_certs.as_deref(),
        Some(Path::new("/etc/ssl/corp-ca.pem"))
    );
    let served = config
        .serve
        .as_ref()
        .and_then(|s| s.nts.as_ref())
        .expect("serves NTS");
    // The engine reads systemd's copies; the unit names the admin's files.
    assert_eq!(
        served.certificate,
        Path::new("/run/credentials/timectl-engine.service/nts-certificate")
    );
    assert_eq!(
        served.key,
        Path::new("/run/credentials/timectl-engine.service/nts-key")
    );
    assert_eq!(served.listen, vec!["192.0.2.1:4460".parse().unwrap()]);
    assert_eq!(
        served.key_dir.as_deref(),
        Some(Path::new("/var/lib/timectl-engine/nts"))
    );
    let unit = whole(file(&d, "/etc/systemd/system/timectl-engine.service"));
    assert!(
        unit.contains("\nLoadCredential=nts-certificate:/etc/ssl/ntp.crt\nLoadCredential=nts-key:/etc/ssl/private/ntp.key\n"),
        "{unit}"
    );
    // A client-only engine's unit loads no credentials.
    let (plain, config) = embedded_config("timesync:\n  sources:\n    - server: 192.0.2.8\n");
    assert!(config.nts_trusted_certs.is_none() && !config.sources[0].nts);
    assert!(
        !whole(file(&plain, "/etc/systemd/system/timectl-engine.service"))
            .contains("LoadCredential")
    );
}
