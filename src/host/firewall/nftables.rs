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
//! When the host serves NTS, NTS-KE (TCP 4460) gets its own rule, found,
//! added and removed the same way and on its own:
//!
//! ```text
//! tcp dport 4460 accept comment "timectl: NTS-KE (TCP 4460)"
//! ```
//!
//! Everything below about UDP 123 holds for TCP 4460 with `tcp` for `udp`.
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
use crate::host::{Firewall, FirewallState, HostError, Port};

/// The comment that marks timectl's rule for UDP 123.
pub const COMMENT: &str = "timectl: NTP (UDP 123)";
/// The comment that marks timectl's rule for TCP 4460 (NTS-KE).
pub const NTS_KE_COMMENT: &str = "timectl: NTS-KE (TCP 4460)";

/// The comment that marks timectl's rule for `port`.
pub fn comment(port: Port) -> &'static str {
    match port {
        Port::Ntp => COMMENT,
        Port::NtsKe => NTS_KE_COMMENT,
    }
}

/// The IP protocol number of `port`'s protocol (`meta l4proto 17`).
fn l4proto(port: Port) -> u64 {
    match port {
        Port::Ntp => 17,
        Port::NtsKe => 6,
    }
}
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Nftables {
    /// The command that runs nft: `["nft"]`, or a prefix that runs it
    /// elsewhere (`["ip", "netns", "exec", "NAME", "nft"]`).
    nft: Vec<String>,
}

/// One base chain on the input hook, as far as one port (UDP 123 or TCP
/// 4460) is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputChain {
    pub family: String,
    pub table: String,
    pub name: String,
    pub policy: String,
    /// Would drop or reject a new packet to the port.
    pub filters: bool,
    /// Has a rule that accepts the port unconditionally (named for UDP
    /// 123, the first port; the same for TCP 4460).
    pub accepts_ntp: bool,
    /// Handles of timectl's own rules for the port in this chain.
    pub ours: Vec<u64>,
    /// A rule already decided the fate of the port (while reading).
    decided: bool,
}

impl InputChain {
    fn label(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.name)
    }
}

/// Whether a match expression's value includes `port`: a number, a set
/// of numbers, or a range.
fn value_includes(right: &Value, port: u64) -> bool {
    match right {
        Value::Number(n) => n.as_u64() == Some(port),
        Value::Object(o) => {
            if let Some(set) = o.get("set").and_then(Value::as_array) {
                return set.iter().any(|v| value_includes(v, port));
            }
            if let Some(range) = o.get("range").and_then(Value::as_array)
                && let [low, high] = range.as_slice()
                && let (Some(low), Some(high)) = (low.as_u64(), high.as_u64())
            {
                return (low..=high).contains(&port);
            }
            false
        }
        _ => false,
    }
}

/// A match that every packet to `port` passes: `udp dport 123` (or a set
/// or range holding 123, or `th dport`) and `meta l4proto udp`; for TCP
/// 4460 the same with `tcp`.
fn match_passes(m: &Value, port: Port) -> bool {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    if op != "==" && op != "in" {
        return false;
    }
    let left = m.get("left").unwrap_or(&Value::Null);
    let right = m.get("right").unwrap_or(&Value::Null);
    if let Some(payload) = left.get("payload") {
        let protocol = payload.get("protocol").and_then(Value::as_str);
        let field = payload.get("field").and_then(Value::as_str);
        return (protocol == Some(port.protocol()) || protocol == Some("th"))
            && field == Some("dport")
            && value_includes(right, u64::from(port.number()));
    }
    if let Some(meta) = left.get("meta") {
        let key = meta.get("key").and_then(Value::as_str);
        return key == Some("l4proto")
            && (right.as_str() == Some(port.protocol()) || right.as_u64() == Some(l4proto(port)));
    }
    false
}

/// The verdict a rule ends in if every packet to `port` reaches it: only
/// rules whose matches all pass that port count. Counters, logs and
/// comments are not conditions.
fn unconditional_verdict(expr: &[Value], port: Port) -> Option<&'static str> {
    let mut verdict = None;
    for statement in expr {
        let obj = statement.as_object()?;
        if let Some(m) = obj.get("match") {
            if !match_passes(m, port) {
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

/// The input base chains of a `nft -j list ruleset` document, as far as
/// UDP 123 is concerned.
pub fn input_chains(ruleset: &Value) -> Vec<InputChain> {
    input_chains_for(ruleset, Port::Ntp)
}

/// The input base chains of a `nft -j list ruleset` document, as far as
/// `port` is concerned.
pub fn input_chains_for(ruleset: &Value, port: Port) -> Vec<InputChain> {
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
            read_rule(&mut chains, rule, port);
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
/// one of timectl's own for `port`, and what it decides for `port`.
fn read_rule(chains: &mut [InputChain], rule: &Value, port: Port) {
    let field = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("");
    let Some(chain) = chains.iter_mut().find(|c| {
        c.family == field("family") && c.table == field("table") && c.name == field("chain")
    }) else {
        return;
    };
    if field("comment") == comment(port)
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
    // every packet to the port decides.
    if chain.decided {
        return;
    }
    match unconditional_verdict(expr, port) {
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

/// The rule timectl inserts into `chain` for `port`, as nft JSON.
fn rule_json(chain: &InputChain, port: Port) -> Value {
    json!({
        "family": chain.family,
        "table": chain.table,
        "chain": chain.name,
        "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": port.protocol(), "field": "dport"}}, "right": port.number()}},
            {"accept": null}
        ],
        "comment": comment(port),
    })
}

/// The same rule as `nft` command text, for plans.
fn rule_text(chain: &InputChain, port: Port) -> String {
    format!(
        "nft insert rule {} {} {} {} dport {} accept comment \"{}\"",
        chain.family,
        chain.table,
        chain.name,
        port.protocol(),
        port.number(),
        comment(port)
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

    /// The input chains, as far as UDP 123 is concerned.
    pub fn chains(&self) -> Result<Vec<InputChain>, HostError> {
        self.chains_for(Port::Ntp)
    }

    /// The input chains, as far as `port` is concerned.
    pub fn chains_for(&self, port: Port) -> Result<Vec<InputChain>, HostError> {
        let text = self.nft(&["-j", "list", "ruleset"])?;
        let ruleset: Value = serde_json::from_str(&text).map_err(|e| {
            HostError::msg(format!("nft -j list ruleset printed invalid JSON: {e}"))
        })?;
        Ok(input_chains_for(&ruleset, port))
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

    fn rule_for(&self, port: Port) -> String {
        match self.chains_for(port) {
            Ok(chains) => {
                let needed: Vec<String> = chains
                    .iter()
                    .filter(|c| c.filters && !c.accepts_ntp)
                    .map(|c| rule_text(c, port))
                    .collect();
                if needed.is_empty() {
                    format!("no input chain drops {}: nothing to insert", port.label())
                } else {
                    needed.join("; ")
                }
            }
            Err(_) => format!(
                "nft insert rule FAMILY TABLE CHAIN {} dport {} accept comment \"{}\" in each input chain that drops {}",
                port.protocol(),
                port.number(),
                comment(port),
                port.label()
            ),
        }
    }

    fn observe_port(&self, port: Port) -> Result<FirewallState, HostError> {
        let chains = self.chains_for(port)?;
        let filtering: Vec<&InputChain> = chains.iter().filter(|c| c.filters).collect();
        let open = filtering.iter().all(|c| c.accepts_ntp);
        let short = port.short();
        let detail = if filtering.is_empty() {
            format!("no input chain drops {}", port.label())
        } else {
            filtering
                .iter()
                .map(|c| {
                    format!(
                        "{} (policy {}): {}",
                        c.label(),
                        c.policy,
                        match (c.accepts_ntp, c.ours.is_empty()) {
                            (true, false) => format!("accepts {short} (timectl rule)"),
                            (true, true) => format!("accepts {short}"),
                            (false, _) => format!("drops {short}"),
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

    fn open_port(&self, port: Port) -> Result<(), HostError> {
        let commands = self
            .chains_for(port)?
            .iter()
            .filter(|c| c.filters && !c.accepts_ntp)
            .map(|c| json!({ "insert": { "rule": rule_json(c, port) } }))
            .collect();
        self.transaction(commands)
    }

    fn close_port(&self, port: Port) -> Result<(), HostError> {
        let commands = self
            .chains_for(port)?
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
        let ours = rule_json(c, Port::Ntp);
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
            rule_text(&c, Port::Ntp),
            "nft insert rule inet filter input udp dport 123 accept comment \"timectl: NTP (UDP 123)\""
        );
    }

    fn tcp_dport(right: Value) -> Value {
        json!({"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": right}})
    }

    fn nts_ke(rs: &Value) -> InputChain {
        input_chains_for(rs, Port::NtsKe).remove(0)
    }

    #[test]
    fn nts_ke_policy_drop_filters_and_our_rule_opens_only_tcp_4460() {
        let rs = ruleset(vec![chain("inet", "filter", "input", "input", "drop")]);
        let c = nts_ke(&rs);
        assert!(c.filters && !c.accepts_ntp && c.ours.is_empty());
        let ours = rule_json(&c, Port::NtsKe);
        assert_eq!(ours["comment"], json!(NTS_KE_COMMENT));
        assert_eq!(ours["expr"][0], tcp_dport(json!(4460)));
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "drop"),
            json!({"rule": {"handle": 8, "family": "inet", "table": "filter", "chain": "input",
                "expr": ours["expr"], "comment": NTS_KE_COMMENT}}),
        ]);
        let c = nts_ke(&rs);
        assert!(c.filters && c.accepts_ntp);
        assert_eq!(c.ours, vec![8]);
        // The NTS-KE rule neither opens UDP 123 nor counts as its rule.
        let ntp = &input_chains(&rs)[0];
        assert!(ntp.filters && !ntp.accepts_ntp && ntp.ours.is_empty());
        // And timectl's UDP 123 rule does not open TCP 4460.
        let udp = rule_json(ntp, Port::Ntp);
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "drop"),
            json!({"rule": {"handle": 7, "family": "inet", "table": "filter", "chain": "input",
                "expr": udp["expr"], "comment": COMMENT}}),
        ]);
        let c = nts_ke(&rs);
        assert!(c.filters && !c.accepts_ntp && c.ours.is_empty());
        assert!(input_chains(&rs)[0].accepts_ntp);
    }

    #[test]
    fn nts_ke_final_reject_and_port_drop_filter() {
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule(
                "input",
                5,
                json!([{"counter": {"packets": 0, "bytes": 0}}, {"reject": {"type": "tcp reset"}}]),
                None,
            ),
        ]);
        assert!(nts_ke(&rs).filters);
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule(
                "input",
                5,
                json!([tcp_dport(json!(4460)), {"drop": null}]),
                None,
            ),
        ]);
        let c = nts_ke(&rs);
        assert!(c.filters && !c.accepts_ntp);
        // ...which does not touch UDP 123.
        assert!(!input_chains(&rs)[0].filters);
        // A UDP drop does not touch TCP 4460, nor a drop of another port.
        for expr in [
            json!([udp_dport(json!(4460)), {"drop": null}]),
            json!([tcp_dport(json!(4461)), {"drop": null}]),
            json!([{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}, {"drop": null}]),
        ] {
            let rs = ruleset(vec![
                chain("inet", "filter", "input", "input", "accept"),
                rule("input", 5, expr.clone(), None),
            ]);
            assert!(!nts_ke(&rs).filters, "{expr}");
        }
        // `meta l4proto tcp drop` does.
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule(
                "input",
                5,
                json!([{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"drop": null}]),
                None,
            ),
        ]);
        assert!(nts_ke(&rs).filters);
    }

    #[test]
    fn an_admin_rule_that_accepts_tcp_4460_counts_as_open() {
        for right in [
            json!(4460),
            json!({"set": [22, 443, 4460]}),
            json!({"range": [4000, 5000]}),
        ] {
            let rs = ruleset(vec![
                chain("inet", "filter", "input", "input", "drop"),
                rule(
                    "input",
                    9,
                    json!([tcp_dport(right.clone()), {"accept": null}]),
                    None,
                ),
            ]);
            let c = nts_ke(&rs);
            assert!(c.accepts_ntp, "{right}");
            assert!(c.ours.is_empty());
        }
        // udp 4460 is not NTS-KE; from some sources only is not open.
        for expr in [
            json!([udp_dport(json!(4460)), {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, tcp_dport(json!(4460)), {"accept": null}]),
        ] {
            let rs = ruleset(vec![
                chain("inet", "filter", "input", "input", "drop"),
                rule("input", 9, expr.clone(), None),
            ]);
            assert!(!nts_ke(&rs).accepts_ntp, "{expr}");
        }
        // An accept after a drop of the port is too late.
        let rs = ruleset(vec![
            chain("inet", "filter", "input", "input", "accept"),
            rule(
                "input",
                5,
                json!([tcp_dport(json!(4460)), {"drop": null}]),
                None,
            ),
            rule(
                "input",
                6,
                json!([tcp_dport(json!(4460)), {"accept": null}]),
                None,
            ),
        ]);
        let c = nts_ke(&rs);
        assert!(c.filters && !c.accepts_ntp);
    }

    #[test]
    fn nts_ke_plan_text_is_the_exact_command() {
        let rs = ruleset(vec![chain("inet", "filter", "input", "input", "drop")]);
        assert_eq!(
            rule_text(&nts_ke(&rs), Port::NtsKe),
            "nft insert rule inet filter input tcp dport 4460 accept comment \"timectl: NTS-KE (TCP 4460)\""
        );
    }
}
