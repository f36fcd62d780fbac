//! Streem: a stream-based concurrent scripting language.
//!
//! Data flows one way through the crate: source text (`syntax`) -> syntax tree ->
//! compiled program (`eval`) -> values and streams (`runtime`) -> output. The
//! standard library (`builtins`) is registered through the same public API an
//! embedder uses.
//!
//! # Public API
//!
//! The public surface is deliberately small (ARCHITECTURE.md, "Public API"):
//!
//! * [`Interpreter`], [`RunOptions`], [`Session`], [`Outcome`]: embedding (run a
//!   program from a string or file with `ARGV`, capture its output, get the exit
//!   status; an interactive session);
//! * [`ext`]: the extension API (spec section 9.2) — values, native functions and
//!   objects, argument extraction, registration, stages, asynchronous I/O, signals;
//! * [`Source`] and [`Span`]: a program text and a byte range in it (error locations).
//!
//! Everything else is private to the crate. `docs/extending.md` is the guide.
//!
//! ```
//! use streem::ext::Capture;
//! use streem::{Interpreter, RunOptions};
//!
//! let interp = Interpreter::new();
//! let out = Capture::new();
//! interp.set_stdout(out.clone());
//! let status = interp.run_str("-e", "seq(3) | map{x -> x * x} | stdout", vec![], &RunOptions::default());
//! assert_eq!((status, out.text()), (0, "1\n4\n9\n".to_string()));
//! ```

#![warn(missing_docs)]

pub(crate) mod builtins;
#[doc(hidden)]
pub mod cli;
pub(crate) mod eval;
pub mod ext;
pub(crate) mod repl;
pub(crate) mod runtime;
pub(crate) mod syntax;

pub use eval::interp::{Interpreter, Outcome, RunOptions, Session};
pub use syntax::{Source, Span};

/// The parser, for the parser's property test (`tests/parser_no_panic.rs`); not part
/// of the stable API.
#[doc(hidden)]
pub use syntax::{parse, ParseError};
