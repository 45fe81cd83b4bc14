//! The manual pages and shell completions, generated so they cannot drift
//! from what they describe: timectl(1) and one page a subcommand from the
//! clap definitions (clap_mangen), timectl-spec(5) from the desired-state
//! file's JSON Schema (the same value `timectl schema` prints and
//! schemas/timectl.schema.json holds), and bash, zsh and fish completions
//! (clap_complete). The files are committed under `man/` and `completions/`;
//! tests/generated_files.rs regenerates them and fails when they differ.

use clap::{CommandFactory, ValueEnum};
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
use serde_json::Value;

/// A generated file: its path in the repository and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub path: String,
    pub content: Vec<u8>,
}

/// The shells `timectl completions` writes scripts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    /// The file name the script is committed (and packaged) under.
    pub fn file_name(self) -> &'static str {
        match self {
            Shell::Bash => "timectl.bash",
            Shell::Zsh => "_timectl",
            Shell::Fish => "timectl.fish",
        }
    }
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "timectl", &mut out);
    out
}

/// Every generated file, by repository path.
pub fn generated_files() -> Vec<Generated> {
    let mut files = man_pages();
    files.extend(Shell::ALL.into_iter().map(|shell| Generated {
        path: format!("completions/{}", shell.file_name()),
        content: completions(shell),
    }));
    files
}

/// timectl(1), timectl-SUBCOMMAND(1) for each subcommand, timectl-spec(5).
pub fn man_pages() -> Vec<Generated> {
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let sub_pages: Vec<String> = subcommands
        .iter()
        .map(|s| format!("timectl-{}", s.get_name()))
        .collect();
    let mut pages = Vec::new();
    let mut see_also = sub_pages
        .iter()
        .map(|p| (p.as_str(), "1"))
        .collect::<Vec<_>>();
    see_also.push(("timectl-spec", "5"));
    pages.push(clap_page(cmd.clone(), &see_also));
    for sub in subcommands {
        pages.push(clap_page(sub, &[("timectl", "1"), ("timectl-spec", "5")]));
    }
    pages.push(Generated {
        path: "man/timectl-spec.5".into(),
        content: spec_page(&crate::spec::json_schema()).into_bytes(),
    });
    pages
}

/// A section-1 page rendered by clap_mangen, with a SEE ALSO section.
fn clap_page(cmd: clap::Command, see_also: &[(&str, &str)]) -> Generated {
    let man = clap_mangen::Man::new(cmd)
        .manual("timectl manual")
        .source(format!("timectl {}", env!("CARGO_PKG_VERSION")));
    let mut content = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render(&mut content);
    let mut roff = Roff::new();
    see_also_section(&mut roff, see_also);
    content.extend_from_slice(roff.render().as_bytes());
    Generated {
        path: format!("man/{}", man.get_filename()),
        content,
    }
}

fn see_also_section(roff: &mut Roff, pages: &[(&str, &str)]) {
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for (i, (page, section)) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(*page));
        line.push(roman(format!("({section})")));
    }
    roff.text(line);
}

/// Text with `code` spans in bold, line breaks inside a paragraph joined.
fn prose(text: &str) -> Vec<Inline> {
    let joined = text
        .split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// The strings of a JSON array (none when it is not one).
fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The definition a `$ref` points to.
fn definition<'a>(schema: &'a Value, reference: &str) -> Option<(&'a str, &'a Value)> {
    let name = reference.strip_prefix("#/$defs/")?;
    let (name, def) = schema["$defs"].as_object()?.get_key_value(name)?;
    Some((name.as_str(), def))
}

/// The non-null alternative of a property (`anyOf: [X, null]`).
fn non_null(property: &Value) -> &Value {
    property["anyOf"]
        .as_array()
        .and_then(|alts| alts.iter().find(|a| a["type"] != "null"))
        .unwrap_or(property)
}

/// Allowed words of an enumeration, with their descriptions where given.
fn choices(def: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for word in def["enum"].as_array().into_iter().flatten() {
        out.push((word.as_str().unwrap_or_default().to_string(), String::new()));
    }
    for alt in def["oneOf"].as_array().into_iter().flatten() {
        let description = alt["description"].as_str().unwrap_or_default().to_string();
        if let Some(word) = alt["const"].as_str() {
            out.push((word.to_string(), description.clone()));
        }
        for word in alt["enum"].as_array().into_iter().flatten() {
            out.push((
                word.as_str().unwrap_or_default().to_string(),
                description.clone(),
            ));
        }
    }
    out
}

/// What a property's value is, in words, and the object definition it
/// opens (to be described in its own subsection) if any.
fn value_kind<'a>(schema: &'a Value, property: &'a Value) -> (String, Option<&'a str>) {
    let property = non_null(property);
    if let Some((name, def)) = property["$ref"]
        .as_str()
        .and_then(|r| definition(schema, r))
    {
        if def["type"] == "object" {
            return ("mapping".into(), Some(name));
        }
        let words = choices(def);
        if !words.is_empty() {
            let words: Vec<String> = words.into_iter().map(|(w, _)| w).collect();
            return (format!("one of: {}", words.join(", ")), None);
        }
        return (name.to_lowercase(), None);
    }
    let types: Vec<&str> = match &property["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    match types.iter().find(|t| **t != "null").copied() {
        Some("array") => {
            let (item, def) = value_kind(schema, &property["items"]);
            (format!("list of {item}"), def)
        }
        Some("integer") if property["minimum"] == 0 => ("non-negative integer".into(), None),
        Some("string") if property["format"] == "ip" => ("IP address".into(), None),
        Some(other) => (other.into(), None),
        None => ("value".into(), None),
    }
}

/// A mapping to describe in its own subsection: its definition's name and
/// where it sits in the file (`timesync.sources[]`).
struct Nested {
    def: String,
    path: String,
}

/// Where a key's mapping sits: `parent.key`, with `[]` for a list of them.
fn nested_path(parent: &str, key: &str, kind: &str) -> String {
    let list = if kind.starts_with("list") { "[]" } else { "" };
    if parent.is_empty() {
        format!("{key}{list}")
    } else {
        format!("{parent}.{key}{list}")
    }
}

/// One `.TP` entry a key of an object definition.
fn describe_keys(
    roff: &mut Roff,
    schema: &Value,
    def: &Value,
    parent: &str,
    nested: &mut Vec<Nested>,
) {
    let required = strings(&def["required"]);
    for (key, property) in def["properties"].as_object().into_iter().flatten() {
        let (kind, opens) = value_kind(schema, property);
        let path = nested_path(parent, key, &kind);
        roff.control("TP", []);
        let mut head = vec![
            bold(key.as_str()),
            roman(" ("),
            italic(kind.as_str()),
            roman(")"),
        ];
        if required.contains(&key.as_str()) {
            head.push(roman(", required"));
        }
        roff.text(head);
        let description = property["description"].as_str().unwrap_or_default();
        let mut body = prose(description);
        let default = &property["default"];
        if opens.is_some() {
            body.push(roman(" See "));
            body.push(bold(path.as_str()));
            body.push(roman(" below."));
        }
        if !default.is_null()
            && default != &Value::Array(Vec::new())
            && !description.to_lowercase().contains("default")
        {
            body.push(roman(" Default: "));
            body.push(bold(match default {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
            body.push(roman("."));
        }
        roff.text(body);
        if let Some((_, enum_def)) = non_null(property)["$ref"]
            .as_str()
            .and_then(|r| definition(schema, r))
        {
            for (word, description) in choices(enum_def) {
                if description.is_empty() {
                    continue;
                }
                roff.control("RS", []);
                roff.control("TP", []);
                roff.text([bold(word)]);
                roff.text(prose(&description));
                roff.control("RE", []);
            }
        }
        if let Some(name) = opens {
            nested.push(Nested {
                def: name.to_string(),
                path,
            });
        }
    }
}

/// timectl-spec(5) from the JSON Schema of the desired-state file.
pub fn spec_page(schema: &Value) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "timectl-spec",
            "5",
            "",
            &format!("timectl {version}"),
            "timectl manual",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "timectl-spec - the desired-state file of timectl (YAML)",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        bold("timesync:"),
        roman(" with the keys below; "),
        bold("timectl validate"),
        roman(" "),
        italic("FILE"),
        roman(" checks a file."),
    ]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text(prose(
        "A desired-state file says how a host keeps time: which daemon, which sources, whether it serves time, whether the firewall opens UDP 123, what \"synchronised\" means. `timectl plan` compares it with the host and `timectl apply` converges the host to it.",
    ));
    roff.control("PP", []);
    roff.text(prose(
        "Unknown keys are errors. Every error names the file, line and column, says what was expected, and changes nothing on the host. This page is generated from the file's JSON Schema, which `timectl schema` prints (for editors and CI checks), so the two describe the same keys.",
    ));
    roff.control("SH", ["KEYS"]);
    let mut nested: Vec<Nested> = Vec::new();
    describe_keys(&mut roff, schema, schema, "", &mut nested);
    let mut done = 0;
    while done < nested.len() {
        let Nested { def, path } = &nested[done];
        let (def, path) = (&schema["$defs"][def], path.clone());
        done += 1;
        roff.control("SS", [path.as_str()]);
        roff.text(prose(def["description"].as_str().unwrap_or_default()));
        describe_keys(&mut roff, schema, def, &path, &mut nested);
    }
    roff.control("SH", ["VALUES"]);
    for (name, def) in schema["$defs"].as_object().into_iter().flatten() {
        if def["type"] != "string" || def.get("enum").is_some() {
            continue;
        }
        roff.control("TP", []);
        roff.text([italic(name.to_lowercase())]);
        let mut body = prose(def["description"].as_str().unwrap_or_default());
        let examples = strings(&def["examples"]);
        if !examples.is_empty() {
            body.push(roman(" Examples: "));
            body.push(bold(examples.join(", ")));
            body.push(roman("."));
        }
        roff.text(body);
    }
    roff.control("SH", ["EXAMPLE"]);
    roff.text(prose(
        "The default provider, timectl's own NTP engine, with a pool and a server (examples/embedded.yaml):",
    ));
    roff.control("PP", []);
    roff.control("nf", []);
    for line in include_str!("../examples/embedded.yaml").lines() {
        roff.text([roman(format!("    {line}"))]);
    }
    roff.control("fi", []);
    see_also_section(
        &mut roff,
        &[
            ("timectl", "1"),
            ("timectl-validate", "1"),
            ("timectl-plan", "1"),
            ("timectl-apply", "1"),
            ("timectl-schema", "1"),
        ],
    );
    roff.render()
}
