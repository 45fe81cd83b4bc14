//! Errors in a desired-state file, each with file, line, column, what was
//! expected, and the offending line quoted with a caret under the column.
//!
//! A diagnostic never shows key material: the values of `secret:` keys are
//! masked in the quoted line (same width, so the caret still points right)
//! and removed from the message. Long values are cut (a megabyte host name
//! is not echoed back).

use std::fmt;
use std::path::PathBuf;

/// One problem at one place in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    /// 1-based; 0 when the position is unknown.
    pub column: u64,
    pub message: String,
    #[serde(skip)]
    snippet: String,
}

impl Diagnostic {
    pub fn at(file: &str, text: &str, at: &serde_saphyr::Location, message: String) -> Diagnostic {
        Diagnostic::new(file, text, at.line(), at.column(), message)
    }

    pub fn new(file: &str, text: &str, line: u64, column: u64, message: String) -> Diagnostic {
        let (masked, secrets) = mask_secrets(text);
        let mut message = message;
        if in_secret(text, &masked, line, column) {
            // Whatever the parser said about the value, it may quote it.
            message = "invalid key secret: expected a non-empty string without spaces (ASCII text, or HEX:... for hexadecimal); the value is not shown".to_string();
        }
        for secret in secrets.iter().filter(|s| s.chars().count() >= 3) {
            message = message.replace(secret.as_str(), &"*".repeat(secret.chars().count()));
        }
        Diagnostic {
            file: shorten(file),
            line,
            column,
            snippet: render_snippet(&masked, line, column),
            message: shorten(&message),
        }
    }

    pub(crate) fn from_yaml(file: &str, text: &str, err: &serde_saphyr::Error) -> Diagnostic {
        let inner = err.without_snippet().to_string();
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The loader appends its own " at line N, column M"; we print the
        // position in front instead, like a compiler.
        let suffix = format!(" at line {line}, column {column}");
        let message = inner.strip_suffix(&suffix).unwrap_or(&inner).to_string();
        Diagnostic::new(file, text, line, column, message)
    }
}

/// Longest run of characters without a space kept in a message.
pub const MAX_TOKEN: usize = 80;
/// Longest message kept (a value with spaces in it is cut here).
pub const MAX_MESSAGE: usize = 600;
/// Characters of a long source line shown around the column.
const SNIPPET_WIDTH: usize = 100;

/// Cut every run of non-space characters longer than [`MAX_TOKEN`] to that
/// many, and the whole text after [`MAX_MESSAGE`] characters, marked "…".
pub fn shorten(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut run = 0;
    for (n, c) in text.chars().enumerate() {
        if n == MAX_MESSAGE {
            out.push('…');
            break;
        }
        if c.is_whitespace() {
            run = 0;
            out.push(c);
            continue;
        }
        run += 1;
        if run <= MAX_TOKEN {
            out.push(c);
        } else if run == MAX_TOKEN + 1 {
            out.push('…');
        }
    }
    out
}

fn render_snippet(text: &str, line: u64, column: u64) -> String {
    if line == 0 {
        return String::new();
    }
    let Some(source_line) = text.lines().nth((line - 1) as usize) else {
        return String::new();
    };
    let number = line.to_string();
    let pad = " ".repeat(number.len());
    let chars: Vec<char> = source_line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    let col = column.saturating_sub(1) as usize;
    // A long line is shown as a window around the column.
    let (start, end) = if chars.len() <= SNIPPET_WIDTH {
        (0, chars.len())
    } else {
        let start = col
            .saturating_sub(SNIPPET_WIDTH / 2)
            .min(chars.len() - SNIPPET_WIDTH);
        (start, start + SNIPPET_WIDTH)
    };
    let mut clean: String = chars[start..end].iter().collect();
    let mut caret_pad: String = chars[start..col.clamp(start, end)]
        .iter()
        .map(|c| if *c == '\t' { '\t' } else { ' ' })
        .collect();
    if start > 0 {
        clean.insert(0, '…');
        caret_pad.insert(0, ' ');
    }
    if end < chars.len() {
        clean.push('…');
    }
    format!("{pad} |\n{number} | {clean}\n{pad} | {caret_pad}^")
}

/// Whether the 1-based position falls on a masked secret (the masked text
/// differs from the original there).
fn in_secret(text: &str, masked: &str, line: u64, column: u64) -> bool {
    if line == 0 || column == 0 {
        return false;
    }
    let at = |t: &str| {
        t.lines()
            .nth((line - 1) as usize)
            .and_then(|l| l.chars().nth((column - 1) as usize))
    };
    at(text) != at(masked)
}

const MASK: char = '*';

/// The text with the value of every `secret:` key replaced by as many `*`
/// (line and column positions stay), and the values found.
pub fn mask_secrets(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    // The column of a `secret:` key whose value continues on the lines
    // below (a block scalar, or a value on the next line).
    let mut block: Option<usize> = None;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if let Some(key_col) = block {
            let indent = line.chars().take_while(|c| *c == ' ').count();
            if line.trim().is_empty() || indent > key_col {
                let value: String = line.trim().to_string();
                if !value.is_empty() {
                    secrets.push(value);
                }
                out.extend(line.chars().enumerate().map(|(j, c)| {
                    if j >= indent && !c.is_whitespace() {
                        MASK
                    } else {
                        c
                    }
                }));
                continue;
            }
        }
        let (masked, found, opens_block) = mask_line(line);
        secrets.extend(found);
        block = opens_block;
        out.push_str(&masked);
    }
    (out, secrets)
}

/// One line: `secret:` values masked; the key's column when its value
/// continues below.
fn mask_line(line: &str) -> (String, Vec<String>, Option<usize>) {
    let mut chars: Vec<char> = line.chars().collect();
    let mut found = Vec::new();
    let mut opens_block = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let after_separator = i == 0 || matches!(chars[i - 1], ' ' | '\t' | '{' | ',' | '[');
        if after_separator && let Some(value_at) = secret_key_at(&chars, i) {
            let j = skip_blanks(&chars, value_at);
            if j >= chars.len() || matches!(chars[j], '#' | '|' | '>') {
                opens_block = Some(i);
                break;
            }
            let end = value_end(&chars, j, depth);
            found.extend(mask_value(&mut chars[j..end]));
            i = end;
            continue;
        }
        match scan_step(&chars, i, &mut depth) {
            Some(next) => i = next,
            None => break,
        }
    }
    (chars.into_iter().collect(), found, opens_block)
}

/// The index of the first character from `i` on that is not a space or a
/// tab.
fn skip_blanks(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
        i += 1;
    }
    i
}

/// Where the value starting at `j` ends (exclusive): after its closing
/// quote, or before a comment, the end of a flow collection entry (inside
/// one, `depth` > 0) or trailing spaces.
fn value_end(chars: &[char], j: usize, depth: usize) -> usize {
    match chars[j] {
        '"' | '\'' => quoted_value_end(chars, j),
        _ => plain_value_end(chars, j, depth),
    }
}

/// The end of the quoted value opening at `j`: after its closing quote
/// (escapes in double quotes, `''` in single quotes), or the end of the
/// line.
fn quoted_value_end(chars: &[char], j: usize) -> usize {
    let quote = chars[j];
    let mut k = j + 1;
    while k < chars.len() {
        if chars[k] == '\\' && quote == '"' {
            k += 2;
            continue;
        }
        if chars[k] == quote {
            if quote == '\'' && chars.get(k + 1) == Some(&'\'') {
                k += 2;
                continue;
            }
            break;
        }
        k += 1;
    }
    (k + 1).min(chars.len())
}

/// The end of the plain value starting at `j`, trailing spaces left out.
fn plain_value_end(chars: &[char], j: usize, depth: usize) -> usize {
    let mut k = j;
    while k < chars.len() {
        let ch = chars[k];
        if depth > 0 && matches!(ch, ',' | '}' | ']') {
            break;
        }
        if ch == '#' && k > j && chars[k - 1] == ' ' {
            break;
        }
        k += 1;
    }
    while k > j && chars[k - 1] == ' ' {
        k -= 1;
    }
    k
}

/// Masks a value in place; the value without its quotes, unless empty.
fn mask_value(value: &mut [char]) -> Option<String> {
    let text: String = value.iter().collect();
    let bare = text.trim_matches(|c| c == '"' || c == '\'');
    let found = (!bare.is_empty()).then(|| bare.to_string());
    for ch in value {
        *ch = MASK;
    }
    found
}

/// Steps over the character at `i` outside a secret value: the index to go
/// on from (past a whole quoted string), tracking the flow collection
/// `depth`; None at a comment, which ends the line.
fn scan_step(chars: &[char], i: usize, depth: &mut usize) -> Option<usize> {
    match chars[i] {
        '{' | '[' => *depth += 1,
        '}' | ']' => *depth = depth.saturating_sub(1),
        '#' if i == 0 || chars[i - 1] == ' ' => return None,
        '"' | '\'' => return Some(skip_quoted(chars, i)),
        _ => {}
    }
    Some(i + 1)
}

/// The index after the quoted string opening at `i` (a string that is not
/// a key of interest).
fn skip_quoted(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut k = i + 1;
    while k < chars.len() && chars[k] != quote {
        k += if chars[k] == '\\' && quote == '"' {
            2
        } else {
            1
        };
    }
    k + 1
}

/// If a `secret` key (plain or quoted) starts at `i` and is followed by
/// `:` and a space or the end of the line, the index after the colon.
fn secret_key_at(chars: &[char], i: usize) -> Option<usize> {
    let word: Vec<char> = "secret".chars().collect();
    let (start, quote) = match chars.get(i) {
        Some(q @ ('"' | '\'')) => (i + 1, Some(*q)),
        _ => (i, None),
    };
    if chars.get(start..start + word.len())? != word.as_slice() {
        return None;
    }
    let mut k = start + word.len();
    if let Some(q) = quote {
        if chars.get(k) != Some(&q) {
            return None;
        }
        k += 1;
    }
    while chars.get(k) == Some(&' ') {
        k += 1;
    }
    if chars.get(k) != Some(&':') {
        return None;
    }
    match chars.get(k + 1) {
        None | Some(' ' | '\t') => Some(k + 1),
        _ => None,
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

/// Why a desired-state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}", render_all(.0))]
    Invalid(Vec<Diagnostic>),
}

impl SpecError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            SpecError::Io { .. } => &[],
            SpecError::Invalid(d) => d,
        }
    }
}

fn render_all(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&d.to_string());
    }
    out
}
