//! nftables through its JSON interface (`nft -j`), for live hosts without
//! firewalld.
//!
//! Why a rule in the host's own chains and not a table of timectl's own: in
//! nftables every base chain on the input hook sees every packet, and an
//! `accept` in one chain does not stop a `drop` in another. A separate
//! `inet timectl` table could never open a port that the host's own
//! `inet filter input` chain drops. So timectl inserts one rule at the top of
//! each input chain that would drop UDP 123:
//!
//! ```text
//! udp dport 123 accept comment "timectl: NTP (UDP 123)"
//! ```
//!
//! The comment is how timectl recognises its rule: observing, adding it
//! again (never twice) and removing it touch nothing else. A chain
//! "filters" UDP 123 when its policy is drop, or when one of its own rules
//! drops or rejects with no condition other than UDP / port 123 (a final
//! `reject`, `udp dport 123 drop`); jumps into other chains are not
//! followed. A chain that already accepts `udp dport 123` without other
//! conditions counts as open, whoever added the rule. With no filtering
//! chain at all nothing blocks NTP and nothing is added.
//!
//! The rules are read loosely as `serde_json::Value` rather than through a
//! typed schema: timectl must read any host's ruleset, including statements
//! a schema crate may not model, and only needs chains, comments and a few
//! match shapes. Changes go in as one `nft -j` transaction, so they apply
//! completely or not at all. They change the running ruleset only; they are
//! lost at reboot unless the host's saved ruleset is updated (timectl adds
//! them again on its next apply).

use std::time::Duration;

use serde_json::{Value, json};

use crate::host::command;
use crate::host::{Firewall, FirewallState, HostError};

/// The comment that marks timectl's rule.
pub const COMMENT: &str = "timectl: NTP (UDP 123)";
const NTP_PORT: u64 = 123;
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Nftables {
    /// The command that runs nft: `["nft"]`, or a prefix that runs it
    /// elsewhere (`["ip", "netns", "exec", "NAME", "nft"]`).
    nft: Vec<String>,
}

/// One base chain on the input hook, as far as UDP 123 is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputChain {
    pub family: String,
    pub table: String,
    pub name: String,
    pub policy: String,
    /// Would drop or reject a new UDP 123 packet.
    pub filters: bool,
    /// Has a rule that accepts UDP 123 unconditionally.
    pub accepts_ntp: bool,
    /// Handles of timectl's own rules in this chain.
    pub ours: Vec<u64>,
    /// A rule already decided the fate of UDP 123 (while reading).
    decided: bool,
}

impl InputChain {
    fn label(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.name)
    }
}

/// Whether a match expression's value includes port 123: a number, a set
/// of numbers, or a range.
fn value_includes_ntp(right: &Value) -> bool {
    match right {
        Value::Number(n) => n.as_u64() == Some(NTP_PORT),
        Value::Object(o) => {
            if let Some(set) = o.get("set").and_then(Value::as_array) {
                return set.iter().any(value_includes_ntp);
            }
            if let Some(range) = o.get("range").and_then(Value::as_array)
                && let [low, high] = range.as_slice()
                && let (Some(low), Some(high)) = (low.as_u64(), high.as_u64())
            {
                return (low..=high).contains(&NTP_PORT);
            }
            false
        }
        _ => false,
    }
}

/// A match that every UDP 123 packet passes: `udp dport 123` (or a set or
/// range holding 123) and `meta l4proto udp`.
fn match_passes_ntp(m: &Value) -> bool {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    if op != "==" && op != "in" {
        return false;
    }
    let left = m.get("left").unwrap_or(&Value::Null);
    let right = m.get("right").unwrap_or(&Value::Null);
    if let Some(payload) = left.get("payload") {
        let protocol = payload.get("protocol").and_then(Value::as_str);
        let field = payload.get("field").and_then(Value::as_str);
        return matches!(protocol, Some("udp") | Some("th"))
            && field == Some("dport")
            && value_includes_ntp(right);
    }
    if let Some(meta) = left.get("meta") {
        let key = meta.get("key").and_then(Value::as_str);
        return key == Some("l4proto")
            && (right.as_str() == Some("udp") || right.as_u64() == Some(17));
    }
    false
}

/// The verdict a rule ends in if every UDP 123 packet reaches it: only
/// rules whose matches all pass NTP count. Counters, logs and comments are
/// not conditions.
fn unconditional_verdict(expr: &[Value]) -> Option<&'static str> {
    let mut verdict = None;
    for statement in expr {
        let obj = statement.as_object()?;
        if let Some(m) = obj.get("match") {
            if !match_passes_ntp(m) {
                return None;
            }
        } else if obj.contains_key("accept") {
            verdict = Some("accept");
        } else if obj.contains_key("drop") {
            verdict = Some("drop");
        } else if obj.contains_key("reject") {
            verdict = Some("reject");
        } else if ["counter", "log", "limit", "quota"]
            .iter()
            .any(|k| obj.contains_key(*k))
        {
            // Not conditions (a limit is, but only ever lets fewer through).
        } else {
            // jump, goto, queue, set updates...: not followed.
            return None;
        }
    }
    verdict
}

/// The input base chains of a `nft -j list ruleset` document.
pub fn input_chains(ruleset: &Value) -> Vec<InputChain> {
    let items = ruleset
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut chains: Vec<InputChain> = items
        .iter()
        .filter_map(|item| input_chain(item.get("chain")?))
        .collect();
    for item in &items {
        if let Some(rule) = item.get("rule") {
            read_rule(&mut chains, rule);
        }
    }
    chains
}

/// A chain of the ruleset when it is a filter base chain on the input hook
/// (its rules not read yet).
fn input_chain(chain: &Value) -> Option<InputChain> {
    let text = |k: &str| chain.get(k).and_then(Value::as_str);
    let family = text("family").unwrap_or("");
    if !matches!(family, "ip" | "ip6" | "inet")
        || text("hook") != Some("input")
        || text("type") != Some("filter")
    {
        return None;
    }
    let policy = text("policy").unwrap_or("accept").to_string();
    Some(InputChain {
        family: family.to_string(),
        table: text("table").unwrap_or("").to_string(),
        name: text("name").unwrap_or("").to_string(),
        filters: policy == "drop",
        policy,
        accepts_ntp: false,
        ours: Vec::new(),
        decided: false,
    })
}

/// Reads one rule into the input chain it belongs to, if any: whether it is
/// one of timectl's own, and what it decides for UDP 123.
fn read_rule(chains: &mut [InputChain], rule: &Value) {
    let field = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("");
    let Some(chain) = chains.iter_mut().find(|c| {
        c.family == field("family") && c.table == field("table") && c.name == field("chain")
    }) else {
        return;
    };
    if field("comment") == COMMENT
        && let Some(handle) = rule.get("handle").and_then(Value::as_u64)
    {
        chain.ours.push(handle);
    }
    let expr = rule
        .get("expr")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Rules are listed in chain order: the first one that decides for
    // every UDP 123 packet decides.
    if chain.decided {
        return;
    }
    match unconditional_verdict(expr) {
        Some("accept") => {
            chain.accepts_ntp = true;
            chain.decided = true;
        }
        Some(_) => {
            chain.filters = true;
            chain.decided = true;
        }
        None => {}
    }
}

/// The rule timectl inserts into `chain`, as nft JSON.
fn rule_json(chain: &InputChain) -> Value {
    json!({
        "family": chain.family,
        "table": chain.table,
        "chain": chain.name,
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": NTP_PORT}},
            {"accept": null}
        ],
        "comment": COMMENT,
    })
}

/// The same rule as `nft` command text, for plans.
fn rule_text(chain: &InputChain) -> String {
    format!(
        "nft insert rule {} {} {} udp dport {NTP_PORT} accept comment \"{COMMENT}\"",
        chain.family, chain.table, chain.name
    )
}

impl Nftables {
    /// nft, when it is installed.
    pub fn detect() -> Option<Nftables> {
        ["nft", "/usr/sbin/nft", "/sbin/nft"]
            .iter()
            .find(|candidate| {
                command::run(&[candidate, "--version"], &[], NFT_TIMEOUT).is_ok_and(|o| o.success())
            })
            .map(|nft| Nftables {
                nft: vec![nft.to_string()],
            })
    }

    /// nft run through `argv` (e.g. in a network namespace with
    /// `ip netns exec NAME nft`).
    pub fn with_command(argv: Vec<String>) -> Nftables {
        Nftables { nft: argv }
    }

    fn nft(&self, args: &[&str]) -> Result<String, HostError> {
        let mut argv: Vec<&str> = self.nft.iter().map(String::as_str).collect();
        argv.extend_from_slice(args);
        let out = command::run(&argv, &[("LC_ALL", "C")], NFT_TIMEOUT)?;
        if out.success() {
            return Ok(out.stdout);
        }
        let tail = out.tail(3);
        if tail.contains("Operation not permitted") || tail.contains("Permission denied") {
            Err(HostError::Permission(format!(
                "nft {}: {tail}",
                args.first().copied().unwrap_or("")
            )))
        } else {
            Err(HostError::msg(format!("nft failed: {tail}")))
        }
    }

    pub fn chains(&self) -> Result<Vec<InputChain>, HostError> {
        let text = self.nft(&["-j", "list", "ruleset"])?;
        let ruleset: Value = serde_json::from_str(&text).map_err(|e| {
            HostError::msg(format!("nft -j list ruleset printed invalid JSON: {e}"))
        })?;
        Ok(input_chains(&ruleset))
    }

    fn transaction(&self, commands: Vec<Value>) -> Result<(), HostError> {
        if commands.is_empty() {
            return Ok(());
        }
        let document = json!({ "nftables": commands }).to_string();
        self.nft(&["-j", &document]).map(|_| ())
    }
}

impl Firewall for Nftables {
    fn describe(&self) -> String {
        "nftables".to_string()
    }

    fn rule(&self) -> String {
        match self.chains() {
            Ok(chains) => {
                let needed: Vec<String> = chains
                    .iter()
                    .filter(|c| c.filters && !c.accepts_ntp)
                    .map(rule_text)
                    .collect();
                if needed.is_empty() {
                    "no input chain drops UDP 123: nothing to insert".to_string()
                } else {
                    needed.join("; ")
                }
            }
            Err(_) => format!(
                "nft insert rule FAMILY TABLE CHAIN udp dport {NTP_PORT} accept comment \"{COMMENT}\" in each input chain that drops UDP 123"
            ),
        }
    }

    fn observe(&self) -> Result<FirewallState, HostError> {
        let chains = self.chains()?;
        let filtering: Vec<&InputChain> = chains.iter().filter(|c| c.filters).collect();
        let open = filtering.iter().all(|c| c.accepts_ntp);
        let detail = if filtering.is_empty() {
            "no input chain drops UDP 123".to_string()
        } else {
            filtering
                .iter()
                .map(|c| {
                    format!(
                        "{} (policy {}): {}",
                        c.label(),
                        c.policy,
                        match (c.accepts_ntp, c.ours.is_empty()) {
                            (true, false) => "accepts udp/123 (timectl rule)",
                            (true, true) => "accepts udp/123",
                            (false, _) => "drops udp/123",
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        Ok(FirewallState {
            ntp_open: open,
            detail,
            opened_by_timectl: chains.iter().any(|c| !c.ours.is_empty()),
        })
    }

    fn open(&self) -> Result<(), HostError> {
        let commands = self
            .chains()?
            .iter()
            .filter(|c| c.filters && !c.accepts_ntp)
            .map(|c| json!({ "insert": { "rule": rule_json(c) } }))
            .collect();
        self.transaction(commands)
    }

    fn close(&self) -> Result<(), HostError> {
        let commands = self
            .chains()?
            .iter()
            .flat_map(|c| {
                c.ours.iter().map(move |handle| {
                    json!({ "delete": { "rule": {
                        "family": c.family, "table": c.table, "chain": c.name, "handle": handle
                    } } })
                })
            })
            .collect();
        self.transaction(commands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(items: Vec<Value>) -> Value {
        let mut all = vec![json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}})];
        all.extend(items);
        json!({ "nftables": all })
    }

    fn chain(family: &str, table: &str, name: &str, hook: &str, policy: &str) -> Value {
        json!({"chain": {"family": family, "table": table, "name": name, "handle": 1,
            "type": "filter", "hook": hook, "prio": 0, "policy": policy}})
    }

    fn rule(chain: &str, handle: u64, expr: Value, comment: Option<&str>) -> Value {
        let mut r = json!({"family": "inet", "table": "filter", "chain": chain, "handle": handle, "expr": expr});
        if let Some(c) = comment {
            r["comment"] = json!(c);
        }
        json!({ "rule": r })
    }

    fn udp_dport(right: Value) -> Value {
        json!({"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": right}})
    }

    #[test]
    fn policy_drop_filters_and_our_rule_opens() {
        let rs = ruleset(vec![chain("inet", "filter", "input", "input", "drop")]);
        let c = &input_chains(&rs)[0];
        assert!(c.filters && !c.accepts_ntp && c.ours.is_empty());
        let ours = rule_json(c);
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "drop"),
            json!({"rule": {"handle": 7, "family": "inet", "table": "filter", "chain": "input",
                "expr": ours["expr"], "comment": COMMENT}}),
        ]);
        let c = &input_chains(&rs)[0];
        // Policy drop, but the first rule accepts NTP.
        assert!(c.filters && c.accepts_ntp);
        assert_eq!(c.ours, vec![7]);
    }

    #[test]
    fn accept_policy_without_drops_does_not_filter() {
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            chain("inet", "filter", "output", "output", "drop"),
            // Conditional drops that a new NTP packet does not meet.
            rule(
                "input",
                3,
                json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]),
                None,
            ),
            rule(
                "input",
                4,
                json!([{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"drop": null}]),
                None,
            ),
        ]);
        let chains = input_chains(&rs);
        assert_eq!(chains.len(), 1, "only input hooks count: {chains:?}");
        assert!(!chains[0].filters);
    }

    #[test]
    fn final_reject_and_port_drops_filter() {
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule(
                "input",
                5,
                json!([{"counter": {"packets": 0, "bytes": 0}}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]),
                None,
            ),
        ]);
        assert!(input_chains(&rs)[0].filters);
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule(
                "input",
                5,
                json!([udp_dport(json!(123)), {"drop": null}]),
                None,
            ),
        ]);
        assert!(input_chains(&rs)[0].filters);
    }

    #[test]
    fn an_admin_rule_that_accepts_ntp_counts_as_open() {
        for right in [
            json!(123),
            json!({"set": [22, 123, 443]}),
            json!({"range": [100, 200]}),
        ] {
            let rs = ruleset(vec![
                chain("inet", "filter", "input", "input", "drop"),
                rule(
                    "input",
                    9,
                    json!([udp_dport(right.clone()), {"accept": null}]),
                    None,
                ),
            ]);
            let c = &input_chains(&rs)[0];
            assert!(c.accepts_ntp, "{right}");
            assert!(c.ours.is_empty());
        }
        // Restricted to some sources: not open for everyone.
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "drop"),
            rule(
                "input",
                9,
                json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, udp_dport(json!(123)), {"accept": null}]),
                None,
            ),
        ]);
        assert!(!input_chains(&rs)[0].accepts_ntp);
        // Another port: not NTP.
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "drop"),
            rule(
                "input",
                9,
                json!([udp_dport(json!(1123)), {"accept": null}]),
                None,
            ),
        ]);
        assert!(!input_chains(&rs)[0].accepts_ntp);
    }

    #[test]
    fn an_accept_after_a_drop_is_too_late() {
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule("input", 5, json!([{"reject": null}]), None),
            rule(
                "input",
                6,
                json!([udp_dport(json!(123)), {"accept": null}]),
                None,
            ),
        ]);
        let c = &input_chains(&rs)[0];
        assert!(c.filters);
        assert!(!c.accepts_ntp, "the reject comes first");
    }

    #[test]
    fn plan_text_is_the_exact_command() {
        let c = InputChain {
            family: "inet".into(),
            table: "filter".into(),
            name: "input".into(),
            policy: "drop".into(),
            filters: true,
            accepts_ntp: false,
            ours: vec![],
            decided: false,
        };
        assert_eq!(
            rule_text(&c),
            "nft insert rule inet filter input udp dport 123 accept comment \"timectl: NTP (UDP 123)\""
        );
    }
}
