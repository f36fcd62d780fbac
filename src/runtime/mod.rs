//! Running the graph: streams, stages, scheduling and I/O.

pub(crate) mod assist;
pub mod io;
pub mod stream;
