//! One table's trouble never stops the others.
//!
//! A change the sink cannot apply to one table (a cast that fails on a
//! value edited by hand, a destination someone altered) used to fail the
//! whole job: every table stopped, and the slot retained WAL until someone
//! acted. Under `WALPIPE_ON_TABLE_ERROR=isolate` (the default) that table
//! alone is set aside and rebuilt:
//!
//! ```text
//!  each table's work in the sink transaction runs under a savepoint
//!     └─ fails with the table's own trouble (data, integrity, shape, privilege)
//!          ──> rolled back to the savepoint; the table is isolated: its changes are skipped,
//!              walpipe.recopy_needed marks it (isolated, reason, statement, fix), its
//!              old rebuild (if any) is dropped ── all in the same sink transaction
//!          ──> the other tables commit, the slot advances
//!  next session: the table's rows go to its shadow `<destination>_walpipe_rebuild`,
//!     made from the source's catalog; the mark starts a chunked copy into it
//!  the copy's end (R record): the shadow replaces the destination in one
//!     transaction (DROP, RENAME): readers see the old rows until then, never a half-filled table
//! ```
//!
//! Invariants:
//! - Only a table's own trouble isolates it; a lost connection or a full
//!   disk is every table's and fails (then retries) the job as before.
//! - The isolation, the skipped changes and the checkpoint commit together:
//!   a crash replays the same changes and isolates the same table again.
//! - A rebuild that would lose destination columns the source does not have
//!   (added by a person, or kept under `WALPIPE_SCHEMA_DROP=keep`) waits for
//!   `walpipe jobs snapshot`: a person decides that those columns may go.
//! - A crash during the rebuild resumes it: the shadow keeps its rows and
//!   the copy resumes from its last recorded chunk.

use tokio_postgres::Client;

use super::SinkError;
use crate::names::TableName;

/// What a change the sink cannot apply to one table does (`WALPIPE_ON_TABLE_ERROR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTableError {
    /// The table is set aside and rebuilt; the others stream on (the default).
    Isolate,
    /// The job fails, as before: every table stops until someone acts.
    Fail,
}

/// The savepoint each table's work runs under.
pub const SAVEPOINT: &str = "SAVEPOINT walpipe_table";
pub const ROLLBACK: &str = "ROLLBACK TO SAVEPOINT walpipe_table";

/// Where an isolated table is rebuilt: `<destination>_walpipe_rebuild`, in its schema.
pub fn shadow_of(destination: &TableName) -> TableName {
    TableName::new(&destination.schema, &crate::names::with_suffix(&destination.name, "_walpipe_rebuild"))
}

/// The statement that failed and why, when `error` is one table's own
/// trouble; `None` for what concerns every table (a connection, a resource).
pub fn table_trouble(error: &SinkError) -> Option<(String, String)> {
    match error {
        SinkError::Schema { statement, detail, .. } => Some((statement.clone(), detail.clone())),
        SinkError::Write { statement, error } => {
            own_trouble(error).then(|| (statement.clone(), crate::pg::sql::describe(error)))
        }
        SinkError::Postgres(error) => {
            own_trouble(error).then(|| ("a write to the table".to_string(), crate::pg::sql::describe(error)))
        }
        _ => None,
    }
}

/// Whether `error` concerns the table written to: 22 data, 23 integrity,
/// 42 syntax, undefined object or privilege, 0A not supported, 44 check
/// option, P0 a trigger's raise.
fn own_trouble(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|code| matches!(&code.code()[..2], "22" | "23" | "42" | "0A" | "44" | "P0"))
}

/// Whether an isolated table's rebuild starts by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuild {
    /// It starts at the next session.
    Starts,
    /// It would drop these destination columns, which the source does not have.
    WouldDrop(Vec<String>),
    /// The rebuild itself failed: trying again by itself would loop.
    Failed,
}

impl Rebuild {
    /// Whether it waits for `walpipe jobs snapshot`.
    pub fn waits(&self) -> bool {
        *self != Rebuild::Starts
    }
}

/// Why `table` is isolated, with the fix, for the mark, the API and the log.
pub fn reason(job: &str, table: &TableName, statement: &str, detail: &str, rebuild: &Rebuild) -> String {
    let table = table.qualified();
    let failed = format!("isolated: {statement} failed: {detail}");
    match rebuild {
        Rebuild::Starts => format!(
            "{failed}; walpipe rebuilds {table} from the source beside its destination and swaps it in when complete (the other tables stream on)"
        ),
        Rebuild::WouldDrop(columns) => format!(
            "{failed}; a rebuild from the source would drop the destination's columns {} that the source does not have, so it waits for you: run `walpipe jobs snapshot {job} {table}` to rebuild it without them",
            columns.join(", ")
        ),
        Rebuild::Failed => format!(
            "{failed}, while {table} was being rebuilt from the source; fix what the error names in the sink, then run `walpipe jobs snapshot {job} {table}` to rebuild it again"
        ),
    }
}

/// Replaces `live` by its rebuilt `shadow`, in the sink transaction.
pub async fn swap(
    client: &Client,
    shadow: &TableName,
    live: &TableName,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {}; ALTER TABLE {} RENAME TO {}",
            live.quoted(),
            shadow.quoted(),
            crate::names::quote_ident(&live.name)
        ))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_sits_beside_its_destination_and_fits_a_name() {
        assert_eq!(shadow_of(&TableName::new("s", "t")), TableName::new("s", "t_walpipe_rebuild"));
        assert_eq!(shadow_of(&TableName::new("s", &"x".repeat(63))).name.len(), 63);
    }

    #[test]
    fn each_reason_names_the_statement_and_the_fix() {
        let table = TableName::new("public", "t");
        let reason = |rebuild| reason("j", &table, "the upserts into t", "bad value", &rebuild);
        assert!(reason(Rebuild::Starts).contains("rebuilds public.t from the source"));
        let waits = reason(Rebuild::WouldDrop(vec!["extra".into()]));
        assert!(
            waits.contains("columns extra") && waits.contains("walpipe jobs snapshot j public.t"),
            "{waits}"
        );
        let failed = reason(Rebuild::Failed);
        assert!(
            failed.contains("while public.t was being rebuilt")
                && failed.contains("walpipe jobs snapshot j public.t")
        );
        for rebuild in [Rebuild::Starts, Rebuild::Failed] {
            assert!(reason(rebuild).starts_with("isolated: the upserts into t failed: bad value"));
        }
        assert!(!Rebuild::Starts.waits() && Rebuild::Failed.waits());
    }

    #[test]
    fn only_a_table_of_its_own_trouble_is_isolated() {
        let schema =
            SinkError::Schema { table: "public.t".into(), statement: "ALTER".into(), detail: "bad".into() };
        assert_eq!(table_trouble(&schema), Some(("ALTER".into(), "bad".into())));
        assert_eq!(table_trouble(&SinkError::Record("x".into())), None);
    }
}
