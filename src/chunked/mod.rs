//! Chunked copies, as the job plans them and as every source writes them:
//! which tables are copied, from where each resumes (`progress`, recorded
//! with the checkpoint), the plan of a session (`plan`), a row's key
//! (`keys`), a chunk's size (`sizer`) and its rows as change lines
//! (`rows`). How a source reads chunks and places them in its stream is
//! its own, with the argument why its rule is exact: the Postgres
//! source's in `source::postgres::chunks`, the MySQL source's in
//! `source::mysql::chunks`.

pub mod keys;
pub mod plan;
pub mod progress;
pub mod rows;
pub mod sizer;

/// Names a run of a copier, so that a restarted stream can tell this run's
/// markers from an earlier run's, which it replays.
pub fn run_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}-{nanos:x}", std::process::id())
}

/// Whether a marker's token (`<run>/<sequence>...`) names `run`.
pub fn is_run(token: &str, run: &str) -> bool {
    token.split_once('/').is_some_and(|(token_run, _)| token_run == run)
}
