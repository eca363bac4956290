//! The command-line front end: one module per subcommand.

pub mod check;
pub mod jobs;
pub mod malloc_tuning;
pub mod progress;
pub mod reference;
pub mod run;
pub mod tail;
pub mod watch;

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
