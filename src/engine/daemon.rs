//! `timectl daemon`: tokio tasks wired by channels around the sans-IO
//! `Engine`. One task per source (its own UDP socket, kernel receive
//! timestamps; for an NTS source also its key exchanges and cookies, in
//! `nts_client`), one server task per listen address, a control-socket task,
//! name-resolution tasks, and the clock task that owns the `Engine`, runs
//! its timers, applies its clock actions and keeps the drift file. No
//! algorithm logic lives here.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::clock::{
    EngineClock, KernelClock, Monotonic, NoClockControl, SystemClock,
    clock_control_forbidden_by_env,
};
use super::config::{EngineConfig, SourceConfig};
use super::control::{
    self, FORMAT_VERSION, Incoming, ServerStatus, SourceStatus, StatusDocument, StepDocument,
};
use super::discipline::{ClockAction, ClockControl, LocalClock, StepNowError, StepPolicy};
use super::drift;
use super::net::TimestampedSocket;
use super::nts_client;
use super::nts_ke::Trust;
use super::nts_server;
use super::proto::NtpTimestamp;
use super::server::{self, Responder, ServerStats};
use super::source::SourceSettings;
use super::system::{Action, Engine, EngineSettings, ServerState};
use super::units::{EngineInstant, Frequency, PollExponent, Seconds};

/// How often the drift file is rewritten while running.
const DRIFT_SAVE_INTERVAL: Duration = Duration::from_secs(3600);
/// Retry interval for names that did not resolve.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// How often pools are checked for sources to replace.
const POOL_CHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("clock control: {0} (run with --no-clock-control, or give the service CAP_SYS_TIME)")]
    ClockControl(#[from] super::discipline::ClockError),
    #[error(transparent)]
    Drift(#[from] drift::DriftFileError),
    #[error("listening on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("metrics endpoint {addr}: {cause}")]
    Metrics {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("control socket {path}: {cause}")]
    Control {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("nothing to do: no sources and no serve section")]
    Idle,
    #[error(transparent)]
    Nts(#[from] super::nts_server::NtsServerError),
}

/// A request for a source task: send these bytes.
pub(super) struct Outgoing {
    pub(super) nonce: NtpTimestamp,
    pub(super) bytes: [u8; 48],
}

/// A reply from a source task (for an NTS source: the authenticated
/// reply's NTP header only).
pub(super) struct ReplyEvent {
    pub(super) index: usize,
    pub(super) bytes: Vec<u8>,
    pub(super) received: NtpTimestamp,
    /// The last request this task sent, and our clock when it left.
    pub(super) sent: Option<(NtpTimestamp, NtpTimestamp)>,
}

struct Resolved {
    config_index: usize,
    addrs: Vec<SocketAddr>,
}

struct SourceHandle {
    address: SocketAddr,
    name: String,
    /// The configured source (server or pool) it came from.
    config_index: usize,
    tx: mpsc::Sender<Outgoing>,
    task: JoinHandle<()>,
    /// An NTS source's state, shared with its task.
    nts: Option<nts_client::SharedStatus>,
}

/// Runs the daemon until `shutdown` completes (SIGTERM/SIGINT in the CLI).
pub async fn run(
    config: EngineConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (mut task, mut events, others) = start(config).await?;
    // The watchdog is fed from the clock loop itself: a loop that hangs
    // stops feeding it and systemd restarts the engine.
    let watchdog = super::notify::watchdog_interval();
    let mut watchdog_timer = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(shutdown);
    // Sockets are bound and the control socket answers: tell systemd.
    task.notify_ready();

    loop {
        let sleep = tokio::time::sleep(sleep_until(&task.engine, task.engine_clock.now()));
        tokio::select! {
            _ = sleep => task.on_timer(),
            Some(ev) = events.replies.recv() => task.on_reply(ev),
            Some(res) = events.resolved.recv() => task.on_resolved(res).await,
            Some(incoming) = events.control.recv() => task.on_control(incoming),
            _ = events.drift_timer.tick() => save_drift(&task.config, &task.engine),
            _ = events.pool_timer.tick() => task.on_pool_check(),
            _ = watchdog_timer.tick(), if watchdog.is_some() => super::notify::notify("WATCHDOG=1"),
            _ = &mut shutdown => break,
        }
    }
    task.stop(&others);
    Ok(())
}

/// What the clock task's loop waits on, besides its own timer.
struct Events {
    replies: mpsc::Receiver<ReplyEvent>,
    resolved: mpsc::Receiver<Resolved>,
    control: mpsc::Receiver<Incoming>,
    drift_timer: tokio::time::Interval,
    pool_timer: tokio::time::Interval,
}

/// Starts the engine, binds the server, metrics and control sockets and
/// starts resolving the sources; returns the clock task, its events and the
/// other tasks (servers, control, metrics).
async fn start(
    config: EngineConfig,
) -> Result<(ClockTask, Events, Vec<JoinHandle<()>>), DaemonError> {
    // The server's rate limiter keeps CLOCK_MONOTONIC; the engine's time
    // axis is CLOCK_MONOTONIC_RAW with measured corrections (EngineClock).
    let mono = Monotonic::start();
    let engine_clock = EngineClock::start();
    let clock: Arc<dyn LocalClock + Send + Sync> = Arc::new(SystemClock);
    let (engine, kernel) = start_engine(&config, &*clock, engine_clock)?;

    let (state_tx, state_rx) = watch::channel(engine.server_state());
    let stats = Arc::new(ServerStats::default());
    let (mut others, listening) = bind_servers(&config, &stats, &state_rx, &clock, mono).await?;
    let (control_tx, control) = mpsc::channel::<Incoming>(16);
    // Bound before the control socket, so that a client that sees the
    // control socket also finds the metrics endpoint listening.
    others.extend(bind_metrics(&config, &control_tx).await?);
    others.extend(bind_control(&config, control_tx)?);

    let (resolved_tx, resolved) = mpsc::channel::<Resolved>(16);
    let resolvers = spawn_resolvers(&config, &resolved_tx);
    let pool_timer = interval_skipping_first(POOL_CHECK).await;
    let (reply_tx, replies) = mpsc::channel::<ReplyEvent>(64);
    let drift_timer = interval_skipping_first(DRIFT_SAVE_INTERVAL).await;
    let task = ClockTask {
        unresolved: config
            .sources
            .iter()
            .map(|s| Some(s.host().to_owned()))
            .collect(),
        config,
        engine,
        kernel,
        clock,
        engine_clock,
        sources: Vec::new(),
        known: HashSet::new(),
        retired: HashSet::new(),
        resolvers,
        listening,
        stats,
        state_tx,
        reply_tx,
        resolved_tx,
        was_synchronized: false,
        started: engine_clock.now(),
    };
    let events = Events {
        replies,
        resolved,
        control,
        drift_timer,
        pool_timer,
    };
    Ok((task, events, others))
}

/// Decides clock control, reads the kernel's frequency and the drift file,
/// and starts the engine (its start actions applied).
fn start_engine(
    config: &EngineConfig,
    clock: &dyn LocalClock,
    engine_clock: EngineClock,
) -> Result<(Engine, Box<dyn ClockControl + Send>), DaemonError> {
    let mut clock_control = config.clock_control;
    if clock_control && let Some(var) = clock_control_forbidden_by_env() {
        tracing::warn!("{var} is set: running without clock control (estimates only)");
        clock_control = false;
    }
    let mut kernel_frequency = Frequency::ZERO;
    let mut kernel: Box<dyn ClockControl + Send> = if clock_control {
        let k = KernelClock::new()?;
        kernel_frequency = k.frequency()?;
        Box::new(k)
    } else {
        Box::new(NoClockControl)
    };
    let initial_frequency = match (&config.drift_file, clock_control) {
        (Some(path), true) => drift::read(path)?,
        _ => None,
    };
    if config.sources.is_empty() && config.serve.is_none() {
        return Err(DaemonError::Idle);
    }
    let settings = EngineSettings {
        min_sources: config.min_sources,
        step: StepPolicy {
            threshold: Seconds::new(config.step.threshold),
            limit: config.step.limit,
        },
        clock_control,
        initial_frequency,
        kernel_frequency,
        local_stratum: config.serve.as_ref().and_then(|s| s.local_stratum),
    };
    let mut engine = Engine::new(settings, engine_clock.now());
    let start = engine.start_actions();
    apply_actions(
        &mut engine,
        start,
        kernel.as_mut(),
        &[],
        clock,
        engine_clock,
    );
    Ok((engine, kernel))
}

/// Where the daemon serves: the bound NTP addresses, and NTS-KE's when it
/// serves NTS.
#[derive(Default)]
struct Listening {
    ntp: Vec<String>,
    nts_ke: Option<Vec<String>>,
}

/// Binds the NTP server sockets of the serve section (none without one) and
/// spawns a server task for each, and the NTS-KE listeners with
/// `serve.nts`; returns the tasks and the bound addresses.
async fn bind_servers(
    config: &EngineConfig,
    stats: &Arc<ServerStats>,
    state_rx: &watch::Receiver<ServerState>,
    clock: &Arc<dyn LocalClock + Send + Sync>,
    mono: Monotonic,
) -> Result<(Vec<JoinHandle<()>>, Listening), DaemonError> {
    let mut server_tasks = Vec::new();
    let mut listening = Listening::default();
    let Some(serve) = &config.serve else {
        return Ok((server_tasks, listening));
    };
    let listen = if serve.listen.is_empty() {
        vec![
            SocketAddr::from(([0, 0, 0, 0], 123)),
            SocketAddr::from(([0u16; 8], 123)),
        ]
    } else {
        serve.listen.clone()
    };
    let nts_keys = match &serve.nts {
        Some(nts) => Some(nts_server::KeyStore::open(nts.key_dir.as_deref())?),
        None => None,
    };
    let mut ntp_port = None;
    for addr in listen {
        match TimestampedSocket::bind(addr).await {
            Ok(socket) => {
                let bound = socket.local_addr().unwrap_or(addr);
                tracing::info!("serving NTP on {bound}");
                listening.ntp.push(bound.to_string());
                ntp_port.get_or_insert(bound.port());
                let mut responder = Responder::new(serve, stats.clone());
                if let Some(store) = &nts_keys {
                    responder = responder.with_nts(store.keys.clone());
                }
                server_tasks.push(tokio::spawn(server::run(
                    socket,
                    responder,
                    state_rx.clone(),
                    clock.clone(),
                    mono,
                )));
            }
            // The default IPv6 wildcard may be unavailable; an explicit
            // address that cannot be bound is an error.
            Err(e) if serve.listen.is_empty() && addr.is_ipv6() => {
                tracing::warn!("not serving on {addr}: {e}");
            }
            Err(cause) => return Err(DaemonError::Listen { addr, cause }),
        }
    }
    if let (Some(nts), Some(store), Some(port)) = (&serve.nts, nts_keys, ntp_port) {
        let (tasks, ke_listening) =
            nts_server::start(serve, nts, store, port, stats.clone(), mono)?;
        server_tasks.extend(tasks);
        listening.nts_ke = Some(ke_listening);
    }
    Ok((server_tasks, listening))
}

/// Binds the metrics endpoint, if configured, and spawns its task.
async fn bind_metrics(
    config: &EngineConfig,
    control_tx: &mpsc::Sender<Incoming>,
) -> Result<Option<JoinHandle<()>>, DaemonError> {
    let Some(m) = &config.metrics else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(m.listen)
        .await
        .map_err(|cause| DaemonError::Metrics {
            addr: m.listen,
            cause,
        })?;
    let bound = listener.local_addr().unwrap_or(m.listen);
    tracing::info!("serving metrics on http://{bound}{}", super::metrics::PATH);
    Ok(Some(tokio::spawn(super::metrics::serve(
        listener,
        control_tx.clone(),
    ))))
}

/// Binds the control socket, if configured, and spawns its task.
fn bind_control(
    config: &EngineConfig,
    control_tx: mpsc::Sender<Incoming>,
) -> Result<Option<JoinHandle<()>>, DaemonError> {
    let Some(path) = &config.control_socket else {
        return Ok(None);
    };
    let listener = control::bind(path).map_err(|cause| DaemonError::Control {
        path: path.clone(),
        cause,
    })?;
    tracing::info!("control socket {}", path.display());
    Ok(Some(tokio::spawn(control::serve(listener, control_tx))))
}

/// One resolver task per configured source.
fn spawn_resolvers(config: &EngineConfig, tx: &mpsc::Sender<Resolved>) -> Vec<JoinHandle<()>> {
    config
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(resolve(i, s.clone(), tx.clone())))
        .collect()
}

/// An interval whose immediate first tick is already taken.
async fn interval_skipping_first(period: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval(period);
    timer.tick().await;
    timer
}

/// The clock task: owns the `Engine` and what its events touch. Each
/// `on_*` method handles one kind of event of the daemon's loop.
struct ClockTask {
    config: EngineConfig,
    engine: Engine,
    kernel: Box<dyn ClockControl + Send>,
    clock: Arc<dyn LocalClock + Send + Sync>,
    engine_clock: EngineClock,
    /// Indexed like the engine's sources.
    sources: Vec<SourceHandle>,
    known: HashSet<SocketAddr>,
    /// Addresses a pool gave up on: not taken again from the same pool.
    retired: HashSet<SocketAddr>,
    /// Per configured source: its name while it has not resolved.
    unresolved: Vec<Option<String>>,
    resolvers: Vec<JoinHandle<()>>,
    listening: Listening,
    stats: Arc<ServerStats>,
    state_tx: watch::Sender<ServerState>,
    reply_tx: mpsc::Sender<ReplyEvent>,
    resolved_tx: mpsc::Sender<Resolved>,
    was_synchronized: bool,
    started: EngineInstant,
}

impl ClockTask {
    fn notify_ready(&self) {
        super::notify::notify(&format!(
            "READY=1\nSTATUS={} source(s), serving on {}",
            self.config.sources.len(),
            if self.listening.ntp.is_empty() {
                "nothing".to_string()
            } else {
                self.listening.ntp.join(" ")
            }
        ));
    }

    /// Reads the clocks (see `observe`); returns the engine's instant now.
    fn observe(&mut self) -> EngineInstant {
        observe(
            &mut self.engine,
            self.kernel.as_mut(),
            &self.sources,
            &*self.clock,
            self.engine_clock,
        )
    }

    fn apply(&mut self, actions: Vec<Action>) {
        apply_actions(
            &mut self.engine,
            actions,
            self.kernel.as_mut(),
            &self.sources,
            &*self.clock,
            self.engine_clock,
        );
    }

    fn on_timer(&mut self) {
        let now = self.observe();
        let actions = self.engine.on_timer(now);
        self.apply(actions);
    }

    fn on_reply(&mut self, ev: ReplyEvent) {
        if let Some((nonce, sent)) = ev.sent {
            self.engine.set_sent_local(ev.index, nonce, sent);
        }
        let now = self.observe();
        let (outcome, actions) = self.engine.on_reply(ev.index, now, &ev.bytes, ev.received);
        tracing::debug!("source {}: {:?}", ev.index, outcome);
        self.apply(actions);
        if let Some(peer) = self.engine.system_peer() {
            self.engine
                .set_reference_id(reference_id(self.sources[peer].address.ip()));
        }
        self.state_tx.send_replace(self.engine.server_state());
        self.log_sync_change(now);
    }

    fn log_sync_change(&mut self, now: EngineInstant) {
        if self.engine.synchronized() == self.was_synchronized {
            return;
        }
        self.was_synchronized = self.engine.synchronized();
        match self.engine.system_peer() {
            Some(p) if self.was_synchronized => tracing::info!(
                source = %self.sources[p].address,
                offset = self.engine.current_offset(now).map(|o| -o.get()),
                "synchronised to {}",
                self.sources[p].address
            ),
            _ => tracing::warn!("lost synchronisation"),
        }
    }

    async fn on_resolved(&mut self, res: Resolved) {
        self.unresolved[res.config_index] = None;
        let sc = &self.config.sources[res.config_index];
        // A pool keeps at most maxSources live sources.
        let live = self
            .sources
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                h.config_index == res.config_index
                    && self.engine.source(*i).is_some_and(|s| !s.is_dead())
            })
            .count();
        let room = if sc.pool.is_some() {
            sc.max_sources.saturating_sub(live)
        } else {
            usize::MAX
        };
        let fresh: Vec<SocketAddr> = res
            .addrs
            .into_iter()
            .filter(|a| !self.known.contains(a) && !self.retired.contains(a))
            .take(room)
            .collect();
        for addr in fresh {
            self.add_source(res.config_index, addr).await;
        }
    }

    async fn add_source(&mut self, config_index: usize, addr: SocketAddr) {
        self.known.insert(addr);
        let sc = &self.config.sources[config_index];
        let settings = SourceSettings {
            // The config's check keeps both in range already.
            minpoll: PollExponent::saturating(sc.minpoll),
            maxpoll: PollExponent::saturating(sc.maxpoll),
            iburst: sc.iburst,
            prefer: sc.prefer,
        };
        let index = self.engine.add_source(settings, self.engine_clock.now());
        let name = sc.host().to_owned();
        let (tx, task, nts) = if sc.nts {
            let (tx, task, status) = self.spawn_nts_source(index, config_index, addr);
            tracing::info!(source = %addr, "NTS source {} ({})", addr, name);
            (tx, task, Some(status))
        } else {
            match spawn_source(index, addr, self.reply_tx.clone(), self.clock.clone()).await {
                Ok((tx, task)) => {
                    tracing::info!(source = %addr, "source {} ({})", addr, name);
                    (tx, task, None)
                }
                Err(e) => {
                    tracing::error!(source = %addr, "source {addr}: {e}");
                    // Keep indices aligned: a handle whose channel is closed.
                    (mpsc::channel(1).0, tokio::spawn(async {}), None)
                }
            }
        };
        self.sources.push(SourceHandle {
            address: addr,
            name,
            config_index,
            tx,
            task,
            nts,
        });
    }

    /// Spawns the task of an NTS source whose NTS-KE server is at `addr`
    /// (see `nts_client`); returns its channel, task and shared status.
    fn spawn_nts_source(
        &self,
        index: usize,
        config_index: usize,
        addr: SocketAddr,
    ) -> (
        mpsc::Sender<Outgoing>,
        JoinHandle<()>,
        nts_client::SharedStatus,
    ) {
        let sc = &self.config.sources[config_index];
        let target = nts_client::KeTarget {
            host: sc.host().to_owned(),
            address: addr,
            trust: self
                .config
                .nts_trusted_certs
                .clone()
                .map_or(Trust::System, Trust::CaFile),
            ntp_port: sc.port,
        };
        let (tx, rx) = mpsc::channel::<Outgoing>(4);
        let status = nts_client::new_status();
        let task = tokio::spawn(nts_client::run(
            index,
            target,
            rx,
            self.reply_tx.clone(),
            self.clock.clone(),
            status.clone(),
        ));
        (tx, task, status)
    }

    fn on_control(&mut self, incoming: Incoming) {
        let answer = self.answer_control(&incoming);
        self.state_tx.send_replace(self.engine.server_state());
        let _ = incoming.reply.send(answer);
    }

    /// A pool's source that refused us or went silent is replaced by asking
    /// the pool's name again.
    fn on_pool_check(&mut self) {
        let source_configs: Vec<usize> = self.sources.iter().map(|h| h.config_index).collect();
        let dead = self.engine.dead_sources();
        let pools = pools_to_refresh(&self.config, &source_configs, &dead);
        for &i in &dead {
            let Some(h) = self.sources.get(i) else {
                continue;
            };
            if pools.contains(&h.config_index) {
                tracing::info!(source = %h.address, "pool {}: replacing {}", h.name, h.address);
                self.engine.retire_source(i);
                h.task.abort();
                self.retired.insert(h.address);
            }
        }
        self.resolvers.retain(|t| !t.is_finished());
        for config_index in pools {
            let source = self.config.sources[config_index].clone();
            let tx = self.resolved_tx.clone();
            self.resolvers
                .push(tokio::spawn(resolve(config_index, source, tx)));
        }
    }

    fn answer_control(&mut self, incoming: &Incoming) -> serde_json::Value {
        let now = self.observe();
        match incoming.request {
            control::ControlRequest::Status => {
                serde_json::to_value(self.status_document(now)).unwrap_or_default()
            }
            control::ControlRequest::StepNow => {
                serde_json::to_value(self.step_now(incoming.privileged, now)).unwrap_or_default()
            }
        }
    }

    fn status_document(&mut self, now: EngineInstant) -> StatusDocument {
        let r = self.engine.report(now);
        let sources = &self.sources;
        StatusDocument {
            format_version: FORMAT_VERSION,
            synchronized: r.synchronized,
            clock_control: r.clock_control,
            offset_seconds: r.offset_seconds,
            offset_bound_seconds: r.offset_bound_seconds,
            last_offset_seconds: r.last_offset_seconds,
            frequency_ppm: r.frequency_ppm,
            skew_ppm: r.skew_ppm,
            stratum: r.stratum,
            leap: r.leap.to_owned(),
            reference_id: r.reference_id,
            reference_address: r
                .system_peer
                .and_then(|p| sources.get(p))
                .map(|s| s.address.to_string()),
            root_delay_seconds: r.root_delay_seconds,
            root_dispersion_seconds: r.root_dispersion_seconds,
            last_update_age_seconds: r.last_update_age_seconds,
            updates: r.updates,
            steps: r.steps,
            updates_since_step: Some(r.updates_since_step),
            kernel_leap: Some(r.kernel_leap.to_owned()),
            uptime_seconds: (now - self.started).get(),
            sources: r
                .sources
                .iter()
                .filter_map(|s| {
                    let h = sources.get(s.index)?;
                    Some(SourceStatus {
                        address: h.address.to_string(),
                        name: h.name.clone(),
                        report: s.clone(),
                        nts: h
                            .nts
                            .as_ref()
                            .and_then(|n| n.lock().ok().map(|n| n.clone())),
                    })
                })
                .collect(),
            unresolved: self.unresolved.iter().flatten().cloned().collect(),
            server: (!self.listening.ntp.is_empty()).then(|| {
                ServerStatus::new(
                    self.listening.ntp.clone(),
                    self.listening.nts_ke.clone(),
                    self.stats.report(),
                )
            }),
        }
    }

    fn step_now(&mut self, privileged: bool, now: EngineInstant) -> StepDocument {
        if !privileged {
            return StepDocument {
                format_version: FORMAT_VERSION,
                ok: false,
                stepped_seconds: None,
                would_step_seconds: None,
                error: Some("step_now needs root or the daemon's own user".into()),
            };
        }
        match self.engine.step_now(now) {
            Ok((offset, actions)) => {
                // apply_actions logs the step itself (with STEP).
                tracing::info!("stepping the clock on request");
                self.apply(actions);
                StepDocument {
                    format_version: FORMAT_VERSION,
                    ok: true,
                    stepped_seconds: Some(offset.get()),
                    would_step_seconds: None,
                    error: None,
                }
            }
            Err(e) => StepDocument {
                format_version: FORMAT_VERSION,
                ok: false,
                stepped_seconds: None,
                would_step_seconds: match e {
                    StepNowError::ClockControlOff { would_step } => Some(would_step.get()),
                    StepNowError::NoEstimate => None,
                },
                error: Some(e.to_string()),
            },
        }
    }

    /// Saves the drift, stops every task and removes the control socket.
    fn stop(self, others: &[JoinHandle<()>]) {
        super::notify::notify("STOPPING=1");
        save_drift(&self.config, &self.engine);
        for s in &self.sources {
            s.task.abort();
        }
        for t in self.resolvers.iter().chain(others) {
            t.abort();
        }
        if let Some(path) = &self.config.control_socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped");
    }
}

/// The configured pools with a dead source to replace (pure, for tests).
/// `source_configs[i]` is the configured source that engine source `i` came
/// from; `dead` are the engine's dead sources.
fn pools_to_refresh(config: &EngineConfig, source_configs: &[usize], dead: &[usize]) -> Vec<usize> {
    let mut pools: Vec<usize> = dead
        .iter()
        .filter_map(|&i| source_configs.get(i).copied())
        .filter(|&c| config.sources.get(c).is_some_and(|s| s.pool.is_some()))
        .collect();
    pools.sort_unstable();
    pools.dedup();
    pools
}

fn save_drift(config: &EngineConfig, engine: &Engine) {
    if let Some(path) = &config.drift_file
        && engine.discipline().clock_control()
        && engine.discipline().updates() > 0
    {
        let d = engine.discipline();
        if let Err(e) = drift::write(path, d.frequency(), d.frequency_sd()) {
            tracing::warn!("{e}");
        }
    }
}

/// The reference ID for a system peer: its IPv4 address, or for IPv6 the
/// first four bytes of a hash of the address (RFC 5905 uses MD5; any hash
/// serves the purpose of loop detection).
pub fn reference_id(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let h = Sha256::digest(v6.octets());
            [h[0], h[1], h[2], h[3]]
        }
    }
}

/// How long to sleep until the engine's next wakeup. The engine's instants
/// are CLOCK_MONOTONIC_RAW seconds, but tokio sleeps on CLOCK_MONOTONIC,
/// which runs at the frequency the engine set (8 % fast or slow during a
/// fast slew): convert, or a slew would end up to 8 % late.
fn sleep_until(engine: &Engine, now: EngineInstant) -> Duration {
    let Some(wake) = engine.next_wakeup() else {
        return Duration::from_secs(3600);
    };
    let monotonic_rate = 1.0 + engine.discipline().applied_frequency().fraction();
    Duration::from_secs_f64(((wake - now).get() * monotonic_rate).clamp(0.0, 3600.0))
}

/// Reads the clocks and hands the engine the kernel's correction, as every
/// engine call needs first; returns the engine's instant now.
fn observe(
    engine: &mut Engine,
    kernel: &mut (dyn ClockControl + Send),
    sources: &[SourceHandle],
    clock: &dyn LocalClock,
    engine_clock: EngineClock,
) -> EngineInstant {
    let r = engine_clock.read();
    let actions = engine.observe_clock(r.now, r.local, r.correction);
    apply_actions(engine, actions, kernel, sources, clock, engine_clock);
    r.now
}

fn apply_actions(
    engine: &mut Engine,
    actions: Vec<Action>,
    kernel: &mut (dyn ClockControl + Send),
    sources: &[SourceHandle],
    clock: &dyn LocalClock,
    engine_clock: EngineClock,
) {
    for action in actions {
        match action {
            Action::Clock(a) => {
                if engine.discipline().clock_control() {
                    match (a.apply(kernel), a) {
                        (Ok(()), ClockAction::Step(by)) => {
                            tracing::info!(step = by.get(), "stepped the clock by {by:+.9} s");
                        }
                        (Ok(()), _) => tracing::debug!("clock: {a:?}"),
                        (Err(e), _) => tracing::error!("clock: {a:?}: {e}"),
                    }
                }
            }
            Action::Poll(i) => {
                let nonce = NtpTimestamp(rand::random::<u64>());
                let Some(bytes) = engine.build_request(i, engine_clock.now(), nonce, clock.now())
                else {
                    continue;
                };
                if let Some(s) = sources.get(i) {
                    // A full queue means the task is stuck; that poll is lost
                    // and the reach register will show it.
                    let _ = s.tx.try_send(Outgoing { nonce, bytes });
                }
            }
        }
    }
}

/// Resolves one configured source, retrying until it does.
async fn resolve(config_index: usize, source: SourceConfig, tx: mpsc::Sender<Resolved>) {
    let want = if source.pool.is_some() {
        source.max_sources
    } else {
        1
    };
    // An NTS source's address is its NTS-KE server's.
    let port = if source.nts {
        source.nts_port
    } else {
        source.port
    };
    loop {
        let host = source.host().to_owned();
        let result = match host.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|it| {
                    let mut seen = Vec::new();
                    for a in it {
                        if !seen.contains(&a) {
                            seen.push(a);
                        }
                    }
                    seen
                }),
        };
        match result {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.truncate(want);
                let _ = tx
                    .send(Resolved {
                        config_index,
                        addrs,
                    })
                    .await;
                return;
            }
            Ok(_) => tracing::warn!("{host}: no addresses; retrying"),
            Err(e) => tracing::warn!("{host}: {e}; retrying"),
        }
        tokio::time::sleep(RESOLVE_RETRY).await;
    }
}

async fn spawn_source(
    index: usize,
    addr: SocketAddr,
    replies: mpsc::Sender<ReplyEvent>,
    clock: Arc<dyn LocalClock + Send + Sync>,
) -> std::io::Result<(mpsc::Sender<Outgoing>, JoinHandle<()>)> {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()
    } else {
        "0.0.0.0:0".parse()
    }
    .map_err(std::io::Error::other)?;
    let socket = TimestampedSocket::bind(bind).await?;
    socket.connect(addr).await?;
    let (tx, mut rx) = mpsc::channel::<Outgoing>(4);
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut last: Option<(NtpTimestamp, NtpTimestamp)> = None;
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(out) = out else { return };
                    let sent = clock.now();
                    match socket.send(&out.bytes).await {
                        Ok(_) => last = Some((out.nonce, sent)),
                        Err(e) => tracing::debug!("send to {addr}: {e}"),
                    }
                }
                r = socket.recv(&mut buf, clock.as_ref()) => {
                    match r {
                        Ok(r) if r.from == addr => {
                            let ev = ReplyEvent { index, bytes: buf[..r.len].to_vec(), received: r.at, sent: last };
                            if replies.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // ICMP port unreachable shows up here as ECONNREFUSED.
                        Err(e) => tracing::debug!("receive from {addr}: {e}"),
                    }
                }
            }
        }
    });
    Ok((tx, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pools_with_dead_sources_are_asked_again() {
        let config = EngineConfig::parse(
            "sources:\n  - server: 192.0.2.1\n  - pool: pool.example.org\n    maxSources: 3\n  - pool: other.example.org\n",
            std::path::Path::new("test.yaml"),
        )
        .expect("config");
        // Engine sources 0 (server), 1-3 (first pool), 4 (second pool).
        let source_configs = [0, 1, 1, 1, 2];
        assert_eq!(
            pools_to_refresh(&config, &source_configs, &[]),
            Vec::<usize>::new()
        );
        assert_eq!(
            pools_to_refresh(&config, &source_configs, &[0]),
            Vec::<usize>::new(),
            "a server is kept"
        );
        assert_eq!(pools_to_refresh(&config, &source_configs, &[2, 3]), vec![1]);
        assert_eq!(
            pools_to_refresh(&config, &source_configs, &[4, 1, 0]),
            vec![1, 2]
        );
    }
}
