//! A place in a source's change stream, opaque above the source.
//!
//! Sinks, the ledger and the checkpoint tables store positions, compare
//! them and show them, and never look inside: each source packs its own
//! coordinates into one (a PostgreSQL LSN as it is; a binlog file number
//! and offset as its high and low halves), so that the order of positions
//! is the order of its stream.
//!
//! The text form is two hexadecimal halves, `X/Y`: the form of PostgreSQL's
//! `pg_lsn`, the ordered 64-bit type the Postgres sink stores positions in
//! (`walpipe.checkpoints.applied_lsn`, a mirror's `_walpipe_lsn`). Parsing
//! accepts exactly what `pg_lsn` accepts, and formatting matches its
//! output, so values can be pasted into SQL as they are.

use std::fmt;
use std::str::FromStr;

/// A place in a source's change stream; see the module.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(u64);

impl Position {
    pub const ZERO: Position = Position(0);

    /// The position a source packed into `value`.
    pub const fn new(value: u64) -> Position {
        Position(value)
    }

    /// The packed value, for the source that made it and for gauges.
    pub const fn value(self) -> u64 {
        self.0
    }
}

impl Position {
    /// Appends the text form (`X/Y`) to `out` without the formatting
    /// machinery: the change encoder writes two per change.
    pub fn write_text(self, out: &mut Vec<u8>) {
        write_hex(out, self.0 >> 32);
        out.push(b'/');
        write_hex(out, self.0 & 0xFFFF_FFFF);
    }
}

/// `value` in upper-case hexadecimal, as `{:X}` writes it.
fn write_hex(out: &mut Vec<u8>, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = DIGITS[(rest & 0xF) as usize];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not a position of the form `X/Y`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an LSN: write it as two hexadecimal numbers separated by a slash, like 0/1A3E5F8")]
pub struct ParsePositionError(pub String);

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParsePositionError(text.to_string());
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error());
            }
            u32::from_str_radix(part, 16).map_err(|_| error())
        };
        Ok(Position((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for value in [0u64, 0x1A3E5F8, 0x1_0000_0000, u64::MAX] {
            let position = Position(value);
            assert_eq!(position.to_string().parse::<Position>(), Ok(position));
        }
        assert_eq!(Position(0x1A3E5F8).to_string(), "0/1A3E5F8");
        assert_eq!("16/B374D848".parse::<Position>(), Ok(Position(0x16_B374_D848)));
    }

    #[test]
    fn the_hand_written_text_is_the_display_text() {
        for value in [0u64, 0xF, 0x10, 0x1A3E5F8, 0x1_0000_0000, 0xDEAD_BEEF_0000_0001, u64::MAX] {
            let mut written = Vec::new();
            Position(value).write_text(&mut written);
            assert_eq!(String::from_utf8(written).ok(), Some(Position(value).to_string()));
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "0", "/1", "1/", "g/1", "1/2/3", "123456789/0", "-1/0", "+1/0"] {
            assert!(bad.parse::<Position>().is_err(), "{bad} parsed");
        }
    }
}
