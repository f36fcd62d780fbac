//! Runtime errors and the non-local exits (`skip`) that travel the same way.

use std::fmt;
use std::sync::Arc;

use crate::syntax::diagnostic::Diagnostic;
use crate::syntax::{Source, Span};

/// A runtime error (spec 5.6), or a non-local exit travelling the same way: the `skip`
/// signal unwinding to its stage, or `exit(n)` unwinding to the interpreter.
///
/// Native code creates errors with a message only; the evaluator attaches the
/// source location of the expression that raised it on the way out. Native code that
/// calls back into the language must propagate the errors it gets (with `?`) unless
/// it means to handle them: a stage treats [`is_skip`](RuntimeError::is_skip) as
/// "drop this element", and an [`exit_status`](RuntimeError::exit_status) must always
/// be passed on.
///
/// ```
/// use streem::ext::RuntimeError;
///
/// let e = RuntimeError::new("total: argument 1: number required");
/// assert_eq!(e.message(), "total: argument 1: number required");
/// assert!(!e.is_skip() && e.exit_status().is_none());
/// assert_eq!(e.context("in stage").message(), "in stage: total: argument 1: number required");
/// ```
pub struct RuntimeError(Box<ErrorInner>);

struct ErrorInner {
    kind: ErrorKind,
    message: String,
    location: Option<(Arc<Source>, Span)>,
}

/// What a [`RuntimeError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// An error with a message (reported, 5.6).
    Error,
    /// `skip`: abandon the current element (5.5). Not an error for the user.
    Skip,
    /// `exit(n)` in an embedded interpreter: ends the run with status `n` (not
    /// reported). See [`Interpreter::run`](crate::Interpreter::run).
    Exit(i32),
    /// A function run on several cores at once reached something with a side effect
    /// (a function not declared pure, `emit`, a definition): the runtime abandons
    /// that attempt, which had no effect, and runs the values one at a time. Native
    /// code must propagate it like any error.
    Impure,
}

impl RuntimeError {
    /// An error with a message; the runtime adds the source location.
    pub fn new(message: impl Into<String>) -> RuntimeError {
        RuntimeError(Box::new(ErrorInner {
            kind: ErrorKind::Error,
            message: message.into(),
            location: None,
        }))
    }

    /// The `skip` signal (5.5): the current element is abandoned.
    pub fn skip() -> RuntimeError {
        RuntimeError(Box::new(ErrorInner {
            kind: ErrorKind::Skip,
            message: "skip outside a pipeline stage".into(),
            location: None,
        }))
    }

    /// The request of `exit(status)` to end the run (only created by the runtime
    /// when it does not own the process; see
    /// [`Interpreter::run`](crate::Interpreter::run)).
    pub(crate) fn exit(status: i32) -> RuntimeError {
        RuntimeError(Box::new(ErrorInner {
            kind: ErrorKind::Exit(status),
            message: format!("exit({status})"),
            location: None,
        }))
    }

    /// See [`ErrorKind::Impure`].
    pub(crate) fn impure() -> RuntimeError {
        RuntimeError(Box::new(ErrorInner {
            kind: ErrorKind::Impure,
            message: "side effect in a function run on several cores".into(),
            location: None,
        }))
    }

    /// Whether this is [`ErrorKind::Impure`].
    pub(crate) fn is_impure(&self) -> bool {
        self.0.kind == ErrorKind::Impure
    }

    /// What kind of error or non-local exit this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Whether this is the `skip` signal (a stage drops the current element).
    pub fn is_skip(&self) -> bool {
        self.0.kind == ErrorKind::Skip
    }

    /// The status of an `exit(n)` unwinding to the interpreter; native code must
    /// propagate such an error.
    pub fn exit_status(&self) -> Option<i32> {
        match self.0.kind {
            ErrorKind::Exit(n) => Some(n),
            _ => None,
        }
    }

    /// The message, without location.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The source and span the error was raised at, once the runtime has added it.
    pub fn location(&self) -> Option<&(Arc<Source>, Span)> {
        self.0.location.as_ref()
    }

    /// Whether a location has been attached.
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

    /// The error as a diagnostic for the renderer.
    pub(crate) fn to_diagnostic(&self) -> (Option<Arc<Source>>, Diagnostic) {
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
