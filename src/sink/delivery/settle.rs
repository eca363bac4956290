//! Which chunks of a delivery are finished: pure bookkeeping, no I/O.
//!
//! A delivery cuts batches across chunk borders, so a chunk is finished
//! only when every one of its lines was delivered (or skipped, having been
//! delivered before a restart). Lines are counted in the order they came.
//!
//! Invariants: chunks finish in the order they came; the applied position
//! of what finished is the last `confirm` among the finished chunks (the
//! end of a transaction whose every change was delivered); a chunk with no
//! lines finishes as soon as every chunk before it has.

use std::collections::VecDeque;
use std::time::SystemTime;

use crate::chunked::progress::CopyProgress;
use crate::contract::Receipt;
use crate::position::Position;

/// A chunk from the driver, until its lines are delivered.
struct OpenChunk {
    lines_left: usize,
    confirm: Option<Position>,
    commit_times: Vec<SystemTime>,
    copied: CopyProgress,
    receipt: Receipt,
}

/// What a settle step finished.
#[derive(Debug, Default, PartialEq)]
pub struct Finished {
    /// The position to record as applied.
    pub applied: Option<Position>,
    /// Source commit times of the transactions the finished chunks complete.
    pub commit_times: Vec<SystemTime>,
    /// The chunked copy's progress the finished chunks bring, recorded with `applied`.
    pub copied: CopyProgress,
    /// The receipt to hand back: it covers every finished chunk.
    pub receipt: Option<Receipt>,
}

#[derive(Default)]
pub struct OpenChunks {
    open: VecDeque<OpenChunk>,
    /// Lines skipped (delivered before a restart) and not yet settled.
    skipped: usize,
}

impl OpenChunks {
    /// A chunk of `lines` lines arrived.
    pub fn push(
        &mut self,
        lines: usize,
        confirm: Option<Position>,
        commit_times: Vec<SystemTime>,
        copied: CopyProgress,
        receipt: Receipt,
    ) {
        self.open.push_back(OpenChunk { lines_left: lines, confirm, commit_times, copied, receipt });
    }

    /// One line was skipped: it was delivered before a restart.
    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    /// Counts `delivered` lines more (after any skipped ones) as delivered;
    /// returns what that finished.
    pub fn settle(&mut self, delivered: usize) -> Finished {
        let mut left = std::mem::take(&mut self.skipped) + delivered;
        for chunk in self.open.iter_mut() {
            if left == 0 {
                break;
            }
            let taken = left.min(chunk.lines_left);
            chunk.lines_left -= taken;
            left -= taken;
        }
        let mut finished = Finished::default();
        while self.open.front().is_some_and(|chunk| chunk.lines_left == 0) {
            let Some(chunk) = self.open.pop_front() else { break };
            finished.applied = chunk.confirm.or(finished.applied);
            finished.commit_times.extend(chunk.commit_times);
            finished.copied.extend(chunk.copied);
            finished.receipt = Some(chunk.receipt);
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(shape: &[(usize, Option<u64>)]) -> OpenChunks {
        let mut open = OpenChunks::default();
        for (n, (lines, confirm)) in shape.iter().enumerate() {
            let receipt = Receipt::of_chunk(n as u64);
            open.push(
                *lines,
                confirm.map(Position::new),
                vec![SystemTime::UNIX_EPOCH],
                CopyProgress::new(),
                receipt,
            );
        }
        open
    }

    #[test]
    fn a_batch_cut_across_chunks_finishes_only_the_chunks_it_completes() {
        let mut open = chunks(&[(3, Some(10)), (4, None), (2, Some(30))]);
        // 5 lines: the first chunk, and 2 of the second's 4.
        let finished = open.settle(5);
        assert_eq!(finished.applied, Some(Position::new(10)));
        assert_eq!(finished.receipt, Some(Receipt::of_chunk(0)));
        assert_eq!(finished.commit_times.len(), 1);
        // The rest: the second chunk completes no transaction, the third does.
        let finished = open.settle(4);
        assert_eq!(finished.applied, Some(Position::new(30)));
        assert_eq!(finished.receipt, Some(Receipt::of_chunk(2)));
        assert_eq!(open.settle(0), Finished::default());
    }

    #[test]
    fn skipped_lines_count_as_delivered_before_the_batch_that_follows_them() {
        let mut open = chunks(&[(2, Some(10)), (2, Some(20))]);
        open.skip();
        open.skip();
        open.skip();
        let finished = open.settle(1);
        assert_eq!(
            (finished.applied, finished.receipt),
            (Some(Position::new(20)), Some(Receipt::of_chunk(1)))
        );
    }

    #[test]
    fn an_empty_chunk_finishes_with_the_chunks_before_it_and_no_sooner() {
        let mut open = chunks(&[(2, None), (0, Some(40))]);
        assert_eq!(open.settle(1), Finished::default());
        let finished = open.settle(1);
        assert_eq!(
            (finished.applied, finished.receipt),
            (Some(Position::new(40)), Some(Receipt::of_chunk(1)))
        );
    }

    #[test]
    fn nothing_delivered_finishes_a_leading_empty_chunk_only() {
        let mut open = chunks(&[(0, Some(5)), (1, Some(6))]);
        let finished = open.settle(0);
        assert_eq!(
            (finished.applied, finished.receipt),
            (Some(Position::new(5)), Some(Receipt::of_chunk(0)))
        );
    }
}
