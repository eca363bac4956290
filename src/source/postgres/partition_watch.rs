//! Watches the source's catalog for what the WAL does not say.
//!
//! - `ATTACH PARTITION` of a table that holds rows, and `DETACH PARTITION`,
//!   change a root's rows without a single change in the WAL, so no sink can
//!   learn of them from the stream. The watch compares the leaf partitions
//!   of each captured root with the set recorded for the job, and marks the
//!   root as needing a re-copy when they differ.
//! - A captured table that was dropped is logged once: its destination is
//!   kept as it is.
//!
//! ```text
//!  source: pg_partition_tree(root) ──> leaves ──diff── recorded leaves (walpipe.partition_leaves)
//!                                                 └──> needs re-copy: walpipe.recopy_needed, metric, log, API
//! ```
//!
//! Invariants:
//! - The recorded set lives where the checkpoint does (the sink, or the
//!   state store), so an attach or detach made while walpipe was down is
//!   found at the next start.
//! - A root is marked before its recorded set moves on: a crash in between
//!   finds the change again.
//! - Before a full copy, the current sets are recorded as they are: the copy
//!   will hold their rows. (A change between this and the copy's snapshot
//!   marks the root once too often, never too rarely.)
//! - A failed poll never stops the job; it is logged and tried again.
//! - The job hears of a mark (and starts its session again to copy the
//!   root) only after the mark and the new set are recorded.
//! - The dropped tables are those captured when the job started (tables
//!   discovered later are not watched for this).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::checkpoint::marks as recopy_marks;
use crate::metrics::JobMetrics;
use crate::names::TableName;
use crate::pg::{ConnInfo, sql};
use crate::source::setup::{Background, SourceSettings};

/// How often the partitions are read.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Leaf partitions (`schema.name`) by captured root.
pub type Leaves = BTreeMap<TableName, BTreeSet<String>>;

/// A change of a root's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionChange {
    Attached { root: TableName, leaf: String },
    Detached { root: TableName, leaf: String },
}

impl PartitionChange {
    pub fn root(&self) -> &TableName {
        match self {
            PartitionChange::Attached { root, .. } | PartitionChange::Detached { root, .. } => root,
        }
    }

    /// Why the root needs a re-copy, in a sentence.
    pub fn reason(&self) -> String {
        match self {
            PartitionChange::Attached { root, leaf } => {
                let root = root.qualified();
                format!(
                    "partition {leaf} was attached to {root}: the rows it held joined {root} without any change in the WAL"
                )
            }
            PartitionChange::Detached { root, leaf } => {
                let root = root.qualified();
                format!(
                    "partition {leaf} was detached from {root}: its rows left {root} without any change in the WAL"
                )
            }
        }
    }
}

/// What changed from `recorded` to `current`, for the roots both know
/// (a root new to `recorded` is only recorded).
pub fn diff(recorded: &Leaves, current: &Leaves) -> Vec<PartitionChange> {
    let mut changes = Vec::new();
    for (root, now) in current {
        let Some(before) = recorded.get(root) else { continue };
        for leaf in now.difference(before) {
            changes.push(PartitionChange::Attached { root: root.clone(), leaf: leaf.clone() });
        }
        for leaf in before.difference(now) {
            changes.push(PartitionChange::Detached { root: root.clone(), leaf: leaf.clone() });
        }
    }
    changes
}

/// What the watch reads and where it records.
#[derive(Clone)]
struct Watched {
    source: ConnInfo,
    settings: SourceSettings,
}

/// Starts watching `source`; `captured`: the tables the job streams. It
/// stops when the returned task is dropped.
pub fn spawn(
    source: &ConnInfo,
    settings: &SourceSettings,
    metrics: &Arc<JobMetrics>,
    captured: Vec<TableName>,
) -> Background {
    let watched = Watched { source: source.clone(), settings: settings.clone() };
    Background::spawn(run(watched, metrics.clone(), captured))
}

/// Records the partitions as they are, before a full copy: an attach or
/// detach after this point is found again, at worst once too often.
pub async fn record_current(
    settings: &SourceSettings,
    source: &Client,
    store: &Client,
) -> Result<(), tokio_postgres::Error> {
    record(store, &settings.job, &leaves(source, &settings.tables).await?).await
}

async fn run(watched: Watched, metrics: Arc<JobMetrics>, mut captured: Vec<TableName>) {
    let spec = &watched.settings;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sessions: Option<(Client, Client)> = None;
    loop {
        ticker.tick().await;
        if sessions.is_none() {
            sessions = open(&watched).await;
        }
        let Some((source, store)) = sessions.as_ref() else { continue };
        let polled = async {
            poll(spec, &metrics, source, store).await?;
            report_dropped(spec, source, &mut captured).await
        };
        match polled.await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(job = %spec.job, "could not compare the partitions of the captured tables: {}", sql::describe(&error));
                sessions = None;
            }
        }
    }
}

async fn open(watched: &Watched) -> Option<(Client, Client)> {
    let spec = &watched.settings;
    let mut source = watched.source.clone();
    source.application_name.push_str("-partitions");
    let opened = async {
        let source = sql::connect(&source, "the source").await?;
        let store = sql::connect(&spec.checkpoint_db, "the checkpoint database").await?;
        Ok::<_, sql::ConnectError>((source, store))
    };
    match opened.await {
        Ok(sessions) => Some(sessions),
        Err(error) => {
            tracing::debug!(job = %spec.job, "the partition watch could not connect: {error}");
            None
        }
    }
}

async fn poll(
    spec: &SourceSettings,
    metrics: &JobMetrics,
    source: &Client,
    store: &Client,
) -> Result<(), tokio_postgres::Error> {
    let current = leaves(source, &spec.tables).await?;
    let recorded = recorded(store, &spec.job).await?;
    let changes = diff(&recorded, &current);
    for change in &changes {
        let reason = change.reason();
        tracing::warn!(job = %spec.job, table = %change.root().qualified(), "{reason}: copying the table again");
        recopy_marks::mark_recopy(store, &spec.job, change.root(), &reason).await?;
    }
    if recorded != current {
        record(store, &spec.job, &current).await?;
    }
    // Told last: it ends the session, whose next one copies what is marked.
    for change in &changes {
        metrics.status.needs_recopy(&change.root().qualified(), &change.reason());
    }
    Ok(())
}

/// Logs the tables of `captured` that no longer exist, and forgets them.
async fn report_dropped(
    spec: &SourceSettings,
    source: &Client,
    captured: &mut Vec<TableName>,
) -> Result<(), tokio_postgres::Error> {
    let (schemas, names): (Vec<&str>, Vec<&str>) =
        captured.iter().map(|t| (t.schema.as_str(), t.name.as_str())).unzip();
    let rows = source
        .query(
            "SELECT s, n FROM unnest($1::text[], $2::text[]) AS u(s, n) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE ns.nspname = s AND c.relname = n)",
            &[&schemas, &names],
        )
        .await?;
    for row in rows {
        let dropped = TableName::new(row.get(0), row.get(1));
        tracing::warn!(job = %spec.job, table = %dropped.qualified(),
            "the source table {} was dropped: its destination is kept as it is, and no more changes arrive for it", dropped.qualified());
        captured.retain(|table| table != &dropped);
    }
    Ok(())
}

/// The leaf partitions of the captured partitioned tables: those of
/// `selection`, or every partitioned table of schema `public` when it is empty.
async fn leaves(source: &Client, selection: &[TableName]) -> Result<Leaves, tokio_postgres::Error> {
    let (schemas, names): (Vec<&str>, Vec<&str>) =
        selection.iter().map(|t| (t.schema.as_str(), t.name.as_str())).unzip();
    let rows = source
        .query(
            "SELECT rn.nspname, r.relname, ln.nspname || '.' || l.relname \
             FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace \
             CROSS JOIN LATERAL pg_partition_tree(r.oid) t \
             JOIN pg_class l ON l.oid = t.relid JOIN pg_namespace ln ON ln.oid = l.relnamespace \
             WHERE r.relkind = 'p' AND NOT r.relispartition AND t.isleaf \
               AND (CASE WHEN cardinality($1::text[]) = 0 THEN rn.nspname = 'public' \
                    ELSE (rn.nspname, r.relname) IN (SELECT * FROM unnest($1::text[], $2::text[])) END)",
            &[&schemas, &names],
        )
        .await?;
    let mut leaves = Leaves::new();
    for row in rows {
        leaves.entry(TableName::new(row.get(0), row.get(1))).or_default().insert(row.get(2));
    }
    Ok(leaves)
}

async fn recorded(store: &Client, job: &str) -> Result<Leaves, tokio_postgres::Error> {
    let rows = store
        .query(
            "SELECT root_schema, root_name, leaves FROM walpipe.partition_leaves WHERE job_name = $1",
            &[&job],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let leaves: Vec<String> = row.get(2);
            (TableName::new(row.get(0), row.get(1)), leaves.into_iter().collect())
        })
        .collect())
}

async fn record(store: &Client, job: &str, current: &Leaves) -> Result<(), tokio_postgres::Error> {
    for (root, leaves) in current {
        let leaves: Vec<&String> = leaves.iter().collect();
        store
            .execute(
                "INSERT INTO walpipe.partition_leaves (job_name, root_schema, root_name, leaves) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job_name, root_schema, root_name) DO UPDATE SET leaves = EXCLUDED.leaves",
                &[&job, &root.schema, &root.name, &leaves],
            )
            .await?;
    }
    let (schemas, names): (Vec<&str>, Vec<&str>) =
        current.keys().map(|root| (root.schema.as_str(), root.name.as_str())).unzip();
    store
        .execute(
            "DELETE FROM walpipe.partition_leaves WHERE job_name = $1 \
             AND (root_schema, root_name) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))",
            &[&job, &schemas, &names],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(entries: &[(&str, &[&str])]) -> Leaves {
        entries
            .iter()
            .map(|(root, leaves)| {
                (TableName::new("public", root), leaves.iter().map(|l| format!("public.{l}")).collect())
            })
            .collect()
    }

    #[test]
    fn attached_and_detached_leaves_are_found_and_new_roots_only_recorded() {
        let recorded = leaves(&[("m", &["m1", "m2"])]);
        let current = leaves(&[("m", &["m2", "m3"]), ("n", &["n1"])]);
        let root = TableName::new("public", "m");
        assert_eq!(
            diff(&recorded, &current),
            [
                PartitionChange::Attached { root: root.clone(), leaf: "public.m3".into() },
                PartitionChange::Detached { root, leaf: "public.m1".into() },
            ]
        );
        assert!(diff(&current, &current).is_empty());
        assert!(diff(&Leaves::new(), &current).is_empty(), "a root not recorded yet is only recorded");
    }

    #[test]
    fn the_reason_names_the_partition_and_the_root() {
        let change =
            PartitionChange::Detached { root: TableName::new("public", "m"), leaf: "public.m1".into() };
        assert_eq!(
            change.reason(),
            "partition public.m1 was detached from public.m: its rows left public.m without any change in the WAL"
        );
    }
}
