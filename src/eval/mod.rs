//! From syntax tree to values: the compiler (names resolved to slots), the
//! evaluator, the value model and printing.

pub mod compile;
pub mod error;
pub mod exec;
pub mod func;
pub mod interp;
pub mod ir;
pub mod namespace;
pub mod ops;
pub mod print;
pub mod symbol;
pub mod value;
