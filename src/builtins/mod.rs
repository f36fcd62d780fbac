//! The standard library, one module per area. Every name is installed through the
//! public [`Registry`](crate::ext::Registry), exactly as an extension would be.

pub mod core;
pub mod io;
pub mod iter;
pub mod pipe;
pub mod time;

use crate::ext::Registry;

/// Registers the whole standard library.
pub fn register_all(r: &Registry) {
    core::register(r);
    pipe::register(r);
    io::register(r);
    iter::register(r);
    time::register(r);
}
