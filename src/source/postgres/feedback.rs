//! What the client reports to the walsender, and when. Pure: the caller
//! passes the clock in.
//!
//! Invariants (the slot's LSN rules), tested below:
//! - The position reported never goes backwards: [`Feedback::confirm`] only raises it.
//! - A status is due at least every `interval`, and within [`PROMPT_REPORT`]
//!   (or `interval`, if shorter) after the confirmed position moved.

use std::time::Duration;

use tokio::time::Instant;

use crate::source::postgres::lsn::Lsn;
use crate::source::postgres::protocol::walsender::StandbyStatus;

/// Never let a moved position wait longer than this to be reported.
pub const PROMPT_REPORT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Feedback {
    confirmed: Lsn,
    reported: Lsn,
    last_report: Instant,
    interval: Duration,
}

impl Feedback {
    pub fn new(start: Lsn, interval: Duration, now: Instant) -> Self {
        Feedback { confirmed: start, reported: start, last_report: now, interval }
    }

    /// Raises the confirmed position; a lower one is ignored.
    pub fn confirm(&mut self, lsn: Lsn) {
        self.confirmed = self.confirmed.max(lsn);
    }

    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// When the next status must go out.
    pub fn deadline(&self) -> Instant {
        if self.confirmed > self.reported {
            self.last_report + PROMPT_REPORT.min(self.interval)
        } else {
            self.last_report + self.interval
        }
    }

    /// The status to send now; records it as reported.
    pub fn report(&mut self, now: Instant, client_time: i64) -> StandbyStatus {
        self.reported = self.confirmed;
        self.last_report = now;
        StandbyStatus {
            write: self.confirmed,
            flush: self.confirmed,
            apply: self.confirmed,
            client_time,
            reply_requested: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmed_position_never_goes_backwards() {
        let now = Instant::now();
        let mut feedback = Feedback::new(Lsn(100), Duration::from_secs(10), now);
        feedback.confirm(Lsn(50));
        assert_eq!(feedback.confirmed(), Lsn(100));
        feedback.confirm(Lsn(200));
        feedback.confirm(Lsn(150));
        let status = feedback.report(now, 0);
        assert_eq!((status.write, status.flush, status.apply), (Lsn(200), Lsn(200), Lsn(200)));
    }

    #[test]
    fn status_is_due_every_interval_and_promptly_after_a_move() {
        let start = Instant::now();
        let mut feedback = Feedback::new(Lsn(0), Duration::from_secs(10), start);
        assert_eq!(feedback.deadline(), start + Duration::from_secs(10));
        feedback.confirm(Lsn(1));
        assert_eq!(feedback.deadline(), start + PROMPT_REPORT);
        let later = start + Duration::from_secs(3);
        feedback.report(later, 0);
        assert_eq!(feedback.deadline(), later + Duration::from_secs(10));

        // A short wal_sender_timeout: the interval wins over the prompt delay.
        let mut short = Feedback::new(Lsn(0), Duration::from_millis(300), start);
        short.confirm(Lsn(5));
        assert_eq!(short.deadline(), start + Duration::from_millis(300));
    }
}
