//! Log sequence numbers.
//!
//! An LSN is a byte position in the write-ahead log, a `u64` on the wire and
//! `X/Y` (two hexadecimal halves) in SQL and in every text walpipe prints or
//! reads. Parsing accepts exactly what `pg_lsn` accepts; formatting matches
//! PostgreSQL's output so that values can be pasted into SQL as they are.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not an LSN of the form `X/Y`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an LSN: write it as two hexadecimal numbers separated by a slash, like 0/1A3E5F8")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseLsnError(text.to_string());
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error());
            }
            u32::from_str_radix(part, 16).map_err(|_| error())
        };
        Ok(Lsn((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for value in [0u64, 0x1A3E5F8, 0x1_0000_0000, u64::MAX] {
            let lsn = Lsn(value);
            assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }
        assert_eq!(Lsn(0x1A3E5F8).to_string(), "0/1A3E5F8");
        assert_eq!("16/B374D848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "0", "/1", "1/", "g/1", "1/2/3", "123456789/0", "-1/0", "+1/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad} parsed");
        }
    }
}
