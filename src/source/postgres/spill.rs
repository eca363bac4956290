//! Streamed transactions held until they commit, in bounded memory.
//!
//! With `streaming 'on'` the server sends a large transaction in chunks
//! while it is still running; it may yet abort, whole or in part (a
//! subtransaction). So nothing of it may be emitted before Stream Commit.
//! Each change is kept as an encoded record (its subtransaction xid, its
//! LSN and its pre-encoded body). Records live in memory until the memory
//! of all open streamed transactions passes a cap; then the transaction
//! being appended to moves its records to an unnamed temporary file (gone
//! when closed, even after a crash), and appends go there from then on.
//! The file's reads and writes run on the spill I/O thread (`spill_io`).
//!
//! Invariants:
//! - Records are replayed in the order they were appended (file first, then
//!   any still in memory), so commit order inside the transaction is kept.
//! - A record whose subtransaction aborted is never replayed; a transaction
//!   that aborted whole is dropped with its file.
//! - Memory held is at most the cap plus one record, whatever the size of
//!   the transactions.

use std::collections::{HashMap, HashSet};
use std::io;

use super::spill_io::{SpillReader, SpillWriter};
use crate::source::postgres::lsn::Lsn;

/// Record header: subxid u32, lsn u64, body length u32, kind u8.
const HEADER_LEN: usize = 17;

/// What a record holds: a change, or a table's shape announced before one
/// (it is replayed with a header of its own kind; see `change::Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Change = 0,
    Schema = 1,
}

#[derive(Debug)]
pub struct StreamedTxns {
    txns: HashMap<u32, StreamedTxn>,
    memory_used: usize,
    memory_cap: usize,
}

#[derive(Debug, Default)]
struct StreamedTxn {
    memory: Vec<u8>,
    file: Option<SpillWriter>,
    aborted_subxids: HashSet<u32>,
}

impl StreamedTxns {
    pub fn new(memory_cap: usize) -> Self {
        StreamedTxns { txns: HashMap::new(), memory_used: 0, memory_cap }
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Bytes held in memory across all open streamed transactions.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Appends one change of transaction `xid`, made by (sub)transaction
    /// `subxid`, whose encoded body `write_body` writes.
    pub fn append(
        &mut self,
        xid: u32,
        subxid: u32,
        lsn: Lsn,
        kind: RecordKind,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        let txn = self.txns.entry(xid).or_default();
        let before = txn.memory.len();
        txn.memory.extend_from_slice(&subxid.to_be_bytes());
        txn.memory.extend_from_slice(&lsn.0.to_be_bytes());
        txn.memory.extend_from_slice(&[0; 4]);
        txn.memory.push(kind as u8);
        write_body(&mut txn.memory);
        let body_len = txn.memory.len() - before - HEADER_LEN;
        let len = u32::try_from(body_len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a single change is over 4 GiB"))?;
        txn.memory[before + 12..before + 16].copy_from_slice(&len.to_be_bytes());
        self.memory_used += txn.memory.len() - before;

        if txn.file.is_some() || self.memory_used > self.memory_cap {
            let held = txn.memory.len();
            let file = match &mut txn.file {
                Some(file) => file,
                None => txn.file.insert(SpillWriter::create()?),
            };
            file.write(&txn.memory)?;
            txn.memory.clear();
            txn.memory.shrink_to(64 * 1024);
            self.memory_used -= held;
        }
        Ok(())
    }

    /// Stream Abort: drops the whole transaction when `subxid == xid`, else
    /// the changes of that subtransaction.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(txn) = self.txns.remove(&xid) {
                self.memory_used -= txn.memory.len();
            }
        } else if let Some(txn) = self.txns.get_mut(&xid) {
            txn.aborted_subxids.insert(subxid);
        }
    }

    /// Stream Commit: hands the transaction's surviving changes over for
    /// replay, in order. A transaction that streamed nothing replays nothing.
    pub fn commit(&mut self, xid: u32) -> io::Result<Replay> {
        let Some(mut txn) = self.txns.remove(&xid) else {
            return Ok(Replay::empty());
        };
        self.memory_used -= txn.memory.len();
        let file = txn.file.take().map(SpillWriter::finish).transpose()?;
        Ok(Replay {
            file,
            read: Vec::new(),
            read_pos: 0,
            memory: txn.memory,
            memory_pos: 0,
            aborted: txn.aborted_subxids,
        })
    }
}

/// The changes of one committed streamed transaction, read back in order.
#[derive(Debug)]
pub struct Replay {
    file: Option<SpillReader>,
    /// Blocks read from the file and not yet replayed, from `read_pos`.
    read: Vec<u8>,
    read_pos: usize,
    memory: Vec<u8>,
    memory_pos: usize,
    aborted: HashSet<u32>,
}

/// One replayed change.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: Lsn,
    pub kind: RecordKind,
    pub body: &'a [u8],
}

impl Replay {
    fn empty() -> Replay {
        Replay {
            file: None,
            read: Vec::new(),
            read_pos: 0,
            memory: Vec::new(),
            memory_pos: 0,
            aborted: HashSet::new(),
        }
    }

    /// Calls `each` for every surviving record, in order, until `each` asks
    /// to stop (returns false) or the records run out. Returns whether records remain.
    pub async fn for_each_until(&mut self, mut each: impl FnMut(Record<'_>) -> bool) -> io::Result<bool> {
        while self.file.is_some() || self.read_pos < self.read.len() {
            let held = &self.read[self.read_pos..];
            let whole = held.len() >= HEADER_LEN && {
                let (_, _, len, _) = parse_header(held[..HEADER_LEN].try_into().unwrap_or(&[0; HEADER_LEN]));
                held.len() >= HEADER_LEN + len
            };
            if !whole {
                self.read_more().await?;
                continue;
            }
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&held[..HEADER_LEN]);
            let (subxid, lsn, len, kind) = parse_header(&header);
            let start = self.read_pos + HEADER_LEN;
            self.read_pos = start + len;
            if !self.aborted.contains(&subxid)
                && !each(Record { lsn, kind, body: &self.read[start..start + len] })
            {
                return Ok(true);
            }
        }
        while self.memory_pos + HEADER_LEN <= self.memory.len() {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&self.memory[self.memory_pos..self.memory_pos + HEADER_LEN]);
            let (subxid, lsn, len, kind) = parse_header(&header);
            let start = self.memory_pos + HEADER_LEN;
            self.memory_pos = start + len;
            if !self.aborted.contains(&subxid)
                && !each(Record { lsn, kind, body: &self.memory[start..start + len] })
            {
                return Ok(self.memory_pos < self.memory.len());
            }
        }
        Ok(false)
    }
}

impl Replay {
    /// Appends the file's next block to what is held (dropping what was
    /// replayed); at the end of the file, a record left incomplete is an error.
    async fn read_more(&mut self) -> io::Result<()> {
        let block = match self.file.as_mut() {
            Some(file) => file.next_block().await?,
            None => None,
        };
        let Some(block) = block else {
            self.file = None;
            if self.read_pos < self.read.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the spill file ends inside a record",
                ));
            }
            return Ok(());
        };
        self.read.drain(..self.read_pos);
        self.read_pos = 0;
        self.read.extend_from_slice(&block);
        if let Some(file) = self.file.as_mut() {
            file.recycle(block);
        }
        Ok(())
    }
}

fn parse_header(header: &[u8; HEADER_LEN]) -> (u32, Lsn, usize, RecordKind) {
    let subxid = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[4..12]);
    let len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
    let kind = if header[16] == RecordKind::Schema as u8 { RecordKind::Schema } else { RecordKind::Change };
    (subxid, Lsn(u64::from_be_bytes(lsn)), len as usize, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn replay_all(replay: &mut Replay) -> Vec<(u64, String)> {
        let mut seen = Vec::new();
        replay
            .for_each_until(|record| {
                seen.push((record.lsn.0, String::from_utf8(record.body.to_vec()).expect("utf-8")));
                true
            })
            .await
            .expect("replay");
        seen
    }

    fn body(text: &'static str) -> impl FnOnce(&mut Vec<u8>) {
        move |out| out.extend_from_slice(text.as_bytes())
    }

    #[tokio::test]
    async fn keeps_order_and_drops_aborted_subtransactions() {
        let mut txns = StreamedTxns::new(1024);
        txns.append(10, 10, Lsn(1), RecordKind::Change, body("a")).expect("append");
        txns.append(10, 11, Lsn(2), RecordKind::Change, body("sub")).expect("append");
        txns.append(10, 10, Lsn(3), RecordKind::Change, body("b")).expect("append");
        txns.abort(10, 11);
        let mut replay = txns.commit(10).expect("commit");
        assert_eq!(replay_all(&mut replay).await, vec![(1, "a".into()), (3, "b".into())]);
        assert!(txns.is_empty());
        assert_eq!(txns.memory_used(), 0);
    }

    #[tokio::test]
    async fn whole_abort_drops_everything() {
        let mut txns = StreamedTxns::new(1024);
        txns.append(7, 7, Lsn(1), RecordKind::Change, body("x")).expect("append");
        txns.abort(7, 7);
        assert!(txns.is_empty());
        assert_eq!(txns.memory_used(), 0);
        assert_eq!(replay_all(&mut txns.commit(7).expect("commit")).await, vec![]);
    }

    #[tokio::test]
    async fn spills_past_the_cap_and_replays_in_order() {
        let mut txns = StreamedTxns::new(100);
        let mut expected = Vec::new();
        for i in 0..1000u64 {
            let text = format!("change {i}");
            expected.push((i, text.clone()));
            txns.append(1, 1, Lsn(i), RecordKind::Change, |out| out.extend_from_slice(text.as_bytes()))
                .expect("append");
            assert!(txns.memory_used() <= 100 + HEADER_LEN + 16);
        }
        let mut replay = txns.commit(1).expect("commit");
        assert_eq!(replay_all(&mut replay).await, expected);
    }

    #[tokio::test]
    async fn record_kinds_survive_a_spill() {
        let mut txns = StreamedTxns::new(64);
        for i in 0..50u64 {
            let kind = if i % 7 == 0 { RecordKind::Schema } else { RecordKind::Change };
            txns.append(1, 1, Lsn(i), kind, body("k")).expect("append");
        }
        let mut kinds = Vec::new();
        let mut replay = txns.commit(1).expect("commit");
        replay
            .for_each_until(|record| {
                kinds.push((record.lsn.0, record.kind));
                true
            })
            .await
            .expect("replay");
        let expected: Vec<_> = (0..50u64)
            .map(|i| (i, if i % 7 == 0 { RecordKind::Schema } else { RecordKind::Change }))
            .collect();
        assert_eq!(kinds, expected);
    }

    #[tokio::test]
    async fn replay_can_pause_and_resume() {
        let mut txns = StreamedTxns::new(1 << 20);
        for i in 0..10u64 {
            txns.append(1, 1, Lsn(i), RecordKind::Change, body("r")).expect("append");
        }
        let mut replay = txns.commit(1).expect("commit");
        let mut count = 0;
        let mut more = true;
        while more {
            let mut taken = 0;
            more = replay
                .for_each_until(|_| {
                    taken += 1;
                    count += 1;
                    taken < 3
                })
                .await
                .expect("replay");
        }
        assert_eq!(count, 10);
    }
}
