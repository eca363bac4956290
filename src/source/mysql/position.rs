//! Where a MySQL/MariaDB binlog stream stands, as a [`Position`]: the binlog
//! file's sequence number (`binlog.000042` is 42) in the high 32 bits and the
//! byte offset in that file in the low 32. Files are numbered in the order
//! the server wrote them and offsets grow within a file, so the order of
//! positions is the stream's, as the seam requires; the text form
//! (`2A/1F4`) is the one every position has.
//!
//! Pure: no I/O.

use crate::position::Position;

/// A place in the binlog: a file's sequence number and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogPosition {
    pub file: u32,
    pub offset: u32,
}

impl BinlogPosition {
    /// The position of `offset` in the binlog file named `name`
    /// (`binlog.000042`); `None` for a name without a numeric extension.
    pub fn in_file(name: &str, offset: u64) -> Option<BinlogPosition> {
        let (_, number) = name.rsplit_once('.')?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(BinlogPosition { file: number.parse().ok()?, offset: u32::try_from(offset).ok()? })
    }

    /// The file's name, given the server's base name (`binlog`).
    pub fn file_name(&self, base: &str) -> String {
        format!("{base}.{:06}", self.file)
    }
}

impl From<BinlogPosition> for Position {
    fn from(at: BinlogPosition) -> Position {
        Position::new((u64::from(at.file) << 32) | u64::from(at.offset))
    }
}

impl From<Position> for BinlogPosition {
    fn from(position: Position) -> BinlogPosition {
        let value = position.value();
        BinlogPosition { file: (value >> 32) as u32, offset: value as u32 }
    }
}

/// The base name of a binlog file name (`binlog` of `binlog.000042`).
pub fn base_name(file: &str) -> &str {
    file.rsplit_once('.').map_or(file, |(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_orders_as_the_binlog_does_and_round_trips() {
        let early = BinlogPosition::in_file("binlog.000009", 4_000_000).expect("a binlog name");
        let later = BinlogPosition::in_file("binlog.000010", 4).expect("a binlog name");
        assert!(Position::from(early) < Position::from(later), "a later file is later, whatever the offset");
        assert_eq!(BinlogPosition::from(Position::from(later)), later);
        assert_eq!(Position::from(later).to_string(), "A/4");
        assert_eq!(later.file_name("mysql-bin"), "mysql-bin.000010");
        assert_eq!(base_name("mysql-bin.000010"), "mysql-bin");
        assert_eq!(BinlogPosition::in_file("binlog", 4), None);
        assert_eq!(BinlogPosition::in_file("binlog.index", 4), None);
        assert_eq!(BinlogPosition::in_file("binlog.000001", 1 << 33), None, "offsets fit 32 bits");
    }
}
