//! Which tables a session copies while it streams: the unfinished copies
//! it resumes, and the new ones it starts. Pure: no I/O.
//!
//! A table is copied (again) when:
//! - a copy request (`POST /api/v1/jobs/{name}/snapshot`) is newer than the
//!   one its last copy answered;
//! - a "needs a re-copy" mark (a schema change the sink could not follow, a
//!   partition attached or detached) is newer than the one its last copy answered;
//! - it is captured but the job never copied it: it was added to the job.
//!
//! Invariants:
//! - Every captured table has an entry once the plan is written, so "no
//!   entry" means "added since" — except for a job whose progress is empty
//!   altogether (it was copied before progress was recorded, or never
//!   copies): its tables are recorded as copied, not copied again.
//! - Entries of tables the job no longer captures are forgotten, so a table
//!   removed and added back is copied again.
//! - A new copy starts at the session's stream start (`since`) and
//!   reconciles: destination rows older than `since` that the copy did not
//!   write are removed when it ends, because the stream started there and
//!   wrote every newer row itself.
//! - A mark is answered (and can be cleared) only by a finished copy that
//!   started after it.

use std::collections::BTreeMap;

use super::progress::{CopyProgress, TableCopy};
use crate::position::Position;

/// What asks for copies, by table (`schema.name`).
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The newest copy request per table.
    pub requests: &'a BTreeMap<String, i64>,
    /// The newest "needs a re-copy" mark per table.
    pub marks: &'a BTreeMap<String, i64>,
    /// Whether added tables are copied (`snapshot_mode` is not `never`).
    pub copy_added: bool,
}

/// Nothing requested or marked.
static NONE: BTreeMap<String, i64> = BTreeMap::new();

impl Default for Wanted<'_> {
    /// Nothing requested or marked, added tables not copied.
    fn default() -> Self {
        Wanted { requests: &NONE, marks: &NONE, copy_added: false }
    }
}

/// Why a copy starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Requested,
    Marked,
    Added,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Requested => "a copy was requested",
            Cause::Marked => "it needs a re-copy",
            Cause::Added => "it was added to the job",
        }
    }
}

/// What a session writes into the copy's progress before it streams.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Entries to merge: new copies, and tables recorded as copied.
    pub write: CopyProgress,
    /// Tables whose entries go: the job no longer captures them.
    pub forget: Vec<String>,
    /// The copies that start, and why.
    pub started: Vec<(String, Cause)>,
    /// Tables whose marks a finished copy answered.
    pub answered_marks: Vec<String>,
}

/// The plan for a session streaming from `since`, over the captured `tables`.
pub fn plan(progress: &CopyProgress, tables: &[String], wanted: Wanted<'_>, since: Position) -> Plan {
    let mut plan = Plan {
        forget: progress.keys().filter(|t| !tables.contains(t)).cloned().collect(),
        ..Plan::default()
    };
    let nothing_recorded = progress.is_empty();
    for table in tables {
        let entry = progress.get(table);
        let request = wanted.requests.get(table).copied();
        let mark = wanted.marks.get(table).copied();
        let newer = |wanted: Option<i64>, answered: Option<i64>| wanted > answered.or(Some(0));
        let cause = if newer(request, entry.and_then(|e| e.request)) {
            Some(Cause::Requested)
        } else if newer(mark, entry.and_then(|e| e.mark)) {
            Some(Cause::Marked)
        } else if entry.is_none() && !nothing_recorded && wanted.copy_added {
            Some(Cause::Added)
        } else {
            None
        };
        let answers = TableCopy {
            since: since.to_string(),
            request: request.or(entry.and_then(|e| e.request)),
            mark: mark.or(entry.and_then(|e| e.mark)),
            ..TableCopy::default()
        };
        match (cause, entry) {
            (Some(cause), _) => {
                plan.write.insert(table.clone(), TableCopy { reconcile: true, ..answers });
                plan.started.push((table.clone(), cause));
            }
            (None, None) => {
                plan.write.insert(table.clone(), TableCopy { done: true, ..answers });
            }
            (None, Some(entry)) => {
                if mark.is_some() && entry.done {
                    plan.answered_marks.push(table.clone());
                }
            }
        }
    }
    plan
}

/// The entries of a fresh start that copies every table: each answers the
/// requests and marks there are now.
pub fn fresh(tables: &[String], wanted: Wanted<'_>, since: Position) -> CopyProgress {
    tables
        .iter()
        .map(|table| {
            let copy = TableCopy {
                since: since.to_string(),
                request: wanted.requests.get(table).copied(),
                mark: wanted.marks.get(table).copied(),
                ..TableCopy::default()
            };
            (table.clone(), copy)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINCE: Position = Position::new(0x1_0000_0000);

    fn tables(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn done(request: Option<i64>, mark: Option<i64>) -> TableCopy {
        TableCopy { since: "0/10".into(), done: true, request, mark, ..TableCopy::default() }
    }

    #[test]
    fn a_job_with_nothing_recorded_records_its_tables_as_copied() {
        let wanted = Wanted { copy_added: true, ..Wanted::default() };
        let plan = plan(&CopyProgress::new(), &tables(&["public.a", "public.b"]), wanted, SINCE);
        assert!(plan.started.is_empty());
        assert_eq!(plan.write.len(), 2);
        assert!(plan.write.values().all(|copy| copy.done && copy.since == "1/0"));
    }

    #[test]
    fn an_added_table_is_copied_and_reconciled_and_a_removed_one_forgotten() {
        let progress: CopyProgress =
            [("public.a".to_string(), done(None, None)), ("public.gone".to_string(), done(None, None))]
                .into();
        let wanted = Wanted { copy_added: true, ..Wanted::default() };
        let plan = plan(&progress, &tables(&["public.a", "public.new"]), wanted, SINCE);
        assert_eq!(plan.started, [("public.new".to_string(), Cause::Added)]);
        let copy = &plan.write["public.new"];
        assert!(copy.reconcile && !copy.done && copy.after.is_none());
        assert_eq!(copy.since, "1/0");
        assert_eq!(plan.forget, ["public.gone"]);
        // `never`: recorded, not copied.
        let never = super::plan(&progress, &tables(&["public.new"]), Wanted::default(), SINCE);
        assert!(never.started.is_empty() && never.write["public.new"].done);
    }

    #[test]
    fn a_request_or_mark_starts_a_copy_once() {
        let requests = BTreeMap::from([("public.a".to_string(), 7)]);
        let marks = BTreeMap::from([("public.b".to_string(), 3)]);
        let wanted = Wanted { requests: &requests, marks: &marks, copy_added: true };
        let progress: CopyProgress =
            [("public.a".to_string(), done(Some(5), None)), ("public.b".to_string(), done(None, None))]
                .into();
        let first = plan(&progress, &tables(&["public.a", "public.b"]), wanted, SINCE);
        assert_eq!(
            first.started,
            [("public.a".to_string(), Cause::Requested), ("public.b".to_string(), Cause::Marked)]
        );
        assert_eq!(first.write["public.a"].request, Some(7));
        assert_eq!(first.write["public.b"].mark, Some(3));
        // Written, then finished: the same requests and marks start nothing, and the mark is answered.
        let mut progress = progress;
        for (table, copy) in first.write {
            progress.insert(table, TableCopy { done: true, ..copy });
        }
        let again = plan(&progress, &tables(&["public.a", "public.b"]), wanted, SINCE);
        assert!(again.started.is_empty() && again.write.is_empty());
        assert_eq!(again.answered_marks, ["public.b"]);
    }

    #[test]
    fn an_unfinished_copy_resumes_untouched_and_does_not_answer_its_mark_yet() {
        let marks = BTreeMap::from([("public.a".to_string(), 3)]);
        let wanted = Wanted { marks: &marks, copy_added: true, ..Wanted::default() };
        let copying = TableCopy { after: Some(vec!["9".into()]), mark: Some(3), ..done(None, None) };
        let copying = TableCopy { done: false, ..copying };
        let progress: CopyProgress = [("public.a".to_string(), copying)].into();
        let plan = plan(&progress, &tables(&["public.a"]), wanted, SINCE);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_fresh_start_answers_every_request_and_mark() {
        let requests = BTreeMap::from([("public.a".to_string(), 7)]);
        let wanted = Wanted { requests: &requests, copy_added: true, ..Wanted::default() };
        let progress = fresh(&tables(&["public.a", "public.b"]), wanted, SINCE);
        assert_eq!(progress["public.a"].request, Some(7));
        assert!(!progress["public.a"].done && !progress["public.a"].reconcile);
        let plan = plan(&progress, &tables(&["public.a", "public.b"]), wanted, SINCE);
        assert!(plan.started.is_empty());
    }
}
