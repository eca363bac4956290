//! A sink that takes batches ([`Transport`]) as a [`Sink`]: its copy and
//! its stream go through a [`Delivery`], with the ledger in the state store.
//!
//! Invariant: the ledger is read when the copy or the stream begins, not
//! at `open`, because a fresh start forgets the old checkpoint in between:
//! what a previous slot delivered must not shape the new slot's batches.

use std::sync::Arc;

use super::{Delivery, Transport};
use crate::change::encode::JsonLines;
use crate::metrics::JobMetrics;
use crate::pg::sql;
use crate::sink::settings::SinkSettings;
use crate::sink::{Driving, Opening, Sink, SinkError};
use crate::source::copy::{Snapshot, SnapshotError};

pub struct BatchSink<T: Transport> {
    /// Lent to the copy's delivery, and back once the copy is done.
    transport: Option<T>,
    spec: SinkSettings,
    metrics: Arc<JobMetrics>,
}

impl<T: Transport> BatchSink<T> {
    /// A delivery through the transport, with its ledger on its own
    /// connection to the state store.
    async fn delivery(&mut self) -> Result<Delivery<T>, SinkError> {
        let transport =
            self.transport.take().ok_or_else(|| SinkError::Record("the transport is in use".into()))?;
        let spec = &self.spec;
        let state = sql::connect(&spec.checkpoint_db, "the state store").await?;
        Delivery::open(
            &spec.name,
            transport,
            state,
            spec.batch_size,
            spec.flush_interval,
            self.metrics.clone(),
            spec.outbox.clone(),
        )
        .await
    }
}

impl<T: Transport> Sink for BatchSink<T> {
    type Target = T::Target;
    const SCHEMES: &'static [&'static str] = T::SCHEMES;
    const URL_FORM: &'static str = T::URL_FORM;
    const HOLDS_CHECKPOINT: bool = false;
    const NEEDS_KEYS: bool = T::NEEDS_KEYS;

    fn parse(url: &str) -> Result<T::Target, String> {
        T::parse(url)
    }

    async fn open(target: &T::Target, opening: &Opening<'_>) -> Result<Self, SinkError> {
        Ok(BatchSink {
            transport: Some(T::connect(target, opening)?),
            spec: opening.settings.clone(),
            metrics: opening.metrics.clone(),
        })
    }

    async fn copy(&mut self, snapshot: &Snapshot<'_>) -> Result<u64, SnapshotError> {
        let mut delivery = self.delivery().await?;
        let rows = snapshot.copy_as_lines(&mut delivery).await;
        self.transport = Some(delivery.into_transport());
        rows
    }

    async fn stream<D: Driving>(mut self, driving: D) -> D::Outcome {
        match self.delivery().await {
            Ok(delivery) => driving.drive(JsonLines, |ends| delivery.run(ends)).await,
            Err(error) => driving.fail(error),
        }
    }
}
