//! From decoded messages to committed, ordered change lines.

pub mod assembler;
mod blocking;
pub mod driver;
pub mod spill;
