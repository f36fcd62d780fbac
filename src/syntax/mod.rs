//! Source text to syntax tree: lexer, parser, spans and diagnostics.
//!
//! Nothing in here knows about values or evaluation (invariant: `syntax` depends on
//! no other module of the crate).

pub mod ast;
pub mod diagnostic;
pub mod lexer;
pub mod parser;
pub mod source;
pub mod span;
pub mod token;

pub use parser::{parse, ParseError};
pub use source::Source;
pub use span::Span;
