//! The real-kernel clock bench (issue 8): the embedded engine and chronyd
//! each discipline the clock of their own User-Mode Linux kernel, side by
//! side, in the same scenario at the same time, against a reference chronyd
//! serving this machine's clock (or, for the frequency scenarios, an
//! undisciplined reference kernel whose clock runs at a preset rate); an
//! independent judge inside each UML (best of four SNTP exchanges, up to
//! twelve while none has a round trip under 1 ms, with a
//! second reference, cross-checked with ntpdig) measures the true offset
//! every ~5 s.
//!
//! One test per scenario (`uml_bench_<scenario>`); each boots two UMLs (the
//! engine's and chronyd's) in parallel. Run one with
//! `sudo ci/system-tests.sh uml_bench_slew_plus_500ms`, all with
//! `sudo ci/system-tests.sh uml_bench` (system-tests.sh runs this file two
//! tests at a time: four UML kernels). See docs/testing.md, "The real-kernel
//! clock bench".
//!
//! Per scenario phase and daemon the bench computes: settle time (from the
//! daemon start, or from the disturbance, to the first judge sample after
//! which every sample has |offset| < 1 ms), median and max |offset| over the
//! final third, steps made (engine: status `steps`; chronyd: its log), and
//! for the engine the largest |status offset - judge offset| once settled.
//! It prints a table, writes target/uml-bench/<scenario>.md (and the
//! combined target/uml-bench.md) plus the timelines and logs there, appends
//! the figures to $TIMECTL_TIMINGS_FILE, and asserts issue 8's targets for
//! the engine, measured against chronyd in the same run.
//!
//! Safety: only the UML init script (PID 1 inside UML) starts a daemon with
//! clock control; the UML process runs without CAP_SYS_TIME on the host; each
//! test asserts that this machine's CLOCK_REALTIME - CLOCK_MONOTONIC_RAW did
//! not move (tests/support/uml.rs).

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::uml::{
    self, ConsoleLine, Reference, SOURCE_ADDR, UML_TOOLS, Uml, UmlOptions, host_clock_offset,
};
use support::{ChronyTracking, NtpdigReply, record_timing, require_root_and};

/// |offset| below which a judge sample counts as settled. The judge's own
/// error bound (half its best round trip, at most MAX_JUDGE_DELAY / 2) is
/// allowed for: a sample is "not settled" only if even the nearest time
/// its reading allows is 1 ms off. On a quiet host the bound is 0.1-0.2 ms;
/// on a loaded one (the CI run of ead0a2a, where chronyd's own judge
/// readings wandered 1.5 ms) a busy judge must not be blamed on the daemon.
/// The medians and maxima in the table are the raw readings.
const SETTLED: f64 = 1e-3;
/// Issue 8: the engine settles no later than chronyd + this.
const SETTLE_SLACK: f64 = 30.0;
/// Issue 8: final median |offset| <= max(this, chronyd's).
const MEDIAN_FLOOR: f64 = 300e-6;
/// Issue 8 item 5: once settled, the engine's status offset agrees with
/// the judge within this, beyond the judge's own error bound (see SETTLED).
const STATUS_AGREEMENT: f64 = 1e-3;
/// The judge's cadence (seconds between samples, sh integer sleep).
const JUDGE_EVERY: u32 = 5;
/// A judge reading whose best round trip took longer than this is noisy
/// (its error bound is half the delay; normal here: 0.2-0.4 ms) and left
/// out of the figures.
const MAX_JUDGE_DELAY: f64 = 1e-3;
/// The clock must start within this of the scenario's offset.
const START_TOLERANCE: f64 = 0.02;
/// ntpdig (one exchange) and the judge (best of four) must agree this well
/// (a gross-error check against a judge measuring the wrong thing, whose
/// errors would be the scenarios' 0.3-3 s: single ntpdig exchanges were seen
/// 6.5 ms and once 31 ms off while several UML kernels ran on two cores).
const NTPDIG_TOLERANCE: f64 = 0.1;
/// Host CLOCK_REALTIME - CLOCK_MONOTONIC_RAW may move at most this much
/// during a scenario (normal drift of an undisciplined host clock is far
/// less; any step is far more).
const HOST_CLOCK_TOLERANCE: f64 = 0.05;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Daemon {
    Engine,
    Chronyd,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::Engine => "engine",
            Daemon::Chronyd => "chronyd",
        }
    }
}

/// Something the init script does at a time within a phase.
#[derive(Clone, Debug)]
enum Action {
    /// Shift UML's clock by this many seconds (clock_adjtime ADJ_SETOFFSET):
    /// an error the daemon has to notice and correct.
    Shift(f64),
    /// Wait until the daemon reports synchronised, then ask it to step now
    /// (engine: control request `step_now`; chronyd: `chronyc makestep`).
    StepNowWhenSynced,
    /// Drop traffic to the source (nft in the namespace, done by the test
    /// when the script asks); the judge's reference stays reachable.
    SourceDown,
    SourceUp,
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::Shift(s) => format!("shift {s:+}"),
            Action::StepNowWhenSynced => "step-now".to_string(),
            Action::SourceDown => "source-down".to_string(),
            Action::SourceUp => "source-up".to_string(),
        }
    }
}

/// One daemon run within a UML boot. A later phase stops the daemon
/// (SIGTERM: drift file written), resets the kernel and starts it again.
#[derive(Clone, Debug)]
struct Phase {
    name: &'static str,
    /// Kernel frequency register preset (ppm, positive = clock runs fast)
    /// before the daemon starts.
    kernel_freq_ppm: Option<f64>,
    /// Clock error added before the daemon starts (s, positive = ahead).
    start_offset: f64,
    /// Seconds from the daemon start to the end of the phase.
    duration: u32,
    /// (seconds after the daemon start, action).
    actions: Vec<(u32, Action)>,
    /// Steps the engine may make in this phase.
    expected_steps: u32,
    /// Measure settling from this action (index into `actions`) rather than
    /// from the daemon start.
    settle_from: Option<usize>,
}

impl Phase {
    fn new(name: &'static str, start_offset: f64, duration: u32) -> Phase {
        Phase {
            name,
            kernel_freq_ppm: None,
            start_offset,
            duration,
            actions: Vec::new(),
            expected_steps: 0,
            settle_from: None,
        }
    }
}

/// Extra pass criteria beyond the common ones.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Extra {
    None,
    /// The second phase (restart with the drift file) starts from the
    /// frequency the first (cold start) learned, and settles no later than
    /// the first (within one judge period: settling is only seen at judge
    /// samples, 5 s apart, with their start at random).
    DriftFileRestart,
    /// From the outage to the end of the phase the engine's max |offset|
    /// stays within max(this, 2 x chronyd's).
    Holdover(f64),
}

struct Scenario {
    name: &'static str,
    phases: Vec<Phase>,
    extra: Extra,
    reference: Reference,
}

// ---------------------------------------------------------------------------
// The scenarios (issue 8 item 2).

fn slew_plus_500ms() -> Scenario {
    Scenario {
        name: "slew_plus_500ms",
        phases: vec![Phase::new("start +0.5 s", 0.5, 150)],
        extra: Extra::None,
        reference: Reference::Host,
    }
}

fn slew_minus_300ms() -> Scenario {
    Scenario {
        name: "slew_minus_300ms",
        phases: vec![Phase::new("start -0.3 s", -0.3, 150)],
        extra: Extra::None,
        reference: Reference::Host,
    }
}

fn step_plus_3s() -> Scenario {
    let mut phase = Phase::new("start +3 s", 3.0, 150);
    phase.expected_steps = 1;
    Scenario {
        name: "step_plus_3s",
        phases: vec![phase],
        extra: Extra::None,
        reference: Reference::Host,
    }
}

/// True time runs 150 ppm slower than this machine's clock: the clock under
/// test is 150 ppm fast, an error no daemon can reset (see
/// `Reference::Drifting`).
const CLOCK_150_PPM_FAST: Reference = Reference::Drifting { ppm: -150.0 };

fn holdover_source_lost() -> Scenario {
    // Issue 8's "+150 ppm" and "loss of the only source" in one run: a cold
    // start (kernel frequency register 0, no drift file) with the clock
    // 150 ppm fast, then four polls (minpoll 4 = 16 s) without the source
    // once the daemon has learned the frequency. Without it the error
    // grows 150 us per second.
    let mut phase = Phase::new("150 ppm fast, source lost 80-144 s", 0.0, 200);
    phase.kernel_freq_ppm = Some(0.0);
    phase.actions = vec![(80, Action::SourceDown), (144, Action::SourceUp)];
    Scenario {
        name: "holdover_source_lost",
        phases: vec![phase],
        extra: Extra::Holdover(2e-3),
        reference: CLOCK_150_PPM_FAST,
    }
}

/// drift_file_restart's clock error, and how close the engine's frequency
/// must come to it (learned) and to what it learned (after the restart).
const DRIFT_PPM: f64 = 400.0;
const FREQUENCY_AGREEMENT_PPM: f64 = 20.0;

fn drift_file_restart() -> Scenario {
    // A cold start with the clock 400 ppm fast (at 150 ppm both daemons
    // stay within 1 ms from the first sample, so the drift file could not
    // make a difference), then the daemon is stopped (drift file written),
    // the kernel frequency register reset to 0 (as by a reboot) and the
    // clock put back on time: the restart starts from the frequency it
    // learned and should settle no later than the cold start.
    let mut cold = Phase::new("400 ppm fast, cold start", 0.0, 120);
    cold.kernel_freq_ppm = Some(0.0);
    let mut warm = Phase::new("restart with drift file", 0.0, 90);
    warm.kernel_freq_ppm = Some(0.0);
    Scenario {
        name: "drift_file_restart",
        phases: vec![cold, warm],
        extra: Extra::DriftFileRestart,
        reference: Reference::Drifting { ppm: -DRIFT_PPM },
    }
}

fn step_now_control() -> Scenario {
    // +0.8 s is below the 1 s threshold: without step.now it is slewed.
    let mut phase = Phase::new("+0.8 s, step now once synced", 0.8, 120);
    phase.actions = vec![(0, Action::StepNowWhenSynced)];
    phase.expected_steps = 1;
    Scenario {
        name: "step_now_control",
        phases: vec![phase],
        extra: Extra::None,
        reference: Reference::Host,
    }
}

fn step_limit_exhausted() -> Scenario {
    // After the first three updates a 2 s error must be slewed, not stepped.
    // chronyd needs about 100 s to slew it away (at most 83,333 ppm, and
    // it overshoots): leave 160 s after the error.
    let mut phase = Phase::new("2 s error after limit", 0.0, 200);
    phase.actions = vec![(40, Action::Shift(2.0))];
    phase.settle_from = Some(0);
    Scenario {
        name: "step_limit_exhausted",
        phases: vec![phase],
        extra: Extra::None,
        reference: Reference::Host,
    }
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_slew_plus_500ms() {
    run_scenario(slew_plus_500ms());
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_slew_minus_300ms() {
    run_scenario(slew_minus_300ms());
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_step_plus_3s() {
    run_scenario(step_plus_3s());
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_drift_file_restart() {
    run_scenario(drift_file_restart());
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_holdover_source_lost() {
    run_scenario(holdover_source_lost());
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_step_now_control() {
    run_scenario(step_now_control());
}

#[test]
#[ignore = "needs root, user-mode-linux, chronyd, ntpdig, nft; run ci/system-tests.sh"]
fn uml_bench_step_limit_exhausted() {
    run_scenario(step_limit_exhausted());
}

// ---------------------------------------------------------------------------
// The init script body for one daemon.

const ENGINE_SOCKET: &str = "/run/e.sock";
const CHRONY_SOCKET: &str = "/run/chrony/chronyd.sock";

fn engine_config() -> String {
    "# timectl daemon config for the UML bench (sources come from --source)\n\
     step:\n  threshold: 1.0\n  limit: 3\n"
        .to_string()
}

fn chrony_config() -> String {
    format!(
        "server {SOURCE_ADDR} iburst minpoll 4 maxpoll 4\n\
         makestep 1 3\n\
         driftfile {bench}/chrony.drift\n\
         port 0\n\
         cmdport 0\n\
         bindcmdaddress {CHRONY_SOCKET}\n\
         pidfile /run/chrony/chronyd.pid\n",
        bench = uml::BENCH_DIR
    )
}

/// Shell functions daemon_start / daemon_stop / daemon_status /
/// daemon_synced / daemon_step_now for `daemon`.
fn daemon_functions(daemon: Daemon, timectl: &Path) -> String {
    let timectl = timectl.display();
    match daemon {
        Daemon::Engine => format!(
            r#"daemon_start() {{
    TIMECTL_LOG=debug {timectl} daemon --config "$BENCH/engine.yaml" \
        --source {SOURCE_ADDR} --minpoll 4 --maxpoll 4 --control {ENGINE_SOCKET} \
        --drift-file "$BENCH/engine.drift" >>"$BENCH/daemon.log" 2>&1 &
    DPID=$!
}}
daemon_status() {{ say STATUS "$({timectl} status --control {ENGINE_SOCKET} --json 2>&1 | tr -d '\n')"; }}
daemon_synced() {{ {timectl} status --control {ENGINE_SOCKET} --json 2>/dev/null | grep -q '"synchronized": *true'; }}
daemon_step_now() {{ say STEPNOW "$({timectl} status --control {ENGINE_SOCKET} --step-now --json 2>&1 | tr -d '\n')"; }}
"#
        ),
        Daemon::Chronyd => format!(
            r#"mkdir -m 0750 /run/chrony
daemon_start() {{
    chronyd -d -u root -f "$BENCH/chrony.conf" >>"$BENCH/daemon.log" 2>&1 &
    DPID=$!
}}
daemon_status() {{ say TRACKING "$(chronyc -n -c -h {CHRONY_SOCKET} tracking 2>&1 | tr -d '\n')"; }}
daemon_synced() {{ chronyc -n -c -h {CHRONY_SOCKET} tracking 2>/dev/null | grep -q ',Normal$'; }}
daemon_step_now() {{ say STEPNOW "$(chronyc -n -h {CHRONY_SOCKET} makestep 2>&1 | tr -d '\n')"; }}
"#
        ),
    }
}

fn script(daemon: Daemon, scenario: &Scenario, timectl: &Path) -> String {
    let mut s = daemon_functions(daemon, timectl);
    s.push_str(
        r#"DPID=
daemon_stop() {
    if [ -n "$DPID" ]; then kill "$DPID"; wait "$DPID"; DPID=; say DAEMON_STOP; fi
}
sample() { judge; daemon_status; }
# ntpdig between two judge samples: the bench checks they agree.
crosscheck() { say CROSSCHECK; judge; ntpdig_check; judge; }
wait_synced() {
    i=0
    until daemon_synced; do
        i=$((i + 1)); [ $i -ge 120 ] && { say FATAL "not synchronised after 60 s"; return 1; }
        sleep 0.5
    done
    say SYNCED
}
"#,
    );
    for phase in &scenario.phases {
        let _ = writeln!(s, "\n# --- phase: {}", phase.name);
        s.push_str("daemon_stop\n");
        let _ = writeln!(s, "say PHASE {}", phase.name);
        if let Some(ppm) = phase.kernel_freq_ppm {
            let _ = writeln!(s, "kernel_freq {ppm}");
        }
        let _ = writeln!(s, "clock_set_error {}", phase.start_offset);
        // Where the clock starts, by the judge and by ntpdig (cross-check).
        s.push_str("crosscheck\n");
        let _ = writeln!(s, "echo '=== PHASE {}' >>\"$BENCH/daemon.log\"", phase.name);
        s.push_str("daemon_start\nsay DAEMON_START\nnow_s; T0=$NOW; NEXT=$T0\n");
        // A daemon that could not start would look like one that does
        // nothing: stop the bench instead.
        s.push_str(
            "sleep 1\nkill -0 \"$DPID\" 2>/dev/null || say FATAL \"the daemon exited at once: $(tail -n 3 \"$BENCH/daemon.log\" | tr '\\n' ' ')\"\n",
        );
        for i in 0..phase.actions.len() {
            let _ = writeln!(s, "A{i}=");
        }
        s.push_str("while :; do\n    now_s; EL=$((NOW - T0))\n");
        let _ = writeln!(s, "    [ $EL -ge {} ] && break", phase.duration);
        for (i, (at, action)) in phase.actions.iter().enumerate() {
            let run = match action {
                Action::Shift(secs) => format!("clock_shift {secs}"),
                Action::StepNowWhenSynced => "wait_synced && daemon_step_now".to_string(),
                Action::SourceDown => "say REQUEST block-source; sleep 1".to_string(),
                Action::SourceUp => "say REQUEST unblock-source; sleep 1".to_string(),
            };
            let _ = writeln!(
                s,
                "    if [ -z \"$A{i}\" ] && [ $EL -ge {at} ]; then A{i}=1; say ACTION {i} {}; {run}; kernel_show; fi",
                action.describe()
            );
        }
        let _ = writeln!(
            s,
            "    sample\n    NEXT=$((NEXT + {JUDGE_EVERY})); now_s\n    [ $NEXT -gt $NOW ] && sleep $((NEXT - NOW))\ndone\ncrosscheck\nkernel_show"
        );
    }
    s.push_str("daemon_stop\n");
    s
}

// ---------------------------------------------------------------------------
// Running one daemon's UML and reading its console.

/// What one judge sample and the daemon's status said at a moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Seconds since the phase's daemon start (host time of arrival).
    t: f64,
    /// Clock error by the judge: local - reference (s); None if ntpdig failed.
    judge: Option<f64>,
    /// The judge's error bound: half its best round trip (s; 0 if unknown).
    judge_bound: f64,
    /// The daemon's own offset estimate, local - true (s).
    status_offset: Option<f64>,
    /// Engine status `steps`.
    steps: Option<u32>,
    /// Engine status `frequency_ppm`.
    frequency_ppm: Option<f64>,
}

#[derive(Debug, Default)]
struct PhaseRun {
    samples: Vec<Sample>,
    /// The judge just before the daemon started (local - reference, s).
    start_judge: Option<f64>,
    /// Every judge reading in console order: (line index, local - reference).
    judge_seq: Vec<(usize, Option<f64>)>,
    /// ntpdig cross-checks: (line index, local - reference, raw answer).
    ntpdig: Vec<(usize, Option<f64>, String)>,
    judge_errors: Vec<String>,
    /// Judge readings left out for a round trip over MAX_JUDGE_DELAY.
    noisy: usize,
    /// (seconds since daemon start, action description)
    actions: Vec<(f64, String)>,
    step_now: Vec<String>,
    kernel: Vec<(f64, String)>,
    /// This phase's section of the daemon log.
    log: String,
}

struct DaemonRun {
    daemon: Daemon,
    phases: Vec<PhaseRun>,
    console: String,
    log: String,
}

fn run_daemon(daemon: Daemon, scenario: &Scenario, timeout: Duration) -> DaemonRun {
    let timectl = PathBuf::from(env!("CARGO_BIN_EXE_timectl"));
    let mut options = UmlOptions::new(
        daemon.name(),
        &script(daemon, scenario, &uml::guest_path(&timectl)),
    );
    options.files = vec![
        ("engine.yaml".to_string(), engine_config()),
        ("chrony.conf".to_string(), chrony_config()),
    ];
    options.reference = scenario.reference;
    let mut vm = Uml::launch(options);
    let start = Instant::now();
    let mut seen = 0;
    let mut blocked = false;
    while !vm.exited() {
        if start.elapsed() > timeout {
            panic!(
                "{}: scenario {} still running after {timeout:?}; console:\n{}",
                daemon.name(),
                scenario.name,
                vm.console_text()
            );
        }
        let console = vm.console();
        for line in &console[seen..] {
            match line.script() {
                Some(("REQUEST", "block-source")) => {
                    vm.block_source();
                    blocked = true;
                }
                Some(("REQUEST", "unblock-source")) => {
                    vm.unblock_source();
                    blocked = false;
                }
                Some(("FATAL", why)) => panic!(
                    "{}: the init script gave up: {why}; console:\n{}",
                    daemon.name(),
                    vm.console_text()
                ),
                _ => {}
            }
        }
        seen = console.len();
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.wait_exit(Duration::from_secs(10));
    if blocked {
        vm.unblock_source();
    }
    let console = vm.console();
    let log = std::fs::read_to_string(vm.dir().join("daemon.log")).unwrap_or_default();
    let text = vm.console_text();
    if !console.iter().any(|l| l.script() == Some(("END", ""))) {
        panic!(
            "{}: UML ended before the script did; console:\n{text}\nstderr:\n{}\ndaemon log:\n{log}",
            daemon.name(),
            vm.stderr_text()
        );
    }
    let phases = parse_console(daemon, &console, &log);
    if phases.len() != scenario.phases.len() {
        panic!(
            "{}: expected {} phases, the console shows {}:\n{text}",
            daemon.name(),
            scenario.phases.len(),
            phases.len()
        );
    }
    DaemonRun {
        daemon,
        phases,
        console: text,
        log,
    }
}

fn parse_console(daemon: Daemon, console: &[ConsoleLine], log: &str) -> Vec<PhaseRun> {
    let logs: Vec<&str> = log.split("=== PHASE ").skip(1).collect();
    let mut phases: Vec<PhaseRun> = Vec::new();
    let mut t0 = 0.0;
    let mut started = false;
    let mut crosscheck = false;
    let mut pending_judge: Option<(f64, Option<f64>, f64)> = None;
    let flush = |phase: &mut PhaseRun, pending: &mut Option<(f64, Option<f64>, f64)>| {
        if let Some((t, judge, judge_bound)) = pending.take() {
            phase.samples.push(Sample {
                t,
                judge,
                judge_bound,
                ..Sample::default()
            });
        }
    };
    for (index, line) in console.iter().enumerate() {
        let Some((kind, rest)) = line.script() else {
            continue;
        };
        let at = line.at.as_secs_f64();
        if kind == "PHASE" {
            if let Some(phase) = phases.last_mut() {
                flush(phase, &mut pending_judge);
            }
            phases.push(PhaseRun {
                log: logs.get(phases.len()).unwrap_or(&"").to_string(),
                ..PhaseRun::default()
            });
            t0 = at;
            started = false;
            crosscheck = false;
            continue;
        }
        let Some(phase) = phases.last_mut() else {
            continue;
        };
        if kind == "DAEMON_START" {
            t0 = at;
            started = true;
            crosscheck = false;
            continue;
        }
        if kind == "CROSSCHECK" {
            flush(phase, &mut pending_judge);
            crosscheck = true;
            continue;
        }
        let t = at - t0;
        match kind {
            "JUDGE" => {
                flush(phase, &mut pending_judge);
                let mut fields = rest.split_whitespace().map(|v| v.parse::<f64>().ok());
                let (error, delay) = (fields.next().flatten(), fields.next().flatten());
                if error.is_none() {
                    phase.judge_errors.push(format!("{t:.1} s: {rest}"));
                }
                phase.judge_seq.push((index, error));
                // Before the daemon starts: where the clock starts (the last
                // reading wins). Readings for a cross-check are not samples.
                if !started {
                    phase.start_judge = error;
                    continue;
                }
                if crosscheck {
                    continue;
                }
                let error = match delay {
                    Some(d) if d > MAX_JUDGE_DELAY => {
                        phase.noisy += 1;
                        None
                    }
                    _ => error,
                };
                pending_judge = Some((t, error, delay.unwrap_or(0.0) / 2.0));
            }
            "JUDGE_ERR" => {
                flush(phase, &mut pending_judge);
                phase.judge_errors.push(format!("{t:.1} s: {rest}"));
                phase.judge_seq.push((index, None));
                if started && !crosscheck {
                    pending_judge = Some((t, None, 0.0));
                }
            }
            "NTPDIG" => {
                let error = serde_json::from_str::<NtpdigReply>(rest)
                    .ok()
                    .map(|r| -r.offset);
                phase.ntpdig.push((index, error, rest.to_string()));
            }
            "STATUS" | "TRACKING" if started => {
                let (jt, judge, judge_bound) = pending_judge.take().unwrap_or((t, None, 0.0));
                let (status_offset, steps, frequency_ppm) = if daemon == Daemon::Engine {
                    let v: serde_json::Value =
                        serde_json::from_str(rest).unwrap_or(serde_json::Value::Null);
                    (
                        v["offset_seconds"].as_f64(),
                        v["steps"].as_u64().map(|s| s as u32),
                        v["frequency_ppm"].as_f64(),
                    )
                } else {
                    (
                        ChronyTracking::parse_csv(rest)
                            .ok()
                            .map(|tr| tr.system_offset),
                        None,
                        None,
                    )
                };
                phase.samples.push(Sample {
                    t: jt,
                    judge,
                    judge_bound,
                    status_offset,
                    steps,
                    frequency_ppm,
                });
            }
            "ACTION" => phase.actions.push((t, rest.to_string())),
            "STEPNOW" => phase.step_now.push(rest.to_string()),
            "KERNEL" => phase.kernel.push((t, rest.to_string())),
            _ => {}
        }
    }
    if let Some(phase) = phases.last_mut() {
        flush(phase, &mut pending_judge);
    }
    phases
}

/// The bench's own sanity checks for one daemon's run: the judge agrees
/// with ntpdig, and the clock started where the scenario put it.
fn bench_checks(scenario: &Scenario, run: &DaemonRun) -> Vec<String> {
    let mut failures = Vec::new();
    for (phase, p) in scenario.phases.iter().zip(&run.phases) {
        let what = format!("{} / {} / {}", scenario.name, phase.name, run.daemon.name());
        match p.start_judge {
            Some(j) if (j - phase.start_offset).abs() > START_TOLERANCE => failures.push(format!(
                "{what}: the clock started {j:+.6} s off, the scenario says {:+} s: bench broken",
                phase.start_offset
            )),
            None => failures.push(format!(
                "{what}: no judge sample before the start: bench broken"
            )),
            _ => {}
        }
        let answered = match run.daemon {
            Daemon::Engine => p.samples.iter().any(|s| s.steps.is_some()),
            Daemon::Chronyd => p.samples.iter().any(|s| s.status_offset.is_some()),
        };
        if !answered {
            failures.push(format!(
                "{what}: the daemon never answered a status request: bench broken"
            ));
        }
        // ntpdig ran between two judge readings: compare it with their mean.
        for (index, error, text) in &p.ntpdig {
            let before = p.judge_seq.iter().rev().find(|(i, _)| i < index);
            let after = p.judge_seq.iter().find(|(i, _)| i > index);
            let (Some(n), Some((_, Some(b))), Some((_, Some(a)))) = (error, before, after) else {
                failures.push(format!("{what}: ntpdig cross-check incomplete: {text}"));
                continue;
            };
            let allowed = NTPDIG_TOLERANCE + (a - b).abs() / 2.0;
            if (n - (a + b) / 2.0).abs() > allowed {
                failures.push(format!(
                    "{what}: ntpdig says {n:+.6} s, the judge {b:+.6} s before and {a:+.6} s after: bench broken"
                ));
            }
        }
    }
    failures
}

// ---------------------------------------------------------------------------
// Figures and criteria.

#[derive(Debug, Clone, Default)]
struct Figures {
    /// Seconds from the settle reference (daemon start or disturbance).
    settle: Option<f64>,
    median: f64,
    max: f64,
    steps: u32,
    /// Engine: max |status - judge| once settled.
    status_vs_judge: Option<f64>,
    /// Engine: the same less each judge reading's own error bound (what
    /// STATUS_AGREEMENT is checked against; the table shows the raw one).
    status_vs_judge_beyond_bound: Option<f64>,
    /// Engine: status frequency (ppm) at the first and the last status.
    first_frequency: Option<f64>,
    last_frequency: Option<f64>,
    /// Max |offset| from the first source-down to the end (holdover).
    holdover_max: Option<f64>,
    /// Largest error of the opposite sign to the start offset (overshoot).
    overshoot: Option<f64>,
    samples: usize,
    judge_errors: usize,
    noisy: usize,
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn figures(daemon: Daemon, phase: &Phase, run: &PhaseRun) -> Figures {
    let from = match phase.settle_from {
        Some(i) => run.actions.get(i).map_or(f64::INFINITY, |(t, _)| *t),
        None => 0.0,
    };
    // (time, judge, status offset, judge's error bound)
    let judged: Vec<(f64, f64, Option<f64>, f64)> = run
        .samples
        .iter()
        .filter_map(|s| s.judge.map(|j| (s.t, j, s.status_offset, s.judge_bound)))
        .collect();
    let after: Vec<&(f64, f64, Option<f64>, f64)> =
        judged.iter().filter(|(t, ..)| *t >= from).collect();
    // The first sample from which on every sample is below SETTLED, give or
    // take the judge's own error bound.
    let mut settle_index = None;
    for i in (0..after.len()).rev() {
        if after[i].1.abs() - after[i].3 < SETTLED {
            settle_index = Some(i);
        } else {
            break;
        }
    }
    let settle = settle_index.map(|i| (after[i].0 - from).max(0.0));
    let end = judged.last().map_or(0.0, |s| s.0);
    let third_from = end - (end - from.min(end)) / 3.0;
    let mut last_third: Vec<f64> = after
        .iter()
        .filter(|(t, ..)| *t >= third_from)
        .map(|(_, j, ..)| j.abs())
        .collect();
    let max = last_third.iter().copied().fold(0.0, f64::max);
    let med = median(&mut last_third);
    let steps = match daemon {
        Daemon::Engine => run
            .samples
            .iter()
            .filter_map(|s| s.steps)
            .max()
            .unwrap_or(0),
        Daemon::Chronyd => run.log.matches("stepped by").count() as u32,
    };
    // Max |status - judge| once settled, less `allow` times each reading's
    // error bound (0: the raw figure, 1: what STATUS_AGREEMENT checks).
    let disagreement = |allow: f64| match (daemon, settle_index) {
        (Daemon::Engine, Some(i)) => Some(
            after[i..]
                .iter()
                .filter_map(|(_, j, s, bound)| s.map(|s| ((s - j).abs() - allow * bound).max(0.0)))
                .fold(0.0, f64::max),
        ),
        _ => None,
    };
    let status_vs_judge = disagreement(0.0);
    let status_vs_judge_beyond_bound = disagreement(1.0);
    let holdover_max = run
        .actions
        .iter()
        .find(|(_, a)| a.contains("source-down"))
        .map(|(t0, _)| {
            judged
                .iter()
                .filter(|(t, ..)| t >= t0)
                .map(|(_, j, ..)| j.abs())
                .fold(0.0, f64::max)
        });
    // Past zero before settling (afterwards every sample is < 1 ms anyway).
    let settled_at = settle.map_or(f64::INFINITY, |s| s + from);
    let overshoot = (phase.start_offset != 0.0 && phase.actions.is_empty()).then(|| {
        judged
            .iter()
            .filter(|(t, ..)| *t < settled_at)
            .map(|(_, j, ..)| -j * phase.start_offset.signum())
            .fold(0.0, f64::max)
    });
    Figures {
        settle,
        median: med,
        max,
        steps,
        status_vs_judge,
        status_vs_judge_beyond_bound,
        first_frequency: run.samples.iter().find_map(|s| s.frequency_ppm),
        last_frequency: run.samples.iter().rev().find_map(|s| s.frequency_ppm),
        holdover_max,
        overshoot,
        samples: judged.len(),
        judge_errors: run.judge_errors.len(),
        noisy: run.noisy,
    }
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("never".to_string(), |s| format!("{s:.0}"))
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "-".to_string()
    } else {
        format!("{:.0}", v * 1e6)
    }
}

fn opt_us(v: Option<f64>) -> String {
    v.map_or("-".to_string(), us)
}

/// Marks a missed issue-8 *target* (a benchmark figure relative to
/// chronyd's in the same run): printed, recorded in the figures and in
/// target/uml-bench.md, but not a test failure. Everything else `criteria`
/// returns is: the engine never settling, a wrong number of steps, a status
/// that disagrees with the judge, a drift-file restart slower than the cold
/// start, a holdover far worse than chronyd's, a broken bench.
const TARGET: &str = "target missed: ";

/// Checks issue 8's targets for the engine against chronyd in one phase.
fn criteria(
    scenario: &Scenario,
    index: usize,
    engine: &Figures,
    chronyd: &Figures,
    engine_phases: &[Figures],
) -> Vec<String> {
    let phase = &scenario.phases[index];
    let what = format!("{} / {}", scenario.name, phase.name);
    let mut failures = Vec::new();
    match (engine.settle, chronyd.settle) {
        (None, _) => failures.push(format!("{what}: the engine never settled below 1 ms")),
        (Some(e), Some(c)) if e > c + SETTLE_SLACK => failures.push(format!(
            "{TARGET}{what}: the engine settled after {e:.0} s, chronyd after {c:.0} s (allowed: chronyd + {SETTLE_SLACK:.0} s)"
        )),
        _ => {}
    }
    let allowed = MEDIAN_FLOOR.max(chronyd.median);
    // NaN (no samples in the final third) fails too.
    if engine.median.is_nan() || engine.median > allowed {
        failures.push(format!(
            "{TARGET}{what}: final median |offset| {} us > max(300 us, chronyd's {} us)",
            us(engine.median),
            us(chronyd.median)
        ));
    }
    if engine.steps != phase.expected_steps {
        failures.push(format!(
            "{what}: the engine stepped the clock {} time(s), expected {}",
            engine.steps, phase.expected_steps
        ));
    }
    if let (Some(d), Some(beyond)) = (engine.status_vs_judge, engine.status_vs_judge_beyond_bound)
        && beyond > STATUS_AGREEMENT
    {
        failures.push(format!(
            "{what}: once settled, the engine's status offset disagreed with the judge by up to {} us, {} us beyond the judge's own error bound (allowed {} us)",
            us(d),
            us(beyond),
            us(STATUS_AGREEMENT)
        ));
    }
    match scenario.extra {
        Extra::DriftFileRestart if index == 1 => {
            let cold = &engine_phases[0];
            if let (Some(warm), Some(cold)) = (engine.settle, cold.settle)
                && warm > cold + f64::from(JUDGE_EVERY)
            {
                failures.push(format!(
                    "{what}: restarting with the drift file settled after {warm:.0} s, the cold start after {cold:.0} s"
                ));
            }
            match (cold.last_frequency, engine.first_frequency) {
                (Some(learned), Some(restart)) => {
                    if (learned.abs() - DRIFT_PPM).abs() > FREQUENCY_AGREEMENT_PPM {
                        failures.push(format!(
                            "{what}: the cold start learned {learned:.1} ppm for a clock {DRIFT_PPM} ppm fast"
                        ));
                    }
                    if (restart - learned).abs() > FREQUENCY_AGREEMENT_PPM {
                        failures.push(format!(
                            "{what}: the restart's first status said {restart:.1} ppm, the cold start had learned {learned:.1} ppm (drift file not used?)"
                        ));
                    }
                }
                _ => failures.push(format!(
                    "{what}: the engine's status reported no frequency: bench broken"
                )),
            }
        }
        Extra::Holdover(floor) => {
            if let (Some(e), Some(c)) = (engine.holdover_max, chronyd.holdover_max) {
                let allowed = floor.max(2.0 * c);
                if e > allowed {
                    failures.push(format!(
                        "{what}: max |offset| from losing the source to the end {} us > max({} us, 2 x chronyd's {} us)",
                        us(e),
                        us(floor),
                        us(c)
                    ));
                }
            }
        }
        _ => {}
    }
    for (f, name) in [(engine, "engine"), (chronyd, "chronyd")] {
        if f.samples == 0 || (f.judge_errors + f.noisy) * 5 > f.samples {
            failures.push(format!(
                "{what}: the judge failed too often for {name} ({} errors, {} noisy, {} good samples): bench broken",
                f.judge_errors, f.noisy, f.samples
            ));
        }
    }
    failures
}

// ---------------------------------------------------------------------------
// Output.

fn target_dir() -> PathBuf {
    // CARGO_BIN_EXE_timectl is target/<profile>/timectl.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_timectl"));
    bin.parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

const TABLE_HEADER: &str = "| scenario | phase | daemon | settled after (s) | final median abs offset (us) | final max (us) | steps (expected) | status vs judge, settled (us) | holdover max (us) | overshoot (us) | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";

/// One row per (phase, daemon); the engine's rows carry the verdict:
/// "ok", "target missed" (issue 8's chronyd-relative targets) or "FAIL".
fn table_rows(scenario: &Scenario, rows: &[(usize, Daemon, Figures, &str)]) -> String {
    let mut out = String::new();
    for (i, daemon, f, verdict) in rows {
        let phase = &scenario.phases[*i];
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {verdict} |",
            scenario.name,
            phase.name,
            daemon.name(),
            fmt_s(f.settle),
            us(f.median),
            us(f.max),
            f.steps,
            if *daemon == Daemon::Engine {
                phase.expected_steps.to_string()
            } else {
                "-".to_string()
            },
            opt_us(f.status_vs_judge),
            opt_us(f.holdover_max),
            opt_us(f.overshoot),
        );
    }
    out
}

static OUTPUT_LOCK: Mutex<()> = Mutex::new(());

fn write_outputs(scenario: &Scenario, rows: &str, runs: &[DaemonRun]) {
    let _guard = OUTPUT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("uml-bench");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("warning: cannot create {}: {e}", dir.display());
        return;
    }
    let write = |name: String, text: &str| {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("warning: cannot write {}: {e}", path.display());
        }
    };
    write(format!("{}.md", scenario.name), rows);
    for run in runs {
        let d = run.daemon.name();
        write(format!("{}-{d}.console", scenario.name), &run.console);
        write(format!("{}-{d}.log", scenario.name), &run.log);
        let mut tsv = String::from("phase\tt_s\tjudge_offset_s\tstatus_offset_s\tsteps\n");
        for (i, phase) in run.phases.iter().enumerate() {
            for s in &phase.samples {
                let _ = writeln!(
                    tsv,
                    "{}\t{:.1}\t{}\t{}\t{}",
                    scenario.phases[i].name,
                    s.t,
                    s.judge.map_or("".to_string(), |v| format!("{v:.6}")),
                    s.status_offset
                        .map_or("".to_string(), |v| format!("{v:.6}")),
                    s.steps.map_or("".to_string(), |v| v.to_string()),
                );
            }
        }
        write(format!("{}-{d}.tsv", scenario.name), &tsv);
    }
    // The combined table, in scenario order, from the latest run of each.
    let order = [
        "slew_plus_500ms",
        "slew_minus_300ms",
        "step_plus_3s",
        "holdover_source_lost",
        "drift_file_restart",
        "step_now_control",
        "step_limit_exhausted",
    ];
    let mut combined = String::from(
        "Real-kernel clock bench (tests/uml_clock.rs): engine and chronyd 4.3 side by side, \
         each disciplining its own User-Mode Linux kernel clock against the same kind of reference; \
         offsets by an independent judge inside each UML every ~5 s (best of 4 SNTP exchanges, up to 12 on a busy host, \
         cross-checked with ntpdig). Settled: every later sample < 1 ms; final: the last third \
         of the phase (or of the time after the disturbance).\n\n",
    );
    combined.push_str(TABLE_HEADER);
    for name in order {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.md"))) {
            combined.push_str(&text);
        }
    }
    let path = target_dir().join("uml-bench.md");
    if let Err(e) = std::fs::write(&path, combined) {
        eprintln!("warning: cannot write {}: {e}", path.display());
    }
}

// ---------------------------------------------------------------------------

fn run_scenario(scenario: Scenario) {
    require_root_and(UML_TOOLS);
    let timectl = PathBuf::from(env!("CARGO_BIN_EXE_timectl"));
    assert!(
        timectl.exists(),
        "the timectl binary {} does not exist",
        timectl.display()
    );
    let total: u32 = scenario.phases.iter().map(|p| p.duration + 15).sum();
    let timeout = Duration::from_secs(u64::from(total) + 120);
    let host_before = host_clock_offset();
    let started = Instant::now();

    let (engine, chronyd) = std::thread::scope(|scope| {
        let engine = scope.spawn(|| run_daemon(Daemon::Engine, &scenario, timeout));
        let chronyd = scope.spawn(|| run_daemon(Daemon::Chronyd, &scenario, timeout));
        let join = |h: std::thread::ScopedJoinHandle<'_, DaemonRun>| {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        };
        (join(engine), join(chronyd))
    });
    let wall = started.elapsed();
    let host_after = host_clock_offset();
    let host_moved = host_after - host_before;
    assert!(
        host_moved.abs() < HOST_CLOCK_TOLERANCE,
        "THIS MACHINE'S CLOCK MOVED during the UML bench: CLOCK_REALTIME - CLOCK_MONOTONIC_RAW \
         changed by {host_moved:.6} s"
    );

    let mut rows = Vec::new();
    let mut failures = bench_checks(&scenario, &engine);
    failures.extend(bench_checks(&scenario, &chronyd));
    let mut engine_figures = Vec::new();
    for (i, phase) in scenario.phases.iter().enumerate() {
        let e = figures(Daemon::Engine, phase, &engine.phases[i]);
        let c = figures(Daemon::Chronyd, phase, &chronyd.phases[i]);
        engine_figures.push(e.clone());
        let found = criteria(&scenario, i, &e, &c, &engine_figures);
        let verdict = if found.iter().any(|f| !f.starts_with(TARGET)) {
            "FAIL"
        } else if found.is_empty() {
            "ok"
        } else {
            "target missed"
        };
        failures.extend(found);
        rows.push((i, Daemon::Engine, e, verdict));
        rows.push((i, Daemon::Chronyd, c, ""));
    }
    let table = table_rows(&scenario, &rows);
    eprintln!(
        "\nUML bench {} ({:.0} s wall, host clock moved {:+.6} s):\n{TABLE_HEADER}{table}",
        scenario.name,
        wall.as_secs_f64(),
        host_moved
    );
    for run in [&engine, &chronyd] {
        for (i, p) in run.phases.iter().enumerate() {
            let judge: Vec<String> = p
                .samples
                .iter()
                .map(|s| {
                    format!(
                        "{:.0}:{}",
                        s.t,
                        s.judge
                            .map_or("?".to_string(), |j| format!("{:.2}", j * 1e3))
                    )
                })
                .collect();
            eprintln!(
                "{} / {} judge (t s: offset ms): {}",
                run.daemon.name(),
                scenario.phases[i].name,
                judge.join(" ")
            );
            for s in &p.step_now {
                eprintln!("{} step now: {s}", run.daemon.name());
            }
        }
    }
    write_outputs(&scenario, &table, &[engine, chronyd]);
    record_timing(&format!("uml bench {}", scenario.name), wall);
    for (i, daemon, f, _) in &rows {
        support::record_figure(&format!(
            "uml bench {} / {} / {}: settled {} s, final median {} us, max {} us, steps {}{}",
            scenario.name,
            scenario.phases[*i].name,
            daemon.name(),
            fmt_s(f.settle),
            us(f.median),
            us(f.max),
            f.steps,
            f.status_vs_judge
                .map_or(String::new(), |d| format!(", status vs judge {} us", us(d)))
        ));
    }
    let (targets, failures): (Vec<String>, Vec<String>) =
        failures.into_iter().partition(|f| f.starts_with(TARGET));
    for t in &targets {
        support::record_figure(&format!("uml bench {}: {t}", scenario.name));
    }
    assert!(
        failures.is_empty(),
        "UML bench {}: the engine failed or the bench broke (figures above; timelines and logs in {}):\n  {}",
        scenario.name,
        target_dir().join("uml-bench").display(),
        failures.join("\n  ")
    );
}

/// The bench's arithmetic on a made-up console (plain `cargo test`, no
/// root): which lines are samples, settle time, final-third median,
/// noisy readings, steps, the start check and the ntpdig cross-check.
#[test]
fn bench_figures_from_a_console() {
    let line = |at: f64, text: &str| ConsoleLine {
        at: Duration::from_secs_f64(at),
        text: text.to_string(),
    };
    let status = |offset: f64, steps: u32| {
        format!("@@ STATUS {{\"offset_seconds\": {offset}, \"steps\": {steps}}}")
    };
    let mut console = vec![
        line(1.0, "@@ READY"),
        line(2.0, "@@ PHASE start +0.5 s"),
        line(2.1, "@@ JUDGE -0.002 0.0003 4"), // before the shift
        line(2.2, "@@ SHIFTED 0.502"),
        line(2.3, "@@ CROSSCHECK"),
        line(2.4, "@@ JUDGE 0.5001 0.0003 4"),
        line(
            2.5,
            r#"@@ NTPDIG {"time":"x","offset":-0.5003,"precision":0.0,"host":"h","ip":"i","stratum":1,"leap":"no-leap","adjusted":false}"#,
        ),
        line(2.6, "@@ JUDGE 0.5002 0.0003 4"),
        line(10.0, "@@ DAEMON_START"),
    ];
    // t = 1, 6, 11, ...: 0.4 s, then 3 ms, then within 1 ms except a noisy
    // reading (delay 2 ms) at t = 21 that must not count.
    let judged = [
        0.4, 0.003, 0.0008, 0.0025, 0.0002, -0.0003, 0.0001, 0.0004, -0.0002,
    ];
    for (i, j) in judged.iter().enumerate() {
        let t = 11.0 + 5.0 * i as f64;
        let delay = if i == 3 { 0.002 } else { 0.0003 };
        console.push(line(t, &format!("@@ JUDGE {j} {delay} 4")));
        console.push(line(t + 0.2, &status(*j + 0.0001, 0)));
    }
    console.push(line(60.0, "@@ CROSSCHECK"));
    console.push(line(60.1, "@@ JUDGE 5.0 0.0003 4")); // not a sample
    console.push(line(60.2, "@@ END"));
    let phases = parse_console(Daemon::Engine, &console, "=== PHASE start +0.5 s\nlog\n");
    assert_eq!(phases.len(), 1);
    let run = &phases[0];
    assert_eq!(run.start_judge, Some(0.5002));
    assert_eq!(run.samples.len(), judged.len());
    assert_eq!(run.noisy, 1);
    assert_eq!(run.samples[3].judge, None);
    assert!((run.samples[1].t - 6.0).abs() < 1e-9);
    let phase = Phase::new("start +0.5 s", 0.5, 45);
    let f = figures(Daemon::Engine, &phase, run);
    // Settled from the sample at t = 11 (0.8 ms; the 2.5 ms reading at
    // t = 16 was noisy and is left out).
    assert_eq!(f.settle.map(|s| s.round()), Some(11.0));
    assert_eq!(f.steps, 0);
    assert!((f.max - 0.0004).abs() < 1e-9, "{f:?}");
    assert!(f.status_vs_judge.is_some_and(|d| (d - 0.0001).abs() < 1e-9));
    let scenario = Scenario {
        name: "test",
        phases: vec![phase],
        extra: Extra::None,
        reference: Reference::Host,
    };
    let daemon_run = DaemonRun {
        daemon: Daemon::Engine,
        phases,
        console: String::new(),
        log: String::new(),
    };
    assert!(bench_checks(&scenario, &daemon_run).is_empty());
    // A start 0.1 s away from the scenario's offset is a broken bench.
    let mut off = Scenario {
        phases: vec![Phase::new("start +0.6 s", 0.6, 45)],
        ..scenario
    };
    off.name = "off";
    let failures = bench_checks(&off, &daemon_run);
    assert!(
        failures.iter().any(|f| f.contains("bench broken")),
        "{failures:?}"
    );
}

/// The figures of one made-up engine phase that starts at t = 10 s: one
/// (judge, judge round trip, status offset) per sample, 5 s apart from
/// t = 11 (a status line follows its judge reading when given).
fn figures_of(samples: &[(f64, f64, Option<f64>)]) -> Figures {
    let line = |at: f64, text: &str| ConsoleLine {
        at: Duration::from_secs_f64(at),
        text: text.to_string(),
    };
    let mut console = vec![
        line(1.0, "@@ READY"),
        line(2.0, "@@ PHASE start +0.5 s"),
        line(2.1, "@@ JUDGE 0.5 0.0003 4"),
        line(10.0, "@@ DAEMON_START"),
    ];
    for (i, (judge, delay, status)) in samples.iter().enumerate() {
        let t = 11.0 + 5.0 * i as f64;
        console.push(line(t, &format!("@@ JUDGE {judge} {delay} 4")));
        if let Some(status) = status {
            console.push(line(
                t + 0.2,
                &format!("@@ STATUS {{\"offset_seconds\": {status}, \"steps\": 0}}"),
            ));
        }
    }
    console.push(line(40.0, "@@ END"));
    let phases = parse_console(Daemon::Engine, &console, "");
    figures(
        Daemon::Engine,
        &Phase::new("start +0.5 s", 0.5, 45),
        &phases[0],
    )
}

/// Settling allows for the judge's own error bound (half its round trip):
/// a 1.1 ms reading with a 0.4 ms round trip may be 0.9 ms, one with a
/// 0.1 ms round trip may not.
#[test]
fn settling_allows_for_the_judge_error_bound() {
    // t = 1, 6, 11, 16: 0.4 s, 1.1 ms (round trip `delay`), then within 1 ms.
    let settle_with_delay = |delay: f64| {
        figures_of(&[
            (0.4, 0.0003, None),
            (0.0011, delay, None),
            (0.0003, 0.0003, None),
            (0.0002, 0.0003, None),
        ])
        .settle
        .map(|s| s.round())
    };
    assert_eq!(settle_with_delay(0.0004), Some(6.0));
    assert_eq!(settle_with_delay(0.0001), Some(11.0));
}

/// The status-vs-judge check allows for the judge's error bound too: a
/// status 1.1 ms from a judge reading with a 0.4 ms round trip is 0.9 ms
/// beyond it (within STATUS_AGREEMENT), with a 0.1 ms round trip 1.05 ms.
#[test]
fn status_agreement_allows_for_the_judge_error_bound() {
    let figures_with_delay = |delay: f64| {
        figures_of(&[
            (0.0002, 0.0003, Some(0.0003)),
            (0.0002, delay, Some(0.0013)),
            (0.0001, 0.0003, Some(0.0002)),
        ])
    };
    let f = figures_with_delay(0.0004);
    assert!(
        f.status_vs_judge.is_some_and(|d| (d - 0.0011).abs() < 1e-9),
        "{f:?}"
    );
    assert!(
        f.status_vs_judge_beyond_bound
            .is_some_and(|d| (d - 0.0009).abs() < 1e-9),
        "{f:?}"
    );
    let f = figures_with_delay(0.0001);
    assert!(
        f.status_vs_judge_beyond_bound
            .is_some_and(|d| (d - 0.00105).abs() < 1e-9),
        "{f:?}"
    );
}
