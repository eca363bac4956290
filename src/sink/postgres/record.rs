//! One mirror record (see `change::mirror_records`), split into its fields
//! without copying them.
//!
//! Invariants:
//! - A field is a slice of the record's line, as COPY text: nothing is
//!   unescaped here.
//! - A malformed record (fewer than the fixed fields) is an error, never a
//!   panic; callers check the count of values against the table's shape.

use std::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;

/// One mirror record (see `change::mirror_records`), split into fields.
#[derive(Debug, Clone)]
pub struct Record {
    line: Bytes,
    /// Where each field ends (the next begins one byte later), inline for
    /// up to 12 fields (an insert of up to seven columns: five fixed fields
    /// and one per column); wider records take a heap allocation, as every
    /// record did before. Allocating and freeing it cost about 350
    /// instructions per change of `benches/run_instructions.sh`'s 7,241;
    /// a larger inline array costs as much again in copies (a record moves
    /// through a few calls). A record is at most a pgoutput message (which
    /// PostgreSQL caps at 1 GB) escaped, so its offsets fit a `u32`.
    ends: SmallVec<[u32; 12]>,
}

/// The first value field: after commit_lsn, op, table, old flag and toast.
pub(super) const VALUES_AT: usize = 5;

impl Record {
    pub fn parse(line: Bytes) -> Result<Record, String> {
        let Ok(len) = u32::try_from(line.len()) else {
            return Err(format!("a mirror record of {} bytes is longer than 4 GiB", line.len()));
        };
        let mut ends = SmallVec::new();
        // A tab is within the line, so its offset fits as the length does.
        for_each_tab(&line, |i| ends.push(i as u32));
        ends.push(len);
        if ends.len() < VALUES_AT {
            return Err(format!("a mirror record has {} fields", ends.len()));
        }
        Ok(Record { line, ends })
    }

    /// Where the field `index` lies in the line.
    #[inline]
    fn range(&self, index: usize) -> Range<usize> {
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize + 1,
        };
        start..self.ends[index] as usize
    }

    #[inline]
    pub fn field(&self, index: usize) -> &[u8] {
        &self.line[self.range(index)]
    }

    pub fn commit_lsn(&self) -> &[u8] {
        self.field(0)
    }

    pub fn op(&self) -> u8 {
        self.field(1).first().copied().unwrap_or(b'?')
    }

    /// The record without its commit LSN: what two announcements of the same shape share.
    pub fn after_commit_lsn(&self) -> &[u8] {
        &self.line[self.range(1).start..]
    }

    /// The table, as escaped `schema.name`.
    pub fn table(&self) -> &[u8] {
        self.field(2)
    }

    /// An `S` record's source relation id; `None` when a copy announced it.
    pub fn relation_id(&self) -> Option<u32> {
        std::str::from_utf8(self.field(3)).ok()?.parse().ok().filter(|id| *id != 0)
    }

    pub(super) fn has_old(&self) -> bool {
        self.field(3) != b"-"
    }

    pub(super) fn toast(&self) -> &[u8] {
        self.field(4)
    }

    /// Every field after the fixed ones (values, or a shape's column fields).
    pub fn values_from_start(&self) -> Vec<&[u8]> {
        (VALUES_AT..self.ends.len()).map(|i| self.field(i)).collect()
    }

    pub(super) fn value_count(&self) -> usize {
        self.ends.len() - VALUES_AT
    }

    /// The `row`-th tuple of values in this record (0: the first sent).
    pub(super) fn values(&self, row: usize, width: usize) -> Range<usize> {
        VALUES_AT + row * width..VALUES_AT + (row + 1) * width
    }

    /// The row's key: the key field itself when there is one key column (a
    /// slice of the line, no copy), else the key fields each followed by a tab.
    pub(super) fn key(&self, values: Range<usize>, key_positions: &[usize]) -> Bytes {
        if let [position] = key_positions {
            return self.line.slice(self.range(values.start + position));
        }
        let mut key = Vec::new();
        for position in key_positions {
            key.extend_from_slice(self.field(values.start + position));
            key.push(b'\t');
        }
        key.into()
    }
}

/// Calls `found` with the index of each tab in `line`, in order. The line
/// is read 32 bytes at a time into a bit mask of its tabs (a loop without
/// branches, which the compiler turns into a few vector instructions), and
/// only the set bits are visited: a byte-at-a-time loop cost about 600
/// instructions per record, and `memchr` per field more (its set-up per
/// call outweighs the short fields).
fn for_each_tab(line: &[u8], mut found: impl FnMut(usize)) {
    const BLOCK: usize = 32;
    let mut blocks = line.chunks_exact(BLOCK);
    let mut at = 0;
    for block in blocks.by_ref() {
        let mut tabs =
            block.iter().enumerate().fold(0u32, |mask, (i, &byte)| mask | (u32::from(byte == b'\t') << i));
        while tabs != 0 {
            found(at + tabs.trailing_zeros() as usize);
            tabs &= tabs - 1;
        }
        at += BLOCK;
    }
    for (i, &byte) in blocks.remainder().iter().enumerate() {
        if byte == b'\t' {
            found(at + i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        Record::parse(Bytes::from(text.to_string())).expect("a record")
    }

    #[test]
    fn tabs_are_found_in_every_block_and_the_remainder() {
        for len in [0, 1, 31, 32, 33, 64, 100] {
            let line: Vec<u8> =
                (0..len).map(|i| if i % 3 == 0 || i == 31 || i == 32 { b'\t' } else { b'x' }).collect();
            let mut found = Vec::new();
            for_each_tab(&line, |i| found.push(i));
            let expected: Vec<usize> = (0..len).filter(|&i| line[i] == b'\t').collect();
            assert_eq!(found, expected, "a line of {len} bytes");
        }
    }

    #[test]
    fn a_record_wider_than_its_inline_offsets_keeps_every_field() {
        let values: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        let line = format!("0/10\tI\tpublic.t\t-\t\t{}", values.join("\t"));
        let parsed = record(&line);
        assert_eq!(parsed.value_count(), 40);
        for (i, value) in values.iter().enumerate() {
            assert_eq!(parsed.field(VALUES_AT + i), value.as_bytes());
        }
        assert_eq!(parsed.field(VALUES_AT - 1), b"", "the empty toast field");
    }
}
