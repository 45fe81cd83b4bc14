//! Command-line edge of the engine: `timectl daemon` and `timectl status`
//! argument structs and their run functions (kept here so the main CLI only
//! wires them in). Flags override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::config::{
    DEFAULT_CONTROL_SOCKET, DEFAULT_NTS_KE_PORT, EngineConfig, MetricsConfig, NtsServeConfig,
    RateLimitConfig, ServeConfig, SourceConfig, check_metrics_listen, parse_host_port,
};
use super::control;

#[derive(Args, Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Engine config file (YAML, see docs/engine-config.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Poll this server (repeatable); added to the file's sources.
    #[arg(long = "source", value_name = "HOST[:PORT]")]
    pub sources: Vec<String>,
    /// Serve NTP on this address (repeatable); enables serving.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Control socket path [default: the file's, else /run/timectl/engine.sock].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Compute everything, never touch the system clock (like chronyd -x).
    #[arg(long)]
    pub no_clock_control: bool,
    /// Keep the frequency estimate in this file across restarts.
    #[arg(long, value_name = "PATH")]
    pub drift_file: Option<PathBuf>,
    /// Poll interval bounds for --source servers (log2 seconds).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub minpoll: Option<i8>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub maxpoll: Option<i8>,
    /// Serve this stratum while unsynchronised (with --listen).
    #[arg(long, value_name = "N")]
    pub local_stratum: Option<u8>,
    /// Rate-limit each client (with --listen): on average one request per
    /// INTERVAL seconds, bursts of 8; over it, a RATE kiss-o'-death
    /// (serve.rateLimit in the config file).
    #[arg(long, value_name = "INTERVAL")]
    pub rate_limit: Option<f64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`, e.g.
    /// 127.0.0.1:9975); replaces the file's `metrics.listen`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Allow a --metrics address other than loopback (the endpoint has no
    /// authentication).
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// Authenticate every --source server with NTS (RFC 8915); their PORT
    /// is then the NTS-KE port (default 4460).
    #[arg(long)]
    pub nts: bool,
    /// Trust these CA certificates (PEM) for NTS-KE servers instead of the
    /// system's store (the file's `ntsTrustedCerts`).
    #[arg(long, value_name = "FILE")]
    pub nts_ca: Option<PathBuf>,
    /// Serve NTS with this certificate chain (PEM; needs --nts-key and
    /// NTP serving, e.g. --listen).
    #[arg(long, value_name = "FILE", requires = "nts_key")]
    pub nts_cert: Option<PathBuf>,
    /// Private key (PEM) of --nts-cert.
    #[arg(long, value_name = "FILE", requires = "nts_cert")]
    pub nts_key: Option<PathBuf>,
    /// Serve NTS-KE on this address (repeatable) [default: 0.0.0.0:4460
    /// and [::]:4460].
    #[arg(long, value_name = "ADDR:PORT", requires = "nts_cert")]
    pub nts_listen: Vec<SocketAddr>,
    /// Keep the NTS cookie keys in this directory across restarts.
    #[arg(long, value_name = "DIR", requires = "nts_cert")]
    pub nts_key_dir: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control: PathBuf,
    /// Print the versioned JSON document (docs/engine-control.md).
    #[arg(long)]
    pub json: bool,
    /// Ask the daemon to step the clock once by its current offset estimate.
    #[arg(long)]
    pub step_now: bool,
}

/// The effective config: the file (if any) with the flags applied.
pub fn effective_config(args: &DaemonArgs) -> anyhow::Result<EngineConfig> {
    let mut config = match &args.config {
        Some(path) => EngineConfig::load(path)?,
        None => EngineConfig::parse("", std::path::Path::new("<flags>"))?,
    };
    for s in &args.sources {
        let (host, port) = parse_host_port(s).map_err(|e| anyhow::anyhow!("--source {e}"))?;
        let mut sc = if args.nts {
            // HOST:PORT names the NTS-KE server; a bare HOST means 4460.
            let ke_port = if port == 123 && !has_explicit_port(s) {
                DEFAULT_NTS_KE_PORT
            } else {
                port
            };
            SourceConfig {
                nts: true,
                nts_port: ke_port,
                ..SourceConfig::server(&host, 123)
            }
        } else {
            SourceConfig::server(&host, port)
        };
        if let Some(p) = args.minpoll {
            sc.minpoll = p;
            sc.maxpoll = sc.maxpoll.max(p);
        }
        if let Some(p) = args.maxpoll {
            sc.maxpoll = p;
        }
        config.sources.push(sc);
    }
    if !args.listen.is_empty() || args.local_stratum.is_some() || args.rate_limit.is_some() {
        let serve = config.serve.get_or_insert_with(|| ServeConfig {
            listen: vec![],
            allow: vec![],
            deny: vec![],
            rate_limit: None,
            local_stratum: None,
            nts: None,
        });
        serve.listen.extend(args.listen.iter().copied());
        if args.local_stratum.is_some() {
            serve.local_stratum = args.local_stratum;
        }
        if let Some(interval) = args.rate_limit {
            if !(interval.is_finite() && interval > 0.0) {
                anyhow::bail!(
                    "--rate-limit: expected a positive number of seconds, found {interval}"
                );
            }
            serve.rate_limit = Some(RateLimitConfig {
                interval,
                burst: serve.rate_limit.map_or(8, |r| r.burst),
            });
        }
    }
    if let Some(ca) = &args.nts_ca {
        config.nts_trusted_certs = Some(ca.clone());
    }
    if let (Some(certificate), Some(key)) = (&args.nts_cert, &args.nts_key) {
        let Some(serve) = config.serve.as_mut() else {
            anyhow::bail!("--nts-cert: NTS is served beside NTP: add --listen ADDR:PORT");
        };
        let nts = serve.nts.get_or_insert_with(|| NtsServeConfig {
            certificate: certificate.clone(),
            key: key.clone(),
            listen: vec![],
            key_dir: None,
            max_connections: 100,
        });
        nts.certificate = certificate.clone();
        nts.key = key.clone();
        if !args.nts_listen.is_empty() {
            nts.listen = args.nts_listen.clone();
        }
        if args.nts_key_dir.is_some() {
            nts.key_dir = args.nts_key_dir.clone();
        }
    }
    if let Some(c) = &args.control {
        config.control_socket = Some(c.clone());
    }
    if config.control_socket.is_none() {
        config.control_socket = Some(PathBuf::from(DEFAULT_CONTROL_SOCKET));
    }
    if args.no_clock_control {
        config.clock_control = false;
    }
    if let Some(d) = &args.drift_file {
        config.drift_file = Some(d.clone());
    }
    if let Some(listen) = args.metrics {
        check_metrics_listen(listen, args.metrics_allow_remote).map_err(|p| {
            anyhow::anyhow!(
                "--metrics: {}",
                p.with_remedy("add --metrics-allow-remote to serve it beyond this host")
            )
        })?;
        config.metrics = Some(MetricsConfig {
            listen,
            allow_remote: args.metrics_allow_remote,
        });
    }
    config.validate().map_err(|m| anyhow::anyhow!("{m}"))?;
    Ok(config)
}

/// Whether a `--source` value names a port (`HOST:PORT`, `[V6]:PORT`).
fn has_explicit_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    if s.parse::<std::net::IpAddr>().is_ok() || s.starts_with('[') {
        return false;
    }
    s.contains(':')
}

/// `timectl daemon`: runs until SIGTERM or SIGINT. Returns the exit code.
pub fn run_daemon(args: DaemonArgs) -> anyhow::Result<i32> {
    let config = effective_config(&args)?;
    if args.check {
        crate::cli::out(&format!(
            "configuration ok: {} source(s), serving: {}\n",
            config.sources.len(),
            config.serve.is_some()
        ))?;
        return Ok(0);
    }
    super::logging::init();
    // A panic anywhere in the daemon ends the process (systemd restarts it)
    // rather than leaving it half-working with one task gone.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        super::daemon::run(config, shutdown).await
    })?;
    Ok(0)
}

/// `timectl status`: prints the daemon's state. Exit code 0 when it
/// answered (whether synchronised or not), 1 when it could not be reached.
pub fn run_status(args: StatusArgs) -> anyhow::Result<i32> {
    let timeout = Duration::from_secs(5);
    if args.step_now {
        let doc = control::step_now(&args.control, timeout)?;
        if args.json {
            crate::cli::out(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
        } else if doc.ok {
            crate::cli::out(&format!(
                "stepped the clock by {:+.9} seconds\n",
                doc.stepped_seconds.unwrap_or(0.0)
            ))?;
        } else {
            crate::cli::out(&format!(
                "not stepped: {}\n",
                doc.error.as_deref().unwrap_or("unknown reason")
            ))?;
        }
        return Ok(if doc.ok { 0 } else { 1 });
    }
    let doc = control::status(&args.control, timeout)?;
    if args.json {
        crate::cli::out(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        crate::cli::out(&control::render_status(&doc))?;
    }
    Ok(0)
}
