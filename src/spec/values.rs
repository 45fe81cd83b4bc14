//! Small value types of the desired-state file that validate themselves while
//! they are deserialised, so that a bad value is reported at its own line and
//! column by the YAML loader: durations (`1s`, `100ms`), host names and
//! addresses, networks in CIDR notation, and secrets that never print.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serde and JSON Schema for a value written as a string: parsed with its
/// `FromStr` (whose message the loader reports at the value), written with
/// its `Display`, described by the given schema.
macro_rules! string_value {
    ($type:ident, $name:literal, $schema:tt) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A length of time written with a unit: `250ms`, `1s`, `1.5s`, `2m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

const DURATION_EXPECTED: &str =
    "expected a duration with a unit, like 500ms, 1s, 1.5s, 2m or 1h (units: ns, us, ms, s, m, h)";

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim();
        if number.is_empty() {
            return Err(format!("invalid duration {s:?}: {DURATION_EXPECTED}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: {DURATION_EXPECTED}"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: the number needs a unit; {DURATION_EXPECTED}"
                ));
            }
            _ => return Err(format!("invalid duration {s:?}: {DURATION_EXPECTED}")),
        };
        let secs = value * scale;
        if !secs.is_finite() || secs > 1e9 {
            return Err(format!("invalid duration {s:?}: too large"));
        }
        Ok(Duration(std::time::Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let nanos = d.as_nanos();
        if nanos == 0 {
            return write!(f, "0s");
        }
        for (unit, per) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if nanos.is_multiple_of(per) {
                return write!(f, "{}{unit}", nanos / per);
            }
        }
        if nanos >= 1_000_000_000 {
            write!(f, "{}s", d.as_secs_f64())
        } else {
            write!(f, "{nanos}ns")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: the number needs a unit, for example {v}s; {DURATION_EXPECTED}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: {DURATION_EXPECTED}"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: the number needs a unit; {DURATION_EXPECTED}"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|sec|m|min|h)$",
            "description": "A duration with a unit: 500ms, 1s, 1.5s, 2m, 1h.",
            "examples": ["100ms", "1s", "60s"]
        })
    }
}

/// An NTP server or pool: a DNS name (RFC 1123) or an IPv4/IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected a host name (like time.example.com) or an IPv4/IPv6 address";
        if s.parse::<IpAddr>().is_ok() {
            return Ok(HostName(s.to_string()));
        }
        if s.is_empty() {
            return Err(format!("empty server name: {expected}"));
        }
        if s.contains("://") {
            return Err(format!(
                "invalid server {s:?}: a URL is not a host name; {expected}"
            ));
        }
        if s.contains(':') {
            return Err(format!(
                "invalid server {s:?}: not a valid IPv6 address and a host name has no ':' (use the `port` key for a port); {expected}"
            ));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.len() > 253 {
            return Err(format!(
                "invalid server {s:?}: longer than 253 characters; {expected}"
            ));
        }
        let all_numeric = name
            .split('.')
            .all(|l| l.chars().all(|c| c.is_ascii_digit()));
        if all_numeric {
            return Err(format!(
                "invalid server {s:?}: not a valid IPv4 address; {expected}"
            ));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "invalid server {s:?}: label {label:?} is not a valid DNS label (letters, digits and '-', 1 to 63 characters, not starting or ending with '-'); {expected}"
                ));
            }
        }
        Ok(HostName(s.to_string()))
    }
}

string_value!(HostName, "HostName", {
    "type": "string",
    "description": "A DNS host name (RFC 1123) or an IPv4/IPv6 address.",
    "examples": ["time.example.com", "192.0.2.10", "2001:db8::123"]
});

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`) or a single
/// address (taken as /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            if net.trunc() != net {
                return Err(format!(
                    "invalid network {s:?}: host bits are set; did you mean {}?",
                    net.trunc()
                ));
            }
            return Ok(Cidr(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        Err(format!(
            "invalid network {s:?}: expected CIDR notation like 10.0.0.0/8 or 2001:db8::/32, or a single address"
        ))
    }
}

string_value!(Cidr, "Cidr", {
    "type": "string",
    "description": "A network in CIDR notation, or a single address.",
    "examples": ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"]
});

/// A socket address to listen on: an IP address and a port (`127.0.0.1:9975`,
/// `[::1]:9975`). Host names are refused: a listener binds an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub SocketAddr);

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(ListenAddr).map_err(|_| {
            format!(
                "invalid address {s:?}: expected ADDR:PORT with an IP address, like 127.0.0.1:9975 or [::1]:9975"
            )
        })
    }
}

string_value!(ListenAddr, "ListenAddr", {
    "type": "string",
    "description": "An IP address and a port: ADDR:PORT, IPv6 in brackets.",
    "examples": ["127.0.0.1:9975", "[::1]:9975"]
});

/// An absolute file path written into a daemon's config file (the drift
/// file). chrony.conf and ntp.conf have no quoting, and ntpd ends a line at
/// `#`: a path with whitespace, a control character or `#` could not be
/// written as one word, and a newline would add a directive. Refused here,
/// at the value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigPath(String);

impl ConfigPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ConfigPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected an absolute path without spaces, control characters or '#', like /var/lib/chrony/drift";
        if let Some(bad) = s
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || *c == '#')
        {
            return Err(format!(
                "invalid path {s:?}: it contains {}, which a config file line cannot hold; {expected}",
                describe_char(bad)
            ));
        }
        if !s.starts_with('/') {
            return Err(format!("invalid path {s:?}: not absolute; {expected}"));
        }
        if s.split('/').any(|part| part == "..") {
            return Err(format!("invalid path {s:?}: it contains '..'; {expected}"));
        }
        Ok(ConfigPath(s.to_string()))
    }
}

string_value!(ConfigPath, "ConfigPath", {
    "type": "string",
    "pattern": r"^/[^\s#]*$",
    "description": "An absolute path without whitespace, control characters or '#'.",
    "examples": ["/var/lib/chrony/drift"]
});

/// A character as an error message names it: "a newline", "a tab",
/// "U+0000", "'#'".
pub fn describe_char(c: char) -> String {
    match c {
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c if c.is_control() || c.is_whitespace() => format!("the character U+{:04X}", c as u32),
        c => format!("{c:?}"),
    }
}

/// A secret (an NTP symmetric key). Its text is never shown: not in Debug,
/// not in diffs, not in JSON plans.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(serde::de::Error::custom(
                "invalid key secret: expected a non-empty string without spaces (ASCII text, or HEX:... for hexadecimal)",
            ));
        }
        Ok(Secret(s))
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Key material. Never shown in plans, diffs or JSON.",
            "writeOnly": true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!("1s".parse::<Duration>().unwrap(), Duration::from_secs(1));
        assert_eq!(
            "100ms".parse::<Duration>().unwrap(),
            Duration::from_millis(100)
        );
        assert_eq!(
            "1.5s".parse::<Duration>().unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::from_secs(120));
        assert_eq!(
            "250us".parse::<Duration>().unwrap().0,
            std::time::Duration::from_micros(250)
        );
        for bad in ["1", "s", "1x", "-1s", "1 parsec", "", "1.2.3s"] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn durations_display_round_trip() {
        for text in ["1s", "100ms", "2m", "1h", "250us", "1500ms"] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_secs(60).to_string(), "1m");
    }

    #[test]
    fn host_names_and_addresses() {
        for good in [
            "time.bora.net",
            "2.rhel.pool.ntp.org",
            "ntp1",
            "192.0.2.1",
            "2001:db8::1",
            "time.example.com.",
        ] {
            assert!(
                good.parse::<HostName>().is_ok(),
                "{good} should be accepted"
            );
        }
        for bad in [
            "",
            "ntp..example.com",
            "-ntp.example.com",
            "ntp_1.example.com",
            "time example.com",
            "ntp://time.example.com",
            "300.1.1.1",
            "10.0.0",
            "time.example.com:123",
        ] {
            assert!(
                bad.parse::<HostName>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!(
            "10.0.0.1/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!("ten/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "127.0.0.1:9975".parse::<ListenAddr>().unwrap().to_string(),
            "127.0.0.1:9975"
        );
        assert_eq!("[::1]:9975".parse::<ListenAddr>().unwrap().0.port(), 9975);
        for bad in [
            "localhost:9975",
            "127.0.0.1",
            "::1:9975",
            "127.0.0.1:99999",
            "",
        ] {
            let e = bad.parse::<ListenAddr>().unwrap_err();
            assert!(e.contains("expected ADDR:PORT"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(format!("{s:?}"), "(sensitive)");
        assert_eq!(s.expose(), "hunter2");
    }
}
