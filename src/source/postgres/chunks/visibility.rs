//! Which transactions a chunk's query could see: the query's snapshot, as
//! `pg_current_snapshot()` gives it (`xmin:xmax:xip,...`, 64-bit xids),
//! against the 32-bit top-level xids of the stream. Pure: no I/O.
//!
//! Invariant: [`XidSnapshot::sees`] is exact for any xid within 2^31 of the
//! snapshot, which every transaction streamed while a chunk is open is (an
//! older one would have been frozen by wraparound protection long before).

/// A transaction-visibility snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSnapshot {
    /// Every xid below it had finished when the snapshot was taken.
    xmin: u64,
    /// Every xid from it on had not started.
    xmax: u64,
    /// In between: the ones still running.
    running: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the source answered pg_current_snapshot() with {0:?}, which is not xmin:xmax:xip")]
pub struct ParseError(pub String);

impl XidSnapshot {
    /// Parses `pg_current_snapshot()::text`, e.g. `745:750:745,748`.
    pub fn parse(text: &str) -> Result<XidSnapshot, ParseError> {
        let error = || ParseError(text.to_string());
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next().and_then(|x| x.parse().ok()).ok_or_else(error)?;
        let xmax = parts.next().and_then(|x| x.parse().ok()).ok_or_else(error)?;
        let running = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => {
                list.split(',').map(|x| x.parse().map_err(|_| error())).collect::<Result<_, _>>()?
            }
        };
        if xmin > xmax {
            return Err(error());
        }
        Ok(XidSnapshot { xmin, xmax, running })
    }

    /// Whether a transaction with this (32-bit, top-level) xid had
    /// committed when the snapshot was taken, if it committed at all: its
    /// changes are in what the query read.
    pub fn sees(&self, xid: u32) -> bool {
        let full = self.widen(xid);
        full < self.xmin || (full < self.xmax && !self.running.contains(&full))
    }

    /// The 64-bit xid nearest to `xmax` whose low 32 bits are `xid`.
    fn widen(&self, xid: u32) -> u64 {
        let epoch = self.xmax >> 32;
        let candidate = (epoch << 32) | u64::from(xid);
        if candidate > self.xmax.saturating_add(1 << 31) && epoch > 0 {
            candidate - (1 << 32)
        } else if candidate.saturating_add(1 << 31) < self.xmax {
            candidate + (1 << 32)
        } else {
            candidate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_before_the_snapshot_is_seen_running_or_later_is_not() {
        let snapshot = XidSnapshot::parse("745:750:745,748").expect("parse");
        assert!(snapshot.sees(700));
        assert!(!snapshot.sees(745), "running");
        assert!(snapshot.sees(746));
        assert!(snapshot.sees(747));
        assert!(!snapshot.sees(748), "running");
        assert!(snapshot.sees(749));
        assert!(!snapshot.sees(750), "started after");
        assert!(!snapshot.sees(9000));
    }

    #[test]
    fn no_running_transactions() {
        let snapshot = XidSnapshot::parse("800:800:").expect("parse");
        assert!(snapshot.sees(799));
        assert!(!snapshot.sees(800));
    }

    #[test]
    fn xids_are_compared_across_an_epoch() {
        // xmax just past a wraparound: epoch 1, low bits 10.
        let xmax = (1u64 << 32) + 10;
        let snapshot = XidSnapshot::parse(&format!("{}:{xmax}:", xmax - 20)).expect("parse");
        assert!(snapshot.sees(u32::MAX - 5), "from the previous epoch, before xmin");
        assert!(snapshot.sees(5));
        assert!(!snapshot.sees(10));
        assert!(!snapshot.sees(11));
        // xmax just before a wraparound: a later xid has wrapped to small numbers.
        let snapshot = XidSnapshot::parse(&format!("{}:{}:", u32::MAX - 10, u32::MAX - 2)).expect("parse");
        assert!(!snapshot.sees(3), "started after, in the next epoch");
        assert!(snapshot.sees(u32::MAX - 20));
    }

    #[test]
    fn malformed_snapshots_are_errors() {
        for text in ["", "1", "5:3:", "a:b:", "1:2:x"] {
            assert!(XidSnapshot::parse(text).is_err(), "{text}");
        }
    }
}
