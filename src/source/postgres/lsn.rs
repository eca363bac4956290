//! Log sequence numbers: a byte position in the write-ahead log, a `u64`
//! on the wire. An LSN is the Postgres source's [`Position`] as it is, so
//! the text form (`X/Y`, as `pg_lsn` writes it) is the position's.

use std::fmt;
use std::str::FromStr;

use crate::position::{ParsePositionError, Position};

/// A position in the write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl From<Lsn> for Position {
    fn from(lsn: Lsn) -> Position {
        Position::new(lsn.0)
    }
}

impl From<Position> for Lsn {
    fn from(position: Position) -> Lsn {
        Lsn(position.value())
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Position::from(*self).fmt(f)
    }
}

impl FromStr for Lsn {
    type Err = ParsePositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<Position>().map(Lsn::from)
    }
}
