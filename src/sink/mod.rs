//! Sinks: where changes go. One folder or file per sink; each reads chunks
//! of change lines from the driver and acknowledges them once durable.

pub mod postgres;
