//! Chunked copies, as the job plans them: which tables are copied, from
//! where each resumes (`progress`, recorded with the checkpoint), and the
//! plan of a session (`plan`). How a source reads chunks and merges them
//! into its stream is its own: the Postgres source's rule, and why it is
//! exact, are in `source::postgres::chunks`.

pub mod plan;
pub mod progress;
