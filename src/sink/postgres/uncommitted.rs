//! What the Postgres sink has applied and not yet committed, and when to
//! commit it: pure bookkeeping, no I/O.
//!
//! Invariants:
//! - A commit records a boundary: the end of the last source transaction
//!   whose changes are all applied. Without one (a transaction still
//!   arriving), only the end of the stream commits.
//! - A commit acknowledges every chunk received so far (the receipt of the
//!   last one covers the earlier ones), because all of their lines are in
//!   the committed sink transaction.

use std::time::SystemTime;

use crate::chunked::progress::CopyProgress;
use crate::contract::Receipt;
use crate::position::Position;

#[derive(Debug, Default)]
pub struct Uncommitted {
    /// The last transaction end among the chunks received.
    boundary: Option<Position>,
    /// The receipt of the last chunk received.
    receipt: Option<Receipt>,
    /// Changes (not shapes) applied since the last commit.
    changes: usize,
    commit_times: Vec<SystemTime>,
    bytes: u64,
    /// The chunked copy's progress the chunks bring (each with its boundary).
    copied: CopyProgress,
}

/// What one commit covers.
#[derive(Debug, Default, PartialEq)]
pub struct Commit {
    /// Recorded as the applied position, in the same transaction.
    pub boundary: Option<Position>,
    /// Handed back after COMMIT.
    pub receipt: Option<Receipt>,
    pub changes: usize,
    pub commit_times: Vec<SystemTime>,
    pub bytes: u64,
    /// Recorded with the boundary.
    pub copied: CopyProgress,
}

/// Why a commit may be due after a chunk.
#[derive(Debug, Clone, Copy)]
pub struct Pressure {
    /// The source had nothing more waiting.
    pub caught_up: bool,
    /// The flush interval has passed since the last commit.
    pub due: bool,
}

impl Uncommitted {
    /// A chunk of `bytes` arrived.
    pub fn chunk(
        &mut self,
        bytes: usize,
        confirm: Option<Position>,
        commit_times: &[SystemTime],
        receipt: Receipt,
    ) {
        self.bytes += bytes as u64;
        self.commit_times.extend_from_slice(commit_times);
        self.boundary = confirm.or(self.boundary);
        self.receipt = Some(receipt);
    }

    /// The chunk's copy progress: it comes with the chunk's boundary, so
    /// it is committed exactly when that boundary is.
    pub fn copied(&mut self, copied: CopyProgress) {
        self.copied.extend(copied);
    }

    /// One change of the chunk was applied.
    pub fn change(&mut self) {
        self.changes += 1;
    }

    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Whether a boundary can be committed.
    pub fn at_boundary(&self) -> bool {
        self.boundary.is_some()
    }

    /// Whether to commit now, after a chunk: at a boundary, when a batch's
    /// worth of changes arrived, the source caught up, or the interval passed.
    pub fn commit_due(&self, batch_size: usize, pressure: Pressure) -> bool {
        self.at_boundary() && (self.changes >= batch_size || pressure.caught_up || pressure.due)
    }

    /// What the commit's checkpoint records, before [`Uncommitted::take`]:
    /// the boundary, and the copy progress that comes with it.
    pub fn checkpoint(&self) -> (Option<Position>, &CopyProgress) {
        (self.boundary, &self.copied)
    }

    /// Everything since the last commit, for the commit.
    pub fn take(&mut self) -> Commit {
        let Uncommitted { boundary, receipt, changes, commit_times, bytes, copied } = std::mem::take(self);
        Commit { boundary, receipt, changes, commit_times, bytes, copied }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALM: Pressure = Pressure { caught_up: false, due: false };

    #[test]
    fn a_commit_waits_for_a_transaction_end_whatever_the_pressure() {
        let mut open = Uncommitted::default();
        open.chunk(100, None, &[], Receipt::of_chunk(0));
        for _ in 0..10 {
            open.change();
        }
        assert!(!open.commit_due(5, Pressure { caught_up: true, due: true }));
        open.chunk(50, Some(Position::new(70)), &[SystemTime::UNIX_EPOCH], Receipt::of_chunk(1));
        assert!(open.commit_due(5, CALM), "a full batch at a boundary");
        let commit = open.take();
        assert_eq!(commit.boundary, Some(Position::new(70)));
        assert_eq!(commit.receipt, Some(Receipt::of_chunk(1)), "the last receipt covers both chunks");
        assert_eq!((commit.changes, commit.bytes, commit.commit_times.len()), (10, 150, 1));
    }

    #[test]
    fn below_a_batch_a_boundary_commits_when_caught_up_or_due() {
        let mut open = Uncommitted::default();
        open.chunk(10, Some(Position::new(5)), &[], Receipt::of_chunk(0));
        open.change();
        assert!(!open.commit_due(100, CALM));
        assert!(open.commit_due(100, Pressure { caught_up: true, due: false }));
        assert!(open.commit_due(100, Pressure { caught_up: false, due: true }));
    }

    #[test]
    fn the_boundary_is_the_last_transaction_end_and_a_commit_starts_afresh() {
        let mut open = Uncommitted::default();
        open.chunk(1, Some(Position::new(10)), &[], Receipt::of_chunk(0));
        open.chunk(1, None, &[], Receipt::of_chunk(1));
        assert_eq!(
            open.take().boundary,
            Some(Position::new(10)),
            "a chunk without an end keeps the earlier one"
        );
        assert!(!open.at_boundary());
        assert_eq!(open.take(), Commit::default());
    }
}
