//! Errors with source locations, and the one renderer that prints them.
//!
//! Every error the user sees (lexical, syntax, compile, runtime, stage) becomes a
//! [`Diagnostic`] and is printed by [`render`] in the form
//! `FILE:LINE:COL: error: MESSAGE`, then the source line and a caret.

use super::source::Source;
use super::span::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Where the error is; `None` for errors with no place in the program text.
    pub span: Option<Span>,
    /// Further notes printed after the snippet (`note: ...`).
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            notes: Vec::new(),
        }
    }

    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span,
            notes: Vec::new(),
        }
    }

    #[allow(dead_code)]
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

/// Renders a diagnostic as text ending in a newline. `color` adds ANSI colours (only
/// when the destination is a terminal).
pub fn render(source: Option<&Source>, diag: &Diagnostic, color: bool) -> String {
    use std::fmt::Write;
    let (sev, sev_color) = match diag.severity {
        Severity::Error => ("error", "\x1b[1;31m"),
        Severity::Warning => ("warning", "\x1b[1;33m"),
    };
    let (bold, reset, blue) = if color {
        ("\x1b[1m", "\x1b[0m", "\x1b[1;34m")
    } else {
        ("", "", "")
    };
    let sev_color = if color { sev_color } else { "" };
    let mut out = String::new();
    match (source, diag.span) {
        (Some(src), Some(span)) => {
            let (line, col) = src.line_col(span.start as usize);
            let _ = writeln!(
                out,
                "{bold}{}:{}:{}:{reset} {sev_color}{sev}:{reset} {bold}{}{reset}",
                src.name, line, col, diag.message
            );
            let text = String::from_utf8_lossy(src.line_text(line)).into_owned();
            let text = text.replace('\t', " ");
            let num = line.to_string();
            let pad = " ".repeat(num.len());
            let prefix: String = text.chars().take(col - 1).collect();
            let lead = unicode_width::UnicodeWidthStr::width(prefix.as_str());
            let (end_line, end_col) = src.line_col((span.end as usize).max(span.start as usize));
            let rest: String = text.chars().skip(col - 1).collect();
            let carets = if end_line == line && end_col > col {
                let covered: String = rest.chars().take(end_col - col).collect();
                unicode_width::UnicodeWidthStr::width(covered.as_str()).max(1)
            } else {
                1
            };
            let _ = writeln!(out, "{blue}{pad} |{reset}");
            let _ = writeln!(out, "{blue}{num} |{reset} {text}");
            let _ = writeln!(
                out,
                "{blue}{pad} |{reset} {}{sev_color}{}{reset}",
                " ".repeat(lead),
                "^".repeat(carets)
            );
        }
        (Some(src), None) => {
            let _ = writeln!(
                out,
                "{bold}{}:{reset} {sev_color}{sev}:{reset} {bold}{}{reset}",
                src.name, diag.message
            );
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "{sev_color}{sev}:{reset} {bold}{}{reset}",
                diag.message
            );
        }
    }
    for note in &diag.notes {
        let _ = writeln!(out, "  {bold}note:{reset} {note}");
    }
    out
}
