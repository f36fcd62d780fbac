//! A named source text with line/column lookup.

use super::span::Span;

/// One program text: a file, a `-e` argument (named `-e`), standard input (named `-`)
/// or a REPL input.
#[derive(Debug)]
pub struct Source {
    /// The name used in messages (a path, `-e`, `-`).
    pub name: String,
    /// The program text.
    pub text: Vec<u8>,
    line_starts: Vec<usize>,
}

impl Source {
    /// A source named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<Vec<u8>>) -> Source {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(memchr::memchr_iter(b'\n', &text).map(|i| i + 1));
        Source {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and 1-based column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = String::from_utf8_lossy(&self.text[start..offset])
            .chars()
            .count()
            + 1;
        (line + 1, col)
    }

    /// The text of a 1-based line, without its line terminator.
    pub fn line_text(&self, line: usize) -> &[u8] {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map(|&e| e - 1)
            .unwrap_or(self.text.len());
        let mut s = &self.text[start..end.max(start)];
        if s.last() == Some(&b'\r') {
            s = &s[..s.len() - 1];
        }
        s
    }

    /// `NAME:LINE:COL` of a span's start.
    pub fn location(&self, span: Span) -> String {
        let (l, c) = self.line_col(span.start as usize);
        format!("{}:{}:{}", self.name, l, c)
    }
}
