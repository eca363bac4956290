//! When the replication socket gathers bytes before waking walpipe.
//!
//! The walsender sends each pgoutput message on its own, and the kernel
//! wakes a reader waiting for the socket on the walsender's time. With
//! one-row transactions, a reader that keeps up (`walpipe tail > /dev/null`,
//! `pg_recvlogical`) made the walsender spend twice the CPU it spent for a
//! busier reader, and the whole drain took as long again
//! (`benches/backlog_vs_native.sh`, `ROWS=0 SMALL=100000`). So while walpipe
//! reads a backlog, it asks the kernel to report the socket readable only
//! once [`GATHER`] bytes are there (`SO_RCVLOWAT`, [`ReceiveSide`]).
//!
//! The walsender also pays for every TCP segment it sends (on loopback, the
//! receive half runs on its CPU too), and it sends each message as soon as
//! it is decoded: the kernel puts several in one segment only while it
//! cannot send at once. A reader that keeps up gets one segment per
//! message; one whose window is full gets full segments, and the walsender
//! spends half the CPU (BENCHMARKS.md, 2026-12-06). Under BBR congestion
//! control the connection's pacing sometimes held the messages back by
//! itself; under CUBIC, Linux's default, nothing did (BENCHMARKS.md,
//! 2026-12-07). So walpipe closes the window on purpose:
//! - when the source is on this host, the replication socket's receive
//!   buffer is small and fixed before it connects
//!   ([`RECEIVE_BUFFER`]), so the window fills within one [`READ_SPACING`]
//!   at the walsender's pace;
//! - while gathering, once the bytes of a read are used up, walpipe waits
//!   [`READ_SPACING`] before it reads again, and each read then takes all
//!   the socket holds ([`Connection::drain_socket`]): every read frees the
//!   window, so the walsender's queue comes in full segments, and the
//!   walsender never waits on a full send buffer for long.
//!
//! Invariants:
//! - Gathering starts only where no reader is waiting for the bytes:
//!   - in a backlog: at a BEGIN the server sent [`BACKLOG`] or more after
//!     its transaction committed. Both times are the server's clock, so
//!     skew between hosts cannot start it;
//!   - inside a block of a streamed (in-progress) transaction: none of its
//!     changes can reach a sink before its commit, which comes after the
//!     block. A wait that timed out inside a block reads what came, and the
//!     block's next message gathers again.
//! - While gathering, once the bytes of a read are used up, walpipe waits
//!   [`READ_SPACING`] before it reads again, and one wait for bytes lasts
//!   at most [`GATHER_WAIT`]; then the
//!   mark is one byte again and whatever came is read at once. So a
//!   message waits at most `READ_SPACING + GATHER_WAIT` longer than it
//!   would have, and only in a backlog or a streamed block.
//! - Gathering ends at the first BEGIN less than `BACKLOG` behind, at the
//!   first wait that timed out, and before the stream ends. A stream that keeps up never gathers.
//! - Pure: the caller sets the mark this returns, and the timer.
//!
//! [`ReceiveSide`]: crate::pg::receive_side::ReceiveSide
//! [`RECEIVE_BUFFER`]: crate::pg::receive_side::RECEIVE_BUFFER
//! [`Connection::drain_socket`]: crate::pg::connection::Connection::drain_socket

use std::time::Duration;

use super::protocol::pgoutput::BlockEdge;

/// Bytes gathered before the reader wakes, while gathering (a backlog, or a
/// streamed block). Half of [`RECEIVE_BUFFER`]: the mark must be reached
/// while the window is still open.
pub const GATHER: usize = 16 * 1024;
/// How far behind (commit to send, in the server's clock) a BEGIN shows a backlog.
pub const BACKLOG: Duration = Duration::from_millis(20);
/// The longest one wait for bytes may gather.
pub const GATHER_WAIT: Duration = Duration::from_millis(2);
/// While gathering, the wait before the next read once a read's bytes are
/// used up. Long enough for the walsender to fill the window of a fixed
/// [`RECEIVE_BUFFER`] at its pace: with 1 ms, under CUBIC, it often did not,
/// and its messages went one segment each (BENCHMARKS.md, 2026-12-07).
pub const READ_SPACING: Duration = Duration::from_millis(2);
/// Whether the socket gathers; changes come back as the mark to set.
#[derive(Debug)]
pub struct ReadPacing {
    state: State,
    /// Between a Stream Start and its Stream Stop.
    in_block: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The mark is one byte: every byte is read as it comes.
    Eager,
    /// The mark is [`GATHER`].
    Gathering,
    /// The socket has no mark to set (a Unix socket, or setting it failed).
    Unavailable,
}

impl ReadPacing {
    /// Starts eager; `settable` is whether the socket has a mark at all.
    pub fn new(settable: bool) -> ReadPacing {
        ReadPacing { state: if settable { State::Eager } else { State::Unavailable }, in_block: false }
    }

    /// Any message but a BEGIN arrived; `edge` is whether it opens or closes
    /// a streamed transaction's block. Returns the mark to set, if it changes.
    pub fn message(&mut self, edge: Option<BlockEdge>) -> Option<usize> {
        match edge {
            Some(BlockEdge::Start) => self.in_block = true,
            Some(BlockEdge::Stop) => self.in_block = false,
            None => {}
        }
        (self.in_block && self.state == State::Eager).then(|| self.switch(State::Gathering)).flatten()
    }

    /// The server sent, at `sent_micros`, the BEGIN of a transaction that
    /// committed at `committed_micros`. Returns the mark to set, if it changes.
    pub fn begin(&mut self, sent_micros: i64, committed_micros: i64) -> Option<usize> {
        let behind = sent_micros.saturating_sub(committed_micros);
        let backlog = behind >= i64::try_from(BACKLOG.as_micros()).unwrap_or(i64::MAX);
        match (self.state, backlog) {
            (State::Eager, true) => self.switch(State::Gathering),
            (State::Gathering, false) => self.switch(State::Eager),
            _ => None,
        }
    }

    /// How long the next wait for bytes may last: only while gathering.
    pub fn gather_wait(&self) -> Option<Duration> {
        (self.state == State::Gathering).then_some(GATHER_WAIT)
    }

    /// The wait before reading again: only while gathering.
    pub fn read_spacing(&self) -> Option<Duration> {
        (self.state == State::Gathering).then_some(READ_SPACING)
    }

    /// Gathering ends: a wait for bytes lasted [`ReadPacing::gather_wait`],
    /// or the stream is ending (the server's last answers are short).
    /// Returns the mark to set.
    pub fn end(&mut self) -> Option<usize> {
        match self.state {
            State::Gathering => self.switch(State::Eager),
            _ => None,
        }
    }

    /// Setting the mark failed: stay eager for good.
    pub fn unavailable(&mut self) {
        self.state = State::Unavailable;
    }

    fn switch(&mut self, state: State) -> Option<usize> {
        self.state = state;
        Some(if state == State::Gathering { GATHER } else { 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000;

    #[test]
    fn gathers_in_a_backlog_and_stops_when_caught_up_or_after_one_wait() {
        let mut pacing = ReadPacing::new(true);
        assert_eq!(pacing.gather_wait(), None);
        assert_eq!(pacing.begin(1_000 * MS, 1_000 * MS - 5 * MS), None, "5 ms behind is keeping up");
        assert_eq!(pacing.begin(1_000 * MS, 1_000 * MS - 20 * MS), Some(GATHER));
        assert_eq!(pacing.gather_wait(), Some(GATHER_WAIT));
        assert_eq!(pacing.read_spacing(), Some(READ_SPACING));
        assert_eq!(pacing.begin(1_000 * MS, 0), None, "already gathering");
        assert_eq!(pacing.begin(1_000 * MS, 1_000 * MS - MS), Some(1), "caught up");
        assert_eq!(pacing.gather_wait(), None);
        assert_eq!(pacing.read_spacing(), None, "a stream that keeps up reads at once");
        assert_eq!(pacing.end(), None);

        assert_eq!(pacing.begin(1_000 * MS, 0), Some(GATHER));
        assert_eq!(pacing.end(), Some(1), "a wait that timed out reads what came");
        assert_eq!(pacing.gather_wait(), None);
    }

    #[test]
    fn gathers_inside_a_streamed_block_and_again_after_a_wait_that_timed_out() {
        let mut pacing = ReadPacing::new(true);
        assert_eq!(pacing.message(None), None, "a change outside a block");
        assert_eq!(pacing.message(Some(BlockEdge::Start)), Some(GATHER));
        assert_eq!(pacing.message(None), None, "already gathering");
        assert_eq!(pacing.end(), Some(1), "a wait that timed out reads what came");
        assert_eq!(pacing.message(None), Some(GATHER), "the block's next change gathers again");
        assert_eq!(pacing.message(Some(BlockEdge::Stop)), None, "gathering goes on until a wait times out");
        assert_eq!(pacing.end(), Some(1));
        assert_eq!(pacing.message(None), None, "after the block");
        assert_eq!(pacing.begin(1_000 * MS, 1_000 * MS), None, "a BEGIN that keeps up, eager");

        let mut pacing = ReadPacing::new(false);
        assert_eq!(pacing.message(Some(BlockEdge::Start)), None, "no mark to set");
        assert_eq!(pacing.message(None), None);
    }

    #[test]
    fn never_gathers_without_a_mark_or_with_a_clock_going_backwards() {
        let mut pacing = ReadPacing::new(false);
        assert_eq!(pacing.begin(1_000 * MS, 0), None);
        assert_eq!(pacing.gather_wait(), None);

        let mut pacing = ReadPacing::new(true);
        assert_eq!(pacing.begin(i64::MIN, i64::MAX), None);
        assert_eq!(pacing.begin(0, 1_000 * MS), None);
        pacing.unavailable();
        assert_eq!(pacing.begin(1_000 * MS, 0), None);
    }
}
