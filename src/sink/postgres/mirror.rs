//! Mirror mode: each destination table holds the current state of each
//! source row (see the module above for the commit rules).

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::batch::{Admit, Record, TableBatch};
use super::schema::Destination;
use super::{SinkError, Writer};

/// One destination and its pending rows.
struct Target {
    destination: Destination,
    batch: TableBatch,
}

pub struct MirrorWriter {
    /// By source table, as escaped in mirror records (`schema.name`).
    targets: HashMap<Vec<u8>, Target>,
    pending: usize,
}

impl MirrorWriter {
    /// `destinations`: by source table `schema.name`.
    pub fn new(destinations: HashMap<String, Destination>) -> Self {
        let targets = destinations
            .into_iter()
            .map(|(table, destination)| {
                let mut escaped = Vec::new();
                crate::change::mirror::escape(&mut escaped, table.as_bytes());
                (escaped, Target { destination, batch: TableBatch::default() })
            })
            .collect();
        MirrorWriter { targets, pending: 0 }
    }

    fn stage(&mut self, record: &Record) -> Result<Admit, SinkError> {
        // A table the job does not mirror (the publication has more): skip it.
        let Some(target) = self.targets.get_mut(record.table()) else { return Ok(Admit::Added) };
        let (width, keys) = (target.destination.width, &target.destination.key_positions);
        target.batch.add(record, width, keys).map_err(SinkError::Record)
    }
}

impl Writer for MirrorWriter {
    async fn add(&mut self, client: &Client, line: Bytes) -> Result<(), SinkError> {
        let record = Record::parse(line).map_err(SinkError::Record)?;
        match record.op() {
            b'M' => {}
            b'T' => {
                self.apply(client).await?;
                if let Some(target) = self.targets.get(record.table()) {
                    client.batch_execute(&format!("TRUNCATE {}", target.destination.quoted)).await?;
                }
            }
            _ => {
                if self.stage(&record)? == Admit::ApplyFirst {
                    self.apply(client).await?;
                    self.stage(&record)?;
                }
                self.pending += 1;
            }
        }
        Ok(())
    }

    /// Per table: COPY into its staging table, then one statement per kind present.
    async fn apply(&mut self, client: &Client) -> Result<(), SinkError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        for target in self.targets.values_mut() {
            if target.batch.is_empty() {
                continue;
            }
            let destination = &target.destination;
            if let Some(rows) = target.batch.insert_rows() {
                // New rows: COPY them straight in. A row that exists (a replay)
                // fails the COPY on the key, and the batch takes the guarded path.
                client.batch_execute("SAVEPOINT walpipe_new_rows").await?;
                match copy(client, &destination.copy_new_rows, rows).await {
                    Ok(()) => {
                        client.batch_execute("RELEASE SAVEPOINT walpipe_new_rows").await?;
                        target.batch.clear();
                        continue;
                    }
                    Err(error)
                        if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        client.batch_execute("ROLLBACK TO SAVEPOINT walpipe_new_rows").await?;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            let (rows, kinds) = target.batch.take_staging(&destination.key_positions);
            copy(client, &destination.copy_in, rows).await?;
            // Moves read the rows under their old keys, so they go before the deletes.
            for (count, statement) in [
                (kinds.moves, &destination.moves),
                (kinds.deletes, &destination.deletes),
                (kinds.upserts, &destination.upserts),
                (kinds.keeping_toast, &destination.updates_keeping_toast),
            ] {
                if count > 0 {
                    client.execute(statement, &[]).await?;
                }
            }
            client.batch_execute(&format!("TRUNCATE {}", destination.stage)).await?;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.pending
    }
}

/// `COPY ... FROM STDIN` of `rows` (COPY text).
async fn copy(client: &Client, statement: &str, rows: Vec<u8>) -> Result<(), tokio_postgres::Error> {
    let writer = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(writer);
    writer.send(Bytes::from(rows)).await?;
    writer.finish().await.map(drop)
}
