//! walpipe: stream a PostgreSQL logical replication slot into a sink.
//!
//! Layers, from the wire up:
//!
//! ```text
//!  protocol/  pure bytes: walsender messages, pgoutput decoder
//!  change/    pure: rows to the change JSON
//!  source/    the replication connection: transport, auth, commands, stream
//!  pipeline/  transactions in order, streamed ones held (and spilled) until commit
//!  chunked/   tables copied in chunks beside the stream, merged at markers
//!  sink/      the Postgres sink: batches applied with their checkpoint
//!  job/       one job: set-up, snapshot, stream, retries
//!  names      table names as users write them, quoting for SQL
//!  monitor    the slot monitor (its own SQL connection)
//!  metrics    every metric name; http: /metrics, /healthz, /readyz
//!  secret     URLs made safe to show
//!  backoff    the one retry backoff, with jitter
//!  cli/       the commands
//! ```
//!
//! Each layer has its own `thiserror` errors; `anyhow` is used only by the
//! commands at the top.

pub mod backoff;
pub mod change;
pub mod chunked;
pub mod cli;
pub mod config;
pub mod http;
pub mod job;
pub mod lifecycle;
pub mod lines;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod pg;
pub mod pipeline;
pub mod position;
pub mod secret;
pub mod sink;
pub mod source;
