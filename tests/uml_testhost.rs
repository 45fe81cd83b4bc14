//! The shipped default, applied as on a server, on a real kernel clock: the
//! test-host image booted with its own systemd in User-Mode Linux
//! (tests/support/uml_host.rs), clock set ±0.6 s off at boot, then
//! `timectl apply` of examples/embedded.yaml with the reference as its only
//! source, then an independent judge (`ntpdig -p 4` against the reference:
//! the best of 4 samples) every 5 s for 250 s. The same with `provider: chrony` (Debian's chronyd
//! configured by timectl) is the reference figure. Issue 14 and issue 8
//! item 6; figures in target/uml-testhost.md and $TIMECTL_TIMINGS_FILE.
//!
//! The three boots run at once (UML is mostly idle), about 5 minutes in all.

mod support;

use std::time::Duration;

use support::record_figure;

use support::uml_host::{GuestFile, HostClockMark, REFERENCE_ADDR, UML_TOOLS, UmlHost, tail};

const SCENARIO_SCRIPT: &str = include_str!("uml_testhost/scenario.py");
const SCENARIO_IN_GUEST: &str = "/usr/local/libexec/timectl-uml/scenario";
const CONFIG_IN_GUEST: &str = "/etc/timectl-uml/scenario.json";
const SPEC_IN_GUEST: &str = "/etc/timectl-uml/spec.yaml";

/// Judge every INTERVAL s from the end of the apply for DURATION s.
const INTERVAL: f64 = 5.0;
const DURATION: f64 = 250.0;
/// Issue 14's target: every judge sample in [WINDOW_FROM, WINDOW_TO] s after
/// the apply within LIMIT of the reference. The test fails when an engine
/// sample is beyond LIMIT (the runaway of issue 14 reached 35 to 150 ms),
/// when a sample is missing, or when chronyd (the reference figure) goes
/// beyond GUARD; chronyd beyond LIMIT is reported ("target missed").
const WINDOW_FROM: f64 = 10.0;
const WINDOW_TO: f64 = 240.0;
const LIMIT: f64 = 0.002;
const GUARD: f64 = 0.005;
/// "Settled": every later judge sample below this.
const SETTLED: f64 = 0.001;

#[derive(Clone, Copy)]
struct Scenario {
    label: &'static str,
    /// None: the spec names no provider (the default, embedded).
    provider: Option<&'static str>,
    start_offset: f64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        label: "embedded, clock +0.6 s",
        provider: None,
        start_offset: 0.6,
    },
    Scenario {
        label: "embedded, clock -0.6 s",
        provider: None,
        start_offset: -0.6,
    },
    Scenario {
        label: "chrony, clock +0.6 s",
        provider: Some("chrony"),
        start_offset: 0.6,
    },
];

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the apply ended (guest CLOCK_MONOTONIC).
    t: f64,
    /// ntpdig's offset: reference minus local.
    judge: Option<f64>,
    /// ntpdig's synchronisation distance for that sample (its error bound).
    distance: Option<f64>,
    /// The daemon's own estimate, same sign.
    daemon: Option<f64>,
}

#[derive(Default)]
struct Outcome {
    label: String,
    /// The judge's expected reading before the apply: -start_offset.
    expected_start: f64,
    /// The judge at boot, and after the clock was set off (before the apply).
    judge_before: Option<f64>,
    judge_start: Option<f64>,
    apply_exit: Option<i32>,
    apply_seconds: Option<f64>,
    apply_output: Vec<String>,
    samples: Vec<Sample>,
    log: Vec<String>,
    /// The engine's journal entries' STEP fields (seconds).
    journal_steps: Vec<String>,
    done: bool,
    errors: Vec<String>,
    /// Copying the image, and from starting UML until it powered off.
    copy_seconds: f64,
    boot_seconds: f64,
    console_tail: String,
}

/// examples/embedded.yaml with the reference as the only source and
/// `minSources: 1`, otherwise unchanged; `provider` added when given.
fn spec_for(provider: Option<&str>) -> String {
    let path = support::repo_root().join("examples/embedded.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut spec: serde_json::Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let timesync = spec
        .get_mut("timesync")
        .and_then(|t| t.as_object_mut())
        .unwrap_or_else(|| panic!("{} has no timesync mapping", path.display()));
    for key in ["sources", "minSources"] {
        assert!(
            timesync.contains_key(key),
            "{} has no timesync.{key} to replace",
            path.display()
        );
    }
    timesync.insert(
        "sources".into(),
        serde_json::json!([{ "server": REFERENCE_ADDR }]),
    );
    timesync.insert("minSources".into(), serde_json::json!(1));
    if let Some(p) = provider {
        timesync.insert("provider".into(), serde_json::json!(p));
    }
    serde_saphyr::to_string(&spec).unwrap_or_else(|e| panic!("render spec: {e}"))
}

fn run_scenario(scenario: Scenario) -> Outcome {
    let config = serde_json::json!({
        "reference": REFERENCE_ADDR,
        "provider": scenario.provider.unwrap_or("embedded"),
        "start_offset": scenario.start_offset,
        "spec": SPEC_IN_GUEST,
        "interval": INTERVAL,
        "duration": DURATION,
    });
    let files = [
        GuestFile::new(SCENARIO_IN_GUEST, SCENARIO_SCRIPT, 0o755),
        GuestFile::new(CONFIG_IN_GUEST, config.to_string(), 0o644),
        GuestFile::new(SPEC_IN_GUEST, spec_for(scenario.provider), 0o644),
    ];
    let mut host = UmlHost::boot(&files, SCENARIO_IN_GUEST);
    eprintln!("{}: booting UML test host {}", scenario.label, host.name());
    let run = host.wait(Duration::from_secs(600));
    let mut outcome = parse(scenario.label, &run.output);
    outcome.expected_start = -scenario.start_offset;
    outcome.copy_seconds = host.copy_took().as_secs_f64();
    outcome.boot_seconds = run.took.as_secs_f64();
    outcome.console_tail = tail(&run.console, 40);
    if run.output.is_empty() {
        outcome
            .errors
            .push("the guest wrote no output (did the boot unit run?)".into());
    }
    outcome
}

fn parse(label: &str, output: &str) -> Outcome {
    let mut o = Outcome {
        label: label.to_string(),
        ..Outcome::default()
    };
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<f64>().ok());
    for line in output.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("JUDGE_BEFORE") => o.judge_before = num(words.next()),
            Some("JUDGE_START") => o.judge_start = num(words.next()),
            Some("APPLY|") => o
                .apply_output
                .push(line.trim_start_matches("APPLY| ").to_string()),
            Some("APPLY_EXIT") => {
                o.apply_exit = words.next().and_then(|v| v.parse().ok());
                o.apply_seconds = num(words.next());
            }
            Some("JUDGE") => match num(words.next()) {
                Some(t) => o.samples.push(Sample {
                    t,
                    judge: num(words.next()),
                    distance: num(words.next()),
                    daemon: num(words.next()),
                }),
                None => o.errors.push(format!("unparseable line: {line}")),
            },
            Some("LOG|") => o.log.push(line.trim_start_matches("LOG| ").to_string()),
            Some("JOURNAL_STEP") => o.journal_steps.extend(words.next().map(str::to_string)),
            Some("DONE") => o.done = true,
            Some("ERROR") => o.errors.push(line.to_string()),
            _ => {}
        }
    }
    o
}

/// What the scenario got wrong; empty when it passed.
fn failures(o: &Outcome) -> Vec<String> {
    let mut out = o.errors.clone();
    // The clock really was off before the apply (else the rest proves
    // nothing).
    match o.judge_start {
        Some(j) if (j - o.expected_start).abs() < 0.1 => {}
        other => out.push(format!(
            "before the apply the judge read {} (expected {:+.0} ms: the clock was not set off)",
            ms(other),
            o.expected_start * 1e3
        )),
    }
    match o.apply_exit {
        Some(0) => {}
        Some(code) => out.push(format!("timectl apply exited {code}")),
        None => out.push("timectl apply did not finish".into()),
    }
    if !o.done {
        out.push("the scenario did not finish (no DONE)".into());
    }
    let window: Vec<&Sample> = o
        .samples
        .iter()
        .filter(|s| s.t >= WINDOW_FROM - 0.5 && s.t <= WINDOW_TO + 0.5)
        .collect();
    let expected = ((WINDOW_TO - WINDOW_FROM) / INTERVAL) as usize + 1;
    if window.len() + 1 < expected {
        out.push(format!(
            "only {} judge samples between T+{WINDOW_FROM} s and T+{WINDOW_TO} s (expected {expected})",
            window.len()
        ));
    }
    let beyond = |limit: f64| -> Vec<String> {
        window
            .iter()
            .filter(|s| s.judge.is_none_or(|j| j.abs() >= limit))
            .map(|s| format!("T+{:.0} {}", s.t, ms(s.judge)))
            .collect()
    };
    // The engine (the default) must hold issue 14's 2 ms; chronyd is the
    // reference figure, held to GUARD only (beyond it the bench is broken).
    let engine = SCENARIOS
        .iter()
        .any(|s| s.label == o.label && s.provider.is_none());
    if engine {
        out.extend(journal_step_failures(o));
    }
    let limit = if engine { LIMIT } else { GUARD };
    let bad = beyond(limit);
    if !bad.is_empty() {
        out.push(format!(
            "{} of {} judge samples from T+{WINDOW_FROM} to T+{WINDOW_TO} s not within {} ms: {}",
            bad.len(),
            window.len(),
            limit * 1e3,
            bad.join(", ")
        ));
    }
    let missed = beyond(LIMIT);
    if bad.is_empty() && !missed.is_empty() {
        let line = format!(
            "uml testhost {}: target missed: {} of {} judge samples not within {} ms: {}",
            o.label,
            missed.len(),
            window.len(),
            LIMIT * 1e3,
            missed.join(", ")
        );
        eprintln!("{line}");
        record_figure(&line);
    }
    out
}

/// Issue 12 item 5 under systemd with clock control: the step that
/// `step.now` made is in the journal with a STEP field equal (to the
/// microsecond) to the step the apply reported.
fn journal_step_failures(o: &Outcome) -> Vec<String> {
    let reported: Option<f64> = o.apply_output.iter().find_map(|l| {
        let rest = l.split("stepped the clock by ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    });
    let steps: Vec<f64> = o
        .journal_steps
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    match reported {
        None => vec!["the apply reported no clock step (step.now)".into()],
        Some(r) if !steps.iter().any(|s| (s - r).abs() < 1e-6) => vec![format!(
            "the journal's STEP fields {:?} do not include the apply's step {r:+.6} s",
            o.journal_steps
        )],
        Some(_) => vec![],
    }
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:+.3} ms", v * 1e3))
}

/// Max |judge| over the window, median |judge| over the final third, and
/// the first sample time after which every judge sample is below SETTLED.
struct Figures {
    max_in_window: Option<f64>,
    median_final_third: Option<f64>,
    settled_at: Option<f64>,
    max_daemon_vs_judge: Option<f64>,
}

fn figures(o: &Outcome) -> Figures {
    let abs_judge = |s: &&Sample| s.judge.map(f64::abs);
    let max_in_window = o
        .samples
        .iter()
        .filter(|s| s.t >= WINDOW_FROM - 0.5 && s.t <= WINDOW_TO + 0.5)
        .filter_map(|s| abs_judge(&s))
        .reduce(f64::max);
    let mut last_third: Vec<f64> = o
        .samples
        .iter()
        .filter(|s| s.t >= DURATION * 2.0 / 3.0)
        .filter_map(|s| abs_judge(&s))
        .collect();
    last_third.sort_by(f64::total_cmp);
    let median_final_third = (!last_third.is_empty()).then(|| last_third[last_third.len() / 2]);
    let settled_at = if o.samples.is_empty() {
        None
    } else {
        let mut at = None;
        for s in o.samples.iter().rev() {
            match s.judge {
                Some(j) if j.abs() < SETTLED => at = Some(s.t),
                _ => break,
            }
        }
        at
    };
    let max_daemon_vs_judge = o
        .samples
        .iter()
        .filter(|s| s.t >= WINDOW_FROM)
        .filter_map(|s| Some((s.daemon? - s.judge?).abs()))
        .reduce(f64::max);
    Figures {
        max_in_window,
        median_final_third,
        settled_at,
        max_daemon_vs_judge,
    }
}

fn summary_line(o: &Outcome) -> String {
    let f = figures(o);
    let at = |t: f64| {
        o.samples
            .iter()
            .find(|s| (s.t - t).abs() < 1.0)
            .map_or("-".into(), |s| ms(s.judge))
    };
    format!(
        "uml test host, {}: apply exit {} in {} s; judge T+5 {}, T+10 {}, T+30 {}, T+60 {}, T+120 {}, T+240 {}; \
         max |judge| T+{WINDOW_FROM}..{WINDOW_TO}: {}; median |judge| final third: {}; settled (<1 ms): {}; \
         max |daemon - judge| after T+10: {}; image copy {:.1} s, UML boot to power-off {:.1} s",
        o.label,
        o.apply_exit.map_or("-".into(), |c| c.to_string()),
        o.apply_seconds.map_or("-".into(), |s| format!("{s:.2}")),
        at(5.0),
        at(10.0),
        at(30.0),
        at(60.0),
        at(120.0),
        at(240.0),
        ms(f.max_in_window),
        ms(f.median_final_third),
        f.settled_at
            .map_or("never".into(), |t| format!("T+{t:.0} s")),
        ms(f.max_daemon_vs_judge),
        o.copy_seconds,
        o.boot_seconds,
    )
}

fn markdown(outcomes: &[Outcome], host_clock: (f64, f64)) -> String {
    let mut md = String::from(
        "# UML test host: the shipped default on a real kernel clock\n\n\
         Written by tests/uml_testhost.rs. Judge = `ntpdig` against the reference \
         (reference minus local: a clock ahead is negative); daemon = its own estimate, same sign.\n\n\
         | scenario | apply | judge at boot | judge before the apply | max \\|judge\\| T+10..240 | median \\|judge\\| final third | settled (<1 ms) | result |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for o in outcomes {
        let f = figures(o);
        let fails = failures(o);
        md.push_str(&format!(
            "| {} | exit {} in {} s | {} | {} | {} | {} | {} | {} |\n",
            o.label,
            o.apply_exit.map_or("-".into(), |c| c.to_string()),
            o.apply_seconds.map_or("-".into(), |s| format!("{s:.2}")),
            ms(o.judge_before),
            ms(o.judge_start),
            ms(f.max_in_window),
            ms(f.median_final_third),
            f.settled_at
                .map_or("never".into(), |t| format!("T+{t:.0} s")),
            if fails.is_empty() { "pass" } else { "FAIL" },
        ));
    }
    md.push_str(&format!(
        "\nThis machine's clock during the run: REALTIME-MONOTONIC moved {:+.6} s, \
         REALTIME-MONOTONIC_RAW {:+.6} s.\n",
        host_clock.0, host_clock.1
    ));
    for o in outcomes {
        md.push_str(&format!(
            "\n## {}\n\nImage copy {:.1} s; UML from start to power-off {:.1} s; \
             max |daemon - judge| after T+10: {}.\n\n```\n",
            o.label,
            o.copy_seconds,
            o.boot_seconds,
            ms(figures(o).max_daemon_vs_judge)
        ));
        for line in &o.apply_output {
            md.push_str(&format!("{line}\n"));
        }
        md.push_str(
            "```\n\n| T+ s | judge | judge's distance | daemon |\n| --- | --- | --- | --- |\n",
        );
        for s in &o.samples {
            md.push_str(&format!(
                "| {:.1} | {} | {} | {} |\n",
                s.t,
                ms(s.judge),
                ms(s.distance),
                ms(s.daemon)
            ));
        }
        let fails = failures(o);
        if !fails.is_empty() {
            md.push_str("\nFailures:\n\n");
            for f in fails {
                md.push_str(&format!("- {f}\n"));
            }
        }
        md.push_str("\nDaemon status and journal at the end:\n\n```\n");
        for line in &o.log {
            md.push_str(&format!("{line}\n"));
        }
        md.push_str("```\n");
    }
    md
}

#[test]
#[ignore = "needs root, user-mode-linux and the test image; run ci/system-tests.sh"]
fn uml_testhost_default_apply_holds_the_clock() {
    support::require_root_and(UML_TOOLS);
    let host_before = HostClockMark::take();
    let started = std::time::Instant::now();

    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = SCENARIOS
            .iter()
            .map(|&s| (s, scope.spawn(move || run_scenario(s))))
            .collect();
        handles
            .into_iter()
            .map(|(s, h)| {
                h.join().unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into());
                    Outcome {
                        label: s.label.to_string(),
                        errors: vec![format!("the boot failed: {why}")],
                        ..Outcome::default()
                    }
                })
            })
            .collect()
    });
    support::record_timing(
        "uml test host: three boots, apply and judge",
        started.elapsed(),
    );

    // Before any other assertion: nothing here may have moved this clock.
    let host_clock = host_before.assert_unchanged_since(Duration::from_millis(50));

    let md = markdown(&outcomes, host_clock);
    let path = support::repo_root().join("target/uml-testhost.md");
    match std::fs::write(&path, &md) {
        Ok(()) => eprintln!("figures written to {}", path.display()),
        Err(e) => eprintln!("warning: cannot write {}: {e}", path.display()),
    }
    for o in &outcomes {
        record_figure(&summary_line(o));
    }

    let mut report = Vec::new();
    for o in &outcomes {
        let fails = failures(o);
        if !fails.is_empty() {
            report.push(format!(
                "{}:\n  - {}\n  apply output:\n    {}\n  console tail:\n{}",
                o.label,
                fails.join("\n  - "),
                o.apply_output.join("\n    "),
                o.console_tail
            ));
        }
    }
    assert!(
        report.is_empty(),
        "the clock was not held within {} ms (chronyd: {} ms) from T+{WINDOW_FROM} s to \
         T+{WINDOW_TO} s (figures in {}):\n{}",
        LIMIT * 1e3,
        GUARD * 1e3,
        path.display(),
        report.join("\n\n")
    );
}
