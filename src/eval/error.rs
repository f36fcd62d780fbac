//! Runtime errors and the non-local exits (`skip`) that travel the same way.

use std::fmt;
use std::sync::Arc;

use crate::syntax::diagnostic::Diagnostic;
use crate::syntax::{Source, Span};

/// A runtime error (spec 5.6), or the `skip` signal unwinding to its stage.
///
/// Native code creates errors with a message only; the evaluator attaches the
/// source location of the expression that raised it on the way out.
pub struct RuntimeError(Box<ErrorInner>);

struct ErrorInner {
    kind: ErrorKind,
    message: String,
    location: Option<(Arc<Source>, Span)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Error,
    /// `skip`: abandon the current element (5.5). Not an error for the user.
    Skip,
}

impl RuntimeError {
    pub fn new(message: impl Into<String>) -> RuntimeError {
        RuntimeError(Box::new(ErrorInner {
            kind: ErrorKind::Error,
            message: message.into(),
            location: None,
        }))
    }

    pub fn skip() -> RuntimeError {
        RuntimeError(Box::new(ErrorInner {
            kind: ErrorKind::Skip,
            message: "skip outside a pipeline stage".into(),
            location: None,
        }))
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub fn is_skip(&self) -> bool {
        self.0.kind == ErrorKind::Skip
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn location(&self) -> Option<&(Arc<Source>, Span)> {
        self.0.location.as_ref()
    }

    pub fn has_location(&self) -> bool {
        self.0.location.is_some()
    }

    /// Attaches a location unless the error already has one.
    pub fn at(mut self, source: &Arc<Source>, span: Span) -> RuntimeError {
        if self.0.location.is_none() {
            self.0.location = Some((source.clone(), span));
        }
        self
    }

    /// Prefixes the message (e.g. with a function name).
    pub fn context(mut self, prefix: &str) -> RuntimeError {
        self.0.message = format!("{prefix}: {}", self.0.message);
        self
    }

    pub fn to_diagnostic(&self) -> (Option<Arc<Source>>, Diagnostic) {
        match &self.0.location {
            Some((src, span)) => (
                Some(src.clone()),
                Diagnostic::error(self.0.message.clone(), Some(*span)),
            ),
            None => (None, Diagnostic::error(self.0.message.clone(), None)),
        }
    }

    /// The rendered message, as printed on standard error.
    pub fn render(&self, color: bool) -> String {
        let (src, diag) = self.to_diagnostic();
        crate::syntax::diagnostic::render(src.as_deref(), &diag, color)
    }
}

impl fmt::Debug for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.location {
            Some((src, span)) => write!(f, "{}: {}", src.location(*span), self.0.message),
            None => f.write_str(&self.0.message),
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for RuntimeError {}

/// Shorthand for building an `Err(RuntimeError)`.
pub fn err<T>(message: impl Into<String>) -> Result<T, RuntimeError> {
    Err(RuntimeError::new(message))
}
