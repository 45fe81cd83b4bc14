//! Errors in a desired-state file, each with file, line, column, what was
//! expected, and the offending line quoted with a caret under the column.

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
        Diagnostic {
            file: file.to_string(),
            line,
            column,
            snippet: render_snippet(text, line, column),
            message,
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

fn render_snippet(text: &str, line: u64, column: u64) -> String {
    if line == 0 {
        return String::new();
    }
    let Some(source_line) = text.lines().nth((line - 1) as usize) else {
        return String::new();
    };
    let number = line.to_string();
    let pad = " ".repeat(number.len());
    let clean: String = source_line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    let caret_pad: String = clean
        .chars()
        .take(column.saturating_sub(1) as usize)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!("{pad} |\n{number} | {clean}\n{pad} | {caret_pad}^")
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
