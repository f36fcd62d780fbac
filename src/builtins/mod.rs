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
}
