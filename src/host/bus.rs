//! A blocking handle on the D-Bus system bus for the synchronous host
//! traits: a zbus connection plus the small current-thread tokio runtime
//! that drives it. Every call runs to completion in `block_on`; the
//! connection's reader task runs only then, which is enough because replies
//! and signals are only awaited inside those calls (anything that arrives in
//! between waits in the socket). No extra thread, calls stay in order.
//!
//! The address is `DBUS_SYSTEM_BUS_ADDRESS` when set (tests reach a
//! container's bus through its bind-mounted socket), else the standard
//! system bus socket.

use std::future::Future;
use std::time::Duration;

use super::HostError;

/// The standard system bus socket.
pub const DEFAULT_ADDRESS: &str = "unix:path=/run/dbus/system_bus_socket";

/// One D-Bus method call may take this long (a systemd reload included).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SystemBus {
    // Dropped before the runtime it was built on.
    conn: zbus::Connection,
    runtime: tokio::runtime::Runtime,
    address: String,
}

/// The system bus address this process would use.
pub fn system_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| DEFAULT_ADDRESS.to_string())
}

/// Whether the bus is this machine's own (not a container's reached from
/// outside), so local tools such as `journalctl` see the same system.
pub fn is_local_address(address: &str) -> bool {
    address == DEFAULT_ADDRESS || address == "unix:path=/var/run/dbus/system_bus_socket"
}

/// Map a D-Bus error: permission problems and a missing bus or service are
/// "could not see" (a plan reports them as such), anything else is a plain
/// failure.
pub fn error(context: &str, e: zbus::Error) -> HostError {
    use zbus::fdo::Error as Fdo;
    match &e {
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            Fdo::AccessDenied(m)
            | Fdo::AuthFailed(m)
            | Fdo::InteractiveAuthorizationRequired(m) => {
                HostError::Permission(format!("{context}: {m}"))
            }
            Fdo::ServiceUnknown(m) | Fdo::NameHasNoOwner(m) | Fdo::NoServer(m) => {
                HostError::Unavailable(format!("{context}: {m}"))
            }
            other => HostError::msg(format!("{context}: {other}")),
        },
        zbus::Error::MethodError(name, message, _) => {
            let message = message.clone().unwrap_or_default();
            let name = name.as_str();
            if name == "org.freedesktop.DBus.Error.AccessDenied"
                || name.ends_with(".InteractiveAuthorizationRequired")
                || name.ends_with(".NotAuthorized")
                // firewalld's polkit refusal
                || name.ends_with(".NotAuthorizedException")
            {
                HostError::Permission(format!("{context}: {message}"))
            } else {
                HostError::msg(format!("{context}: {message} ({name})"))
            }
        }
        zbus::Error::InputOutput(_) | zbus::Error::Handshake(_) | zbus::Error::Address(_) => {
            HostError::Unavailable(format!("{context}: {e}"))
        }
        _ => HostError::msg(format!("{context}: {e}")),
    }
}

impl SystemBus {
    /// Connect to the system bus.
    pub fn connect() -> Result<SystemBus, HostError> {
        Self::connect_to(&system_address())
    }

    /// Connect to the bus at `address` (`unix:path=...`).
    pub fn connect_to(address: &str) -> Result<SystemBus, HostError> {
        let address = address.to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HostError::msg(format!("cannot start a tokio runtime: {e}")))?;
        let conn = runtime.block_on(async {
            zbus::connection::Builder::address(address.as_str())
                .method_timeout(CALL_TIMEOUT)
                .build()
                .await
                .map_err(|e| {
                    HostError::Unavailable(format!(
                        "cannot connect to the system bus at {address}: {e}"
                    ))
                })
        })?;
        Ok(SystemBus {
            conn,
            runtime,
            address,
        })
    }

    pub fn conn(&self) -> &zbus::Connection {
        &self.conn
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Run a future on this bus's runtime to completion.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Whether a service currently owns `name` on the bus.
    pub fn has_owner(&self, name: &str) -> Result<bool, HostError> {
        self.block_on(async {
            let dbus = zbus::fdo::DBusProxy::new(&self.conn)
                .await
                .map_err(|e| error("the bus", e))?;
            let bus_name = zbus::names::BusName::try_from(name)
                .map_err(|e| HostError::msg(format!("invalid bus name {name}: {e}")))?;
            dbus.name_has_owner(bus_name)
                .await
                .map_err(|e| error(&format!("asking the bus about {name}"), e.into()))
        })
    }
}
