//! A real chronyd as an NTP peer (`chronyd -x`: never touches the clock), and
//! parsers for `chronyc -c tracking` / `chronyc -c sources`, usable on output
//! from a peer or from a chronyd inside a container.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    NetNs, Pki, describe, run, stop_child, temp_dir, unique_name, wait_for, without_clock_caps,
};

/// Builder for a [`ChronyPeer`]. Defaults: 127.0.0.1:11123, `local stratum
/// 8`, serving 127.0.0.0/8, in the host's network namespace.
pub struct ChronyPeerBuilder {
    bind: IpAddr,
    port: u16,
    local_stratum: Option<u8>,
    allow: Vec<String>,
    extra: Vec<String>,
    netns: Option<String>,
}

impl ChronyPeerBuilder {
    /// NTP port to serve on (0 = no server socket, client only).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    /// Address to bind the NTP socket to.
    pub fn bind(mut self, addr: &str) -> Self {
        self.bind = addr
            .parse()
            .unwrap_or_else(|e| panic!("bad bind address {addr}: {e}"));
        self
    }
    /// `local stratum N` (serve time while unsynchronised); `None` = only
    /// serve when synchronised to its own sources.
    pub fn local_stratum(mut self, stratum: Option<u8>) -> Self {
        self.local_stratum = stratum;
        self
    }
    /// Adds an `allow` line (replaces the default 127.0.0.0/8 on first use).
    pub fn allow(mut self, subnet: &str) -> Self {
        if self.allow == ["127.0.0.0/8"] {
            self.allow.clear();
        }
        self.allow.push(subnet.to_string());
        self
    }
    /// Adds a raw chrony.conf line (e.g. `server 127.0.0.1 port 11124 iburst`).
    pub fn line(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }
    /// Serves NTS too: NTS-KE on TCP `ke_port` with `pki`'s server
    /// certificate and key.
    pub fn nts_server(self, pki: &Pki, ke_port: u16) -> Self {
        self.line(&format!(
            "ntsservercert {}",
            pki.path("server.pem").display()
        ))
        .line(&format!(
            "ntsserverkey {}",
            pki.path("server.key").display()
        ))
        .line(&format!("ntsport {ke_port}"))
    }
    /// Runs the peer inside `netns` (e.g. a container's, to share its
    /// loopback).
    pub fn netns(mut self, netns: &NetNs) -> Self {
        self.netns = Some(netns.name().to_string());
        self
    }

    /// Writes the config, starts `chronyd -x -d -u root -f CONF` and waits
    /// until its command socket answers (NTP sockets are open by then).
    pub fn start(self) -> ChronyPeer {
        let name = unique_name();
        // chronyd refuses a command socket in a world-accessible directory.
        let dir = temp_dir(&format!("{name}-chronyd"), 0o750);
        let socket = dir.path().join("chronyd.sock");
        let mut conf = vec![
            format!("port {}", self.port),
            format!("bindaddress {}", self.bind),
            "cmdport 0".to_string(),
            format!("bindcmdaddress {}", socket.display()),
            format!("pidfile {}", dir.path().join("chronyd.pid").display()),
            format!("driftfile {}", dir.path().join("drift").display()),
        ];
        if let Some(stratum) = self.local_stratum {
            conf.push(format!("local stratum {stratum}"));
        }
        conf.extend(self.allow.iter().map(|a| format!("allow {a}")));
        conf.extend(self.extra.iter().cloned());
        let conf_path = dir.path().join("chrony.conf");
        std::fs::write(&conf_path, conf.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", conf_path.display()));
        let log_path = dir.path().join("chronyd.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("dup log file");

        let conf_arg = conf_path.to_string_lossy().into_owned();
        let args = ["-x", "-d", "-u", "root", "-f", conf_arg.as_str()];
        // -x already keeps chronyd off the clock; dropping CAP_SYS_TIME makes
        // that hold even if a test passes a config that asks otherwise.
        let argv = without_clock_caps("chronyd");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(&argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
        let mut peer = ChronyPeer {
            child,
            dir,
            socket,
            bind: self.bind,
            port: self.port,
            netns: self.netns,
        };
        wait_for(
            "chronyd peer to answer on its command socket",
            Duration::from_secs(5),
            || {
                if let Ok(Some(status)) = peer.child.try_wait() {
                    panic!("chronyd peer exited ({status}):\n{}", peer.log());
                }
                peer.try_chronyc(&["-c", "tracking"]).map(|_| ())
            },
        );
        // chronyd logs and carries on when it cannot bind: a peer that does
        // not serve is a broken fixture, not a test result.
        let log = peer.log();
        if log.contains("Could not open") {
            stop_child(&mut peer.child, Duration::from_secs(2));
            panic!("chronyd peer could not open its sockets:\n{log}");
        }
        peer
    }
}

/// A running chronyd peer, killed (by its own PID) on Drop.
pub struct ChronyPeer {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    bind: IpAddr,
    port: u16,
    netns: Option<String>,
}

impl ChronyPeer {
    pub fn builder() -> ChronyPeerBuilder {
        ChronyPeerBuilder {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 11123,
            local_stratum: Some(8),
            allow: vec!["127.0.0.0/8".to_string()],
            extra: Vec::new(),
            netns: None,
        }
    }

    /// A stratum-8 server on 127.0.0.1:`port` in the host namespace.
    pub fn server(port: u16) -> ChronyPeer {
        Self::builder().port(port).start()
    }

    /// A client-only chronyd (no NTP server socket, no local stratum) of
    /// `addr:port`, polling as fast as chrony allows (`iburst minpoll -2
    /// maxpoll 0`): the real client for checking that a server under test is
    /// selected. Add `.netns(..)` before `.start()` as needed.
    pub fn client_of(addr: &str, port: u16) -> ChronyPeerBuilder {
        Self::client_with(&format!(
            "server {addr} port {port} iburst minpoll -2 maxpoll 0"
        ))
    }

    /// A client-only chronyd whose source is `server_line` (e.g. an NTS
    /// source: `server ADDR iburst nts ntsport KE`).
    pub fn client_with(server_line: &str) -> ChronyPeerBuilder {
        let mut builder = Self::builder()
            .port(0)
            .local_stratum(None)
            .line(server_line);
        builder.allow.clear();
        builder
    }

    /// Waits until this chronyd selects (`^*`) the source at `address`.
    pub fn wait_selected(&self, address: &str, timeout: Duration) -> ChronySource {
        wait_for(
            &format!("chronyd peer to select {address}"),
            timeout,
            || {
                let text = self.try_chronyc(&["-c", "sources"])?;
                let sources = ChronySource::parse_csv(&text)?;
                sources
                    .iter()
                    .find(|s| s.address == address && s.selected())
                    .cloned()
                    .ok_or_else(|| format!("{sources:?}"))
            },
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn bind(&self) -> IpAddr {
        self.bind
    }
    pub fn socket(&self) -> &Path {
        &self.socket
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// chronyd's own log (stdout and stderr of `-d`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chronyd.log")).unwrap_or_default()
    }

    /// `chronyc -h SOCKET ARGS...`; Err with stderr when it fails.
    pub fn try_chronyc(&self, args: &[&str]) -> Result<String, String> {
        let socket = self.socket.to_string_lossy().into_owned();
        let out = run(Command::new("chronyc")
            .args(["-n", "-h", socket.as_str()])
            .args(args));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "chronyc {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Panics with the log when chronyd has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("chronyd peer exited ({status}):\n{}", self.log());
        }
    }

    pub fn chronyc(&self, args: &[&str]) -> String {
        self.try_chronyc(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn tracking(&self) -> ChronyTracking {
        ChronyTracking::parse_csv(&self.chronyc(&["-c", "tracking"]))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn sources(&self) -> Vec<ChronySource> {
        ChronySource::parse_csv(&self.chronyc(&["-c", "sources"])).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `chronyc -c authdata`: how each source is authenticated.
    pub fn authdata(&self) -> Vec<ChronyAuth> {
        ChronyAuth::parse_csv(&self.chronyc(&["-c", "authdata"])).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One line of `chronyc -c authdata`: name, mode (`NTS`, `SK`, `-`), key
/// id, type, key length, last KE ago, attempts, NAKs, cookies, cookie length.
#[derive(Clone, Debug, PartialEq)]
pub struct ChronyAuth {
    pub address: String,
    pub mode: String,
    /// Seconds since the last key exchange.
    pub last_ke: u64,
    pub ke_attempts: u32,
    pub naks: u32,
    pub cookies: u32,
    pub cookie_length: u32,
}

impl ChronyAuth {
    pub fn parse_csv(text: &str) -> Result<Vec<ChronyAuth>, String> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                fn num<T: std::str::FromStr>(
                    f: &[&str],
                    i: usize,
                    line: &str,
                ) -> Result<T, String> {
                    f.get(i)
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| format!("authdata field {i} in {line:?}"))
                }
                let num32 = |i| num::<u32>(&f, i, line);
                if f.len() < 10 {
                    return Err(format!("authdata line with {} fields: {line:?}", f.len()));
                }
                Ok(ChronyAuth {
                    address: f[0].to_string(),
                    mode: f[1].to_string(),
                    last_ke: num(&f, 5, line)?,
                    ke_attempts: num32(6)?,
                    naks: num32(7)?,
                    cookies: num32(8)?,
                    cookie_length: num32(9)?,
                })
            })
            .collect()
    }
}

impl Drop for ChronyPeer {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(3));
    }
}

/// One line of `chronyc -c tracking`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChronyTracking {
    pub ref_id: String,
    pub ref_name: String,
    pub stratum: u8,
    pub ref_time: f64,
    /// Seconds; positive = system clock fast of NTP time.
    pub system_offset: f64,
    pub last_offset: f64,
    pub rms_offset: f64,
    /// ppm; positive = slow.
    pub frequency_ppm: f64,
    pub residual_freq_ppm: f64,
    pub skew_ppm: f64,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub update_interval: f64,
    /// "Normal", "Insert second", "Delete second" or "Not synchronised".
    pub leap: String,
}

impl ChronyTracking {
    pub fn parse_csv(text: &str) -> Result<ChronyTracking, String> {
        let line = text.lines().next().unwrap_or("");
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 14 {
            return Err(format!(
                "chronyc -c tracking: expected 14 fields, got {}: {line:?}",
                f.len()
            ));
        }
        let num = |i: usize| -> Result<f64, String> {
            f[i].parse()
                .map_err(|e| format!("chronyc -c tracking field {i} {:?}: {e}", f[i]))
        };
        Ok(ChronyTracking {
            ref_id: f[0].to_string(),
            ref_name: f[1].to_string(),
            stratum: f[2]
                .parse()
                .map_err(|e| format!("chronyc -c tracking stratum {:?}: {e}", f[2]))?,
            ref_time: num(3)?,
            system_offset: num(4)?,
            last_offset: num(5)?,
            rms_offset: num(6)?,
            frequency_ppm: num(7)?,
            residual_freq_ppm: num(8)?,
            skew_ppm: num(9)?,
            root_delay: num(10)?,
            root_dispersion: num(11)?,
            update_interval: num(12)?,
            leap: f[13].to_string(),
        })
    }

    pub fn synchronised(&self) -> bool {
        self.leap != "Not synchronised" && self.stratum > 0 && self.stratum < 16
    }
}

/// One line of `chronyc -c sources`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChronySource {
    /// `^` server, `=` peer, `#` reference clock.
    pub mode: char,
    /// `*` selected, `+` combined, `-` not combined, `?` unreachable,
    /// `x` falseticker, `~` too variable.
    pub state: char,
    pub address: String,
    pub stratum: u8,
    pub poll: i8,
    /// The reach register (chronyc prints it in octal).
    pub reach: u8,
    /// Seconds since the last sample; None when chronyc prints `-` (never).
    pub last_rx: Option<u64>,
    pub offset: f64,
    pub measured_offset: f64,
    pub error: f64,
}

impl ChronySource {
    pub fn parse_csv(text: &str) -> Result<Vec<ChronySource>, String> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                if f.len() != 10 {
                    return Err(format!(
                        "chronyc -c sources: expected 10 fields, got {}: {line:?}",
                        f.len()
                    ));
                }
                let bad = |i: usize, e: &dyn std::fmt::Display| {
                    format!("chronyc -c sources field {i} {:?} in {line:?}: {e}", f[i])
                };
                let ch = |i: usize| f[i].chars().next().ok_or_else(|| bad(i, &"empty"));
                Ok(ChronySource {
                    mode: ch(0)?,
                    state: ch(1)?,
                    address: f[2].to_string(),
                    stratum: f[3].parse().map_err(|e| bad(3, &e))?,
                    poll: f[4].parse().map_err(|e| bad(4, &e))?,
                    reach: u8::from_str_radix(f[5], 8).map_err(|e| bad(5, &e))?,
                    last_rx: match f[6] {
                        "-" => None,
                        v => Some(v.parse().map_err(|e| bad(6, &e))?),
                    },
                    offset: f[7].parse().map_err(|e| bad(7, &e))?,
                    measured_offset: f[8].parse().map_err(|e| bad(8, &e))?,
                    error: f[9].parse().map_err(|e| bad(9, &e))?,
                })
            })
            .collect()
    }

    pub fn selected(&self) -> bool {
        self.state == '*'
    }
}
