//! From decoded messages to committed, ordered change lines.

pub mod assembler;
pub mod spill;
