//! The mirror's side of isolation (see `crate::sink::postgres::isolation`):
//! each table's work under a savepoint, a table set aside on its own
//! trouble, and its rebuild swapped in at the end of its copy.

use bytes::Bytes;
use tokio_postgres::Client;

use super::MirrorWriter;
use crate::checkpoint::marks as recopy_marks;
use crate::sink::postgres::SinkError;
use crate::sink::postgres::isolation::{self, OnTableError, Rebuild};
use crate::sink::postgres::record::Record;

impl MirrorWriter {
    /// Opens the savepoint a table's work runs under (when tables are isolated).
    pub(super) async fn savepoint(&self, client: &Client) -> Result<(), SinkError> {
        if self.on_error == OnTableError::Isolate {
            client.batch_execute(isolation::SAVEPOINT).await?;
        }
        Ok(())
    }

    /// The end of `table`'s work: on its own trouble (and under `isolate`),
    /// rolled back to its savepoint and isolated; any other error as it is.
    pub(super) async fn settle(
        &mut self,
        client: &Client,
        table: &[u8],
        result: Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let error = match result {
            Err(error) if self.on_error == OnTableError::Isolate => error,
            other => return other,
        };
        let Some((statement, detail)) = isolation::table_trouble(&error) else { return Err(error) };
        client.batch_execute(isolation::ROLLBACK).await?;
        self.isolate(client, table, &statement, &detail).await
    }

    /// Sets `table` aside: its changes are skipped from now on, and it is
    /// marked (in this sink transaction) to be rebuilt into its shadow.
    async fn isolate(
        &mut self,
        client: &Client,
        table: &[u8],
        statement: &str,
        detail: &str,
    ) -> Result<(), SinkError> {
        let job = self.follower.job().to_string();
        let Some(target) = self.targets.get_mut(table) else {
            tracing::warn!(job = %job, table = %String::from_utf8_lossy(table),
                "a table first seen in the stream could not be mirrored ({statement} failed: {detail}): its changes are skipped");
            return Ok(());
        };
        target.isolated = true;
        target.batch.clear();
        target.destination = None;
        let source = target.place.source.clone();
        let live = target.place.replaces.clone().unwrap_or_else(|| target.place.destination.clone());
        let rebuilding = target.place.replaces.is_some();
        let shape = Record::parse(Bytes::from([b"0/0\t".as_slice(), &target.shape].concat()));
        let rebuild = match shape {
            _ if rebuilding => Rebuild::Failed,
            Ok(shape) if !target.shape.is_empty() => {
                let lacks = self.follower.columns_the_source_lacks(client, &target.place, &shape).await?;
                if lacks.is_empty() { Rebuild::Starts } else { Rebuild::WouldDrop(lacks) }
            }
            _ => Rebuild::Starts,
        };
        let reason = isolation::reason(&job, &source, statement, detail, &rebuild);
        recopy_marks::mark_isolated(client, &job, &source, &reason, rebuild.waits()).await?;
        client
            .execute(
                "DELETE FROM walpipe.source_columns WHERE job_name = $1 AND source_table = $2",
                &[&job, &source.qualified()],
            )
            .await?;
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", isolation::shadow_of(&live).quoted()))
            .await?;
        tracing::warn!(job = %job, table = %source, destination = %live, %reason,
            "a change of {source} cannot be applied: the table is isolated, and the other tables stream on");
        self.metrics.status.needs_recopy(&source.qualified(), &reason);
        Ok(())
    }

    /// The isolated `table`'s rebuild is complete (its copy ended): it
    /// replaces the destination, in this sink transaction, and the table's
    /// changes go to the destination again.
    pub(super) async fn swap_in_rebuild(&mut self, client: &Client, table: &[u8]) -> Result<(), SinkError> {
        let job = self.follower.job().to_string();
        let Some(target) = self.targets.get_mut(table) else { return Ok(()) };
        let Some(live) = target.place.replaces.take() else { return Ok(()) };
        let shadow = std::mem::replace(&mut target.place.destination, live.clone());
        isolation::swap(client, &shadow, &live).await?;
        recopy_marks::end_isolation(client, &job, &target.place.source).await?;
        let shape = Record::parse(Bytes::from([b"0/0\t".as_slice(), &target.shape].concat()))
            .map_err(SinkError::Record)?;
        target.destination = Some(self.follower.follow_record(client, &target.place, &shape).await?);
        tracing::info!(job = %job, table = %target.place.source, destination = %live,
            "the isolated table was rebuilt from the source and swapped in: its changes are applied again");
        Ok(())
    }
}
