//! walpipe: stream a database's changes (a PostgreSQL logical replication
//! slot) into a sink.
//!
//! The layers, from the bottom up. A module imports only from its own
//! layer's modules and the layers below it (`tests/layers.rs` checks it):
//!
//! ```text
//!  position names secret backoff lines lifecycle status config   the base: places in a stream, table names, secrets, retries, job states and status, settings
//!  pg         the PostgreSQL client: connection strings, TLS, auth, a protocol client, tokio-postgres helpers
//!  change     neutral: rows, table shapes with named types, the change JSON, mirror records
//!  metrics    every metric name, a job's handles, a table copy's progress
//!  chunked    which tables a chunked copy has left, and from where
//!  checkpoint the checkpoint store: positions, copy progress, re-copy marks, wherever they are kept
//!  contract   between the driver, its stages and a sink: chunks in order, receipts once durable, SinkError
//!  source     the Source seam: set-up and start (Source), the change stream (ChangeStream),
//!             the copy's read side, the outbox stage, the registry of sources; postgres/:
//!             the one place that knows pgoutput, LSNs, slots and xid snapshots
//!  sink       the sinks behind Sink, one folder each, and their registry
//!  pipeline   the driver: a ChangeStream into a sink, confirming only what is durable
//!  job        one job: set-up, copies, streaming, retries; the state store and the supervisor
//!  http       /metrics, /healthz, /readyz, the control API
//!  cli        the commands
//! ```
//!
//! Each layer has its own `thiserror` errors; `anyhow` is used only by the
//! commands at the top.

pub mod backoff;
pub mod change;
pub mod checkpoint;
pub mod chunked;
pub mod cli;
pub mod config;
pub mod contract;
pub mod http;
pub mod job;
pub mod lifecycle;
pub mod lines;
pub mod metrics;
pub mod names;
pub mod pg;
pub mod pipeline;
pub mod position;
pub mod secret;
pub mod sink;
pub mod source;
pub mod status;
