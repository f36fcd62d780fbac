//! Streem: a stream-based concurrent scripting language.
//!
//! Data flows one way through the crate: source text ([`syntax`]) -> syntax tree ->
//! compiled program ([`eval`]) -> values and streams ([`runtime`]) -> output. The
//! standard library ([`builtins`]) is registered through the same public API an
//! embedder uses ([`ext`]).

pub mod builtins;
pub mod cli;
pub mod eval;
pub mod ext;
pub mod runtime;
pub mod syntax;

pub use eval::interp::{Interpreter, Outcome, RunOptions, Session};
