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
            TableCopy { since: String::new(), after: Some(vec!["7".into(), "x\ty".into()]), done: false },
        );
        progress.insert("public.b".into(), TableCopy { since: String::new(), after: None, done: true });
        let json = to_json(&progress).expect("json");
        assert_eq!(parse(Some(&json)), progress);
        assert_eq!(parse(Some("not json")), CopyProgress::new());
        assert_eq!(parse(None), CopyProgress::new());
        assert_eq!(to_json(&CopyProgress::new()), None);
    }

    #[test]
    fn unfinished_tables_come_in_the_jobs_order() {
        let mut progress = CopyProgress::new();
        progress.insert("public.a".into(), TableCopy { since: String::new(), after: None, done: false });
        progress.insert("public.b".into(), TableCopy { since: String::new(), after: None, done: true });
        progress.insert(
            "public.c".into(),
            TableCopy { since: String::new(), after: Some(vec!["3".into()]), done: false },
        );
        let order = ["public.c".to_string(), "public.b".into(), "public.a".into()];
        let names: Vec<String> = unfinished(&progress, &order).into_iter().map(|(t, _)| t).collect();
        assert_eq!(names, ["public.c", "public.a"]);
    }
}
