//! A commit in one round trip: when what is left to write at a commit is
//! one table's few whole rows (`few_rows`), its savepoint, its upserts and
//! the commit (checkpoint, guarded COMMIT, positions) are all queued before
//! any answer is awaited. A caught-up stream's sink commit then costs one
//! round trip instead of two.
//!
//! Invariants:
//! - The commit's requests are queued after every write: the writes are
//!   polled first, and each queues its request at its first poll.
//! - A failed upsert leaves the transaction failed, so the checkpoint fails
//!   and the guarded COMMIT does not run (`durability::GUARDED_COMMIT`):
//!   nothing commits. The table's trouble is then settled as any write's
//!   (rolled back to its savepoint and set aside, or the job fails), and
//!   the caller commits again.

use std::future::Future;

use tokio_postgres::Client;

use super::{MirrorWriter, Target};
use crate::sink::postgres::SinkError;
use crate::sink::postgres::few_rows::{self, FEW_ROWS};
use crate::sink::postgres::isolation::{self, OnTableError};

impl MirrorWriter {
    /// See `Writer::apply_then`.
    pub(super) async fn apply_with_commit<T: Send>(
        &mut self,
        client: &Client,
        commit: impl Future<Output = T> + Send,
    ) -> Result<Option<T>, SinkError> {
        let isolate = self.on_error == OnTableError::Isolate;
        let lone = self.lone_few_rows();
        let Some((table, Target { destination: Some(destination), batch, .. })) =
            lone.and_then(|table| self.targets.get_mut(&table).map(|target| (table, target)))
        else {
            self.apply_pending(client).await?;
            return Ok(Some(commit.await));
        };
        let Some(rows) = batch.few_upserts(FEW_ROWS) else {
            self.apply_pending(client).await?;
            return Ok(Some(commit.await));
        };
        let failed =
            |error| SinkError::Write { statement: format!("the upserts into {}", destination.quoted), error };
        let writes = async {
            let upserts = few_rows::upsert(client, &destination.upsert_row, &rows);
            if isolate {
                let (saved, upserted) = tokio::join!(client.batch_execute(isolation::SAVEPOINT), upserts);
                saved?;
                upserted.map_err(failed)
            } else {
                upserts.await.map_err(failed)
            }
        };
        let (written, committed) = tokio::join!(writes, commit);
        drop(rows);
        batch.clear();
        self.pending = 0;
        match written {
            Ok(()) => Ok(Some(committed)),
            // The commit met the failed transaction and committed nothing
            // (its error says only that); the caller commits again.
            Err(error) => {
                self.settle(client, &table, Err(error)).await?;
                Ok(None)
            }
        }
    }

    /// The one table with staged rows, when they are a few whole rows to
    /// upsert and nothing else is pending (no open copy).
    fn lone_few_rows(&self) -> Option<Vec<u8>> {
        if self.copying.is_some() {
            return None;
        }
        let mut staged = self.targets.iter().filter(|(_, target)| !target.batch.is_empty());
        let (table, target) = staged.next()?;
        let few = staged.next().is_none() && target.batch.fits_few_upserts(FEW_ROWS);
        few.then(|| table.clone())
    }
}
