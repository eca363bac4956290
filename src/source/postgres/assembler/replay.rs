//! A streamed transaction that committed, written from its spill: every
//! line takes the commit's fields, and changes their ordinals in order.

use std::time::SystemTime;

use super::super::spill::{RecordKind, Replay};
use crate::change::Encoding;
use crate::position::Position;
use crate::source::postgres::protocol::pgoutput::StreamCommit;
use crate::source::postgres::protocol::time::{pg_micros_to_unix_micros, to_system_time};

#[derive(Debug)]
pub struct CommittedStream<E: Encoding> {
    pub end: Position,
    pub commit_time: SystemTime,
    encoding: E,
    fields: E::Txn,
    replay: Replay,
    next_ordinal: u64,
}

impl<E: Encoding> CommittedStream<E> {
    pub(super) fn new(encoding: &E, commit: &StreamCommit, replay: Replay) -> Self {
        CommittedStream {
            end: commit.end_lsn.into(),
            commit_time: to_system_time(commit.commit_time),
            encoding: encoding.clone(),
            fields: encoding.txn(
                commit.commit_lsn.into(),
                Some(u64::from(commit.xid)),
                Some(pg_micros_to_unix_micros(commit.commit_time)),
            ),
            replay,
            next_ordinal: 0,
        }
    }

    /// Writes replayed lines to `out` until it holds about `max_bytes`.
    /// Returns whether lines remain.
    pub async fn replay_into(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> std::io::Result<bool> {
        let (encoding, fields) = (&self.encoding, &self.fields);
        let ordinal = &mut self.next_ordinal;
        self.replay
            .for_each_until(|record| {
                match record.kind {
                    RecordKind::Change => {
                        encoding.write_header(fields, out, *ordinal, record.lsn.into());
                        *ordinal += 1;
                    }
                    RecordKind::Schema => {
                        encoding.write_schema_header(fields, out, *ordinal, record.lsn.into())
                    }
                }
                out.extend_from_slice(record.body);
                out.len() < max_bytes
            })
            .await
    }
}
