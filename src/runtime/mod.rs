//! Running the graph: streams, stages, scheduling and I/O.

pub mod io;
pub mod stream;
