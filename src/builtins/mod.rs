//! The standard library, one module per area. Every name is installed through the
//! public [`Registry`](crate::ext::Registry), exactly as an extension would be.

pub mod array;
pub mod combine;
pub mod core;
pub mod csv;
pub mod graph_bar;
pub mod io;
pub mod iter;
pub mod kvs;
pub mod math;
pub mod net;
pub mod number;
pub mod pipe;
pub mod random;
pub mod sort;
pub mod stat;
pub mod string;
pub mod time;

use crate::ext::Registry;

/// Registers the whole standard library.
pub fn register_all(r: &Registry) {
    core::register(r);
    csv::register(r);
    kvs::register(r);
    graph_bar::register(r);
    pipe::register(r);
    combine::register(r);
    io::register(r);
    net::register(r);
    iter::register(r);
    time::register(r);
    math::register(r);
    number::register(r);
    string::register(r);
    random::register(r);
    array::register(r);
    stat::register(r);
    sort::register(r);
    mark_pure(r);
}

/// Math functions, in the prelude and as number methods.
const MATH: &[&str] = &[
    "sqrt", "cbrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erfc", "fabs", "pow", "hypot", "round",
    "ceil", "floor", "trunc", "int", "frexp", "ldexp", "gcd",
];

/// Declares the builtins that only compute a value from their arguments pure, so a
/// `map` or `filter` calling only them may run on several cores (see
/// `Registry::mark_pure`). Stage constructors, I/O, `print`, `rand`, `now` and
/// `kvs` are not.
fn mark_pure(r: &Registry) {
    r.mark_pure(&["==", "!=", "string", "number", "time", "cmp"]);
    r.mark_pure(MATH);
    r.namespace("number")
        .mark_pure(&["+", "-", "*", "/", "%", "|", "&", "<", "<=", ">", ">="])
        .mark_pure(&["number", "string"])
        .mark_pure(MATH);
    r.namespace("string").mark_pure(&[
        "+",
        "<",
        "<=",
        ">",
        ">=",
        "length",
        "bytesize",
        "chars",
        "contains",
        "downcase",
        "upcase",
        "ends_with",
        "starts_with",
        "find",
        "index",
        "gsub",
        "sub",
        "replace",
        "scan",
        "test",
        "lines",
        "split",
        "strip",
        "lstrip",
        "rstrip",
        "substr",
        "number",
        "string",
    ]);
    r.namespace("array").mark_pure(&[
        "length", "reverse", "join", "sum", "average", "mean", "median", "stdev", "variance",
        "correl",
    ]);
    r.namespace("time")
        .mark_pure(&["+", "-", "<", "<=", ">", ">=", "number", "string"]);
}
