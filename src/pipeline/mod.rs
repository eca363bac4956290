//! From decoded messages to committed, ordered change lines.

pub mod assembler;
pub mod driver;
pub mod spill;
mod spill_io;
