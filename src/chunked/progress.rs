//! How far the chunked copy of each table got: recorded with the job's
//! checkpoint (`walpipe.checkpoints.copy_progress`), in the same write, so a
//! chunk counts as copied exactly when its rows are durable in the sink.
//! Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One table's copy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableCopy {
    /// Where this copy of the table began (an LSN): it names the copy in
    /// the ids of its rows, `<since>:<schema.table>:<key>`, which a chunk
    /// read again after a crash repeats.
    #[serde(default)]
    pub since: String,
    /// The key of the last row copied (its columns' text values, in key
    /// order); `None` before the first chunk.
    pub after: Option<Vec<String>>,
    /// Every chunk is copied.
    pub done: bool,
    /// When the last chunk is in, destination rows this copy did not
    /// write and the stream did not change since `since` are removed: the
    /// source no longer has them (a copy into a destination that was not
    /// emptied first: a re-copy, an added table, a lost slot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconcile: bool,
    /// The newest copy request (`POST .../snapshot`) this copy answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<i64>,
    /// The newest "needs a re-copy" mark this copy answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<i64>,
}

/// By table (`schema.name`). A later entry for a table replaces the earlier one.
pub type CopyProgress = BTreeMap<String, TableCopy>;

/// Reads `walpipe.checkpoints.copy_progress`; what cannot be read counts as nothing recorded.
pub fn parse(json: Option<&str>) -> CopyProgress {
    json.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default()
}

/// The JSON merged into `copy_progress` (`copy_progress || $1`), or `None` when there is nothing new.
pub fn to_json(progress: &CopyProgress) -> Option<String> {
    (!progress.is_empty()).then(|| serde_json::to_string(progress).unwrap_or_default())
}

/// The tables still to copy, in the job's table order, with where each resumes.
pub fn unfinished<'a>(progress: &'a CopyProgress, order: &[String]) -> Vec<(String, &'a TableCopy)> {
    order
        .iter()
        .filter_map(|table| progress.get(table).filter(|copy| !copy.done).map(|copy| (table.clone(), copy)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_unreadable_json_is_nothing() {
        let mut progress = CopyProgress::new();
        progress.insert(
            "public.a".into(),
            TableCopy {
                after: Some(vec!["7".into(), "x\ty".into()]),
                reconcile: true,
                request: Some(3),
                ..TableCopy::default()
            },
        );
        progress.insert("public.b".into(), TableCopy { done: true, ..TableCopy::default() });
        let json = to_json(&progress).expect("json");
        assert_eq!(parse(Some(&json)), progress);
        assert_eq!(parse(Some("not json")), CopyProgress::new());
        assert_eq!(parse(None), CopyProgress::new());
        assert_eq!(to_json(&CopyProgress::new()), None);
    }

    #[test]
    fn unfinished_tables_come_in_the_jobs_order() {
        let mut progress = CopyProgress::new();
        progress.insert("public.a".into(), TableCopy::default());
        progress.insert("public.b".into(), TableCopy { done: true, ..TableCopy::default() });
        progress
            .insert("public.c".into(), TableCopy { after: Some(vec!["3".into()]), ..TableCopy::default() });
        let order = ["public.c".to_string(), "public.b".into(), "public.a".into()];
        let names: Vec<String> = unfinished(&progress, &order).into_iter().map(|(t, _)| t).collect();
        assert_eq!(names, ["public.c", "public.a"]);
    }
}
