//! Recording that a restart's reset is done.
//!
//! Invariant: a reset job streams only after the store has recorded the
//! reset as done. Were it to stream first, its next claim (after a crash, a
//! lost lease) would reset it again: a new slot and a full copy for nothing.

use std::time::Duration;

use super::{Desired, JobTask};

impl JobTask {
    /// Records the reset as done, trying again with backoff while the
    /// store cannot take it. Returns early when the job is asked to stop or
    /// is let go (the caller then ends it): its reset stays requested, so
    /// its next run resets again, which is what the restart asked for.
    pub(super) async fn record_reset(&mut self) {
        let mut delays = crate::backoff::delays(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            match self.store.reset_done(&self.spec.name).await {
                Ok(()) => return,
                Err(error) => {
                    let wait = delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(job = %self.spec.name,
                        "the job was reset, but the state store could not record it ({error}); trying again in {:.1} s before streaming", wait.as_secs_f64());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.control.wait_for(|desired| !matches!(desired, Desired::Run | Desired::Pause)) => return,
                    }
                }
            }
        }
    }
}
