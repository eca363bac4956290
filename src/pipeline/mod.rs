//! From decoded messages to committed, ordered change lines.

pub mod assembler;
pub mod batch;
pub mod driver;
pub mod spill;
