//! A real firewalld without a container: a private dbus-daemon (system bus
//! type, its own socket) and `firewalld --nofork --nopid --system-config DIR`
//! inside a fresh network namespace, so its nftables rules only exist there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{NetNs, describe, run, stop_child, temp_dir, unique_name, wait_for};

pub struct PrivateFirewalld {
    // Drop order: processes first (see Drop), then the namespace and files.
    firewalld: Child,
    dbus: Child,
    netns: NetNs,
    dir: tempfile::TempDir,
    bus_address: String,
}

impl PrivateFirewalld {
    /// Starts dbus-daemon and firewalld and waits until firewalld's D-Bus
    /// `state` property is RUNNING (about a second).
    pub fn start() -> PrivateFirewalld {
        let name = unique_name();
        let netns = NetNs::named(&format!("{name}-fw"));
        let dir = temp_dir(&format!("{name}-firewalld"), 0o755);
        let socket = dir.path().join("system_bus_socket");
        let bus_address = format!("unix:path={}", socket.display());
        let config = dir.path().join("system-config");
        std::fs::create_dir(&config).expect("create firewalld config dir");
        let bus_conf = dir.path().join("bus.conf");
        std::fs::write(&bus_conf, bus_config(&socket)).expect("write bus config");
        let log = |file: &str| {
            std::fs::File::create(dir.path().join(file))
                .unwrap_or_else(|e| panic!("create {file}: {e}"))
        };

        let mut dbus_cmd = Command::new("dbus-daemon");
        dbus_cmd
            .arg(format!("--config-file={}", bus_conf.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            .stdin(Stdio::null())
            .stdout(log("dbus.log"))
            .stderr(log("dbus.err"));
        let dbus = dbus_cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&dbus_cmd)));
        wait_for("private dbus-daemon socket", Duration::from_secs(5), || {
            if socket.exists() {
                Ok(())
            } else {
                Err(format!("{} missing", socket.display()))
            }
        });

        let mut fw_cmd = netns.command("firewalld");
        fw_cmd
            .args(["--nofork", "--nopid", "--system-config"])
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address)
            .stdin(Stdio::null())
            .stdout(log("firewalld.log"))
            .stderr(log("firewalld.err"));
        let firewalld = fw_cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&fw_cmd)));

        let mut fw = PrivateFirewalld {
            firewalld,
            dbus,
            netns,
            dir,
            bus_address,
        };
        wait_for("firewalld state RUNNING", Duration::from_secs(20), || {
            if let Ok(Some(status)) = fw.firewalld.try_wait() {
                panic!("firewalld exited ({status}):\n{}", fw.log());
            }
            let state = fw.state()?;
            if state == "RUNNING" {
                Ok(())
            } else {
                Err(state)
            }
        });
        fw
    }

    /// firewalld's `state` property ("INIT", "RUNNING", "FAILED").
    pub fn state(&self) -> Result<String, String> {
        super::bus_string_property(
            &self.bus_address,
            "org.fedoraproject.FirewallD1",
            "/org/fedoraproject/FirewallD1",
            "org.fedoraproject.FirewallD1",
            "state",
        )
    }

    /// D-Bus address of the private system bus firewalld is on.
    pub fn bus_address(&self) -> &str {
        &self.bus_address
    }
    /// The namespace whose nftables firewalld manages.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }
    /// The `--system-config` directory (what /etc/firewalld is on a host):
    /// permanent configuration lands here.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("system-config")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn firewalld_pid(&self) -> u32 {
        self.firewalld.id()
    }

    /// firewall-cmd against this firewalld.
    pub fn firewall_cmd(&self, args: &[&str]) -> Output {
        run(Command::new("firewall-cmd")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address))
    }

    /// firewalld's and dbus-daemon's output, for failure messages.
    pub fn log(&self) -> String {
        ["firewalld.log", "firewalld.err", "dbus.err"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PrivateFirewalld {
    fn drop(&mut self) {
        stop_child(&mut self.firewalld, Duration::from_secs(10));
        stop_child(&mut self.dbus, Duration::from_secs(3));
    }
}

/// A system-type bus listening on `socket`: the stock policy files (firewalld's
/// included) plus root may own and call anything, as on a real host.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow own="*"/>
    <allow send_type="method_call"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
</busconfig>
"#,
        socket.display()
    )
}
