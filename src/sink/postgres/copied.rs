//! Copied rows (`C` mirror records, from a chunked copy) on their way into
//! a destination: turned into the COPY data the destination takes (binary
//! where its columns allow, as `new_rows` decides; else text), so that a
//! chunk of new rows goes in with one `COPY` (`copied_in`), without the
//! per-key staging of changes. Pure: no I/O.
//!
//! Invariants:
//! - The lines are kept too, so that when some of the rows exist already
//!   (the stream wrote them first), or a value does not convert to binary,
//!   the caller can stage them as guarded upserts instead, in their order.
//! - Once a value did not convert, nothing more is written: the binary
//!   data is incomplete and the caller must not send it ([`CopiedRows::converted`]).

use std::sync::Arc;

use bytes::Bytes;

use super::new_rows::write_value;
use crate::pg::binary_values::BinaryType;
use crate::pg::copy_binary::CopyWriter;

/// The copied rows of one open copy.
#[derive(Debug, Default)]
pub struct CopiedRows {
    /// `values...\t_walpipe_lsn\n` per row not sent yet, for `COPY destination FROM STDIN`.
    rows: Vec<u8>,
    lines: Vec<Bytes>,
    /// Binary data instead of `rows`: the writer and each column's type.
    binary: Option<(CopyWriter, Arc<[BinaryType]>)>,
    /// A value did not convert.
    unconverted: bool,
}

/// The parts of a `C` record: `commit_lsn \t C \t table \t - \t \t values...`.
pub struct CopiedRecord<'a> {
    pub commit_lsn: &'a [u8],
    pub table: &'a [u8],
    pub values: &'a [u8],
}

impl CopiedRecord<'_> {
    /// `None` for a record of another kind: every record of a stream is
    /// asked first, so one that is not a `C` is told after its op.
    pub fn parse(line: &[u8]) -> Option<CopiedRecord<'_>> {
        let lsn_end = line.iter().position(|&b| b == b'\t')?;
        let rest = line[lsn_end + 1..].strip_prefix(b"C\t")?;
        let table_end = rest.iter().position(|&b| b == b'\t')?;
        let values = rest[table_end + 1..].strip_prefix(b"-\t\t")?;
        Some(CopiedRecord { commit_lsn: &line[..lsn_end], table: &rest[..table_end], values })
    }
}

impl CopiedRecord<'_> {
    /// The row as the destination's COPY text: its values, then its position (`_walpipe_lsn`).
    pub fn write_new_row(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.values);
        out.push(b'\t');
        out.extend_from_slice(self.commit_lsn);
        out.push(b'\n');
    }

    /// The row as the staging table's COPY text, to be upserted (op `u`).
    pub fn write_upsert(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.values);
        out.push(b'\t');
        out.extend_from_slice(self.commit_lsn);
        out.extend_from_slice(b"\tu\n");
    }
}

impl CopiedRows {
    /// Rows in binary, each column of its type in `types`.
    pub fn binary(types: Arc<[BinaryType]>) -> CopiedRows {
        let binary = Some((CopyWriter::with_capacity(256 * 1024), types));
        CopiedRows { binary, ..CopiedRows::default() }
    }

    /// Adds a `C` record (already parsed as `record`, from `line`).
    pub fn push(&mut self, line: &Bytes, record: &CopiedRecord<'_>) {
        self.lines.push(line.clone());
        match &mut self.binary {
            Some(_) if self.unconverted => {}
            Some((copy, types)) => self.unconverted = write_binary_row(copy, types, record).is_none(),
            None => record.write_new_row(&mut self.rows),
        }
    }

    /// Whether every row pushed went into the data (always, in text).
    pub fn converted(&self) -> bool {
        !self.unconverted
    }

    /// Bytes of COPY data not taken yet.
    pub fn data_len(&self) -> usize {
        self.binary.as_ref().map_or(self.rows.len(), |(copy, _)| copy.piece_len())
    }

    /// The COPY data not taken yet.
    pub fn take_data(&mut self) -> Vec<u8> {
        match &mut self.binary {
            Some((copy, _)) => copy.take_piece(),
            None => std::mem::take(&mut self.rows),
        }
    }

    /// The rest of the COPY data, to its end.
    pub fn take_rest(&mut self) -> Vec<u8> {
        if let Some((copy, _)) = &mut self.binary {
            copy.trailer();
        }
        self.take_data()
    }

    /// Every line pushed, in order.
    pub fn take_lines(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.lines)
    }
}

/// A row's values (COPY text, separated by tabs) and its position, in binary.
fn write_binary_row(copy: &mut CopyWriter, types: &[BinaryType], record: &CopiedRecord<'_>) -> Option<()> {
    copy.tuple(i16::try_from(types.len() + 1).ok()?);
    let mut values = record.values.split(|&b| b == b'\t');
    for ty in types {
        write_value(copy, *ty, values.next()?)?;
    }
    if values.next().is_some() {
        return None;
    }
    write_value(copy, BinaryType::PgLsn, record.commit_lsn)?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_record_becomes_a_row_of_the_destinations_copy_text() {
        let line = Bytes::from_static(b"0/90\tC\tpublic.t\t-\t\t7\tx\\ty\t\\N");
        let record = CopiedRecord::parse(&line).expect("a C record");
        assert_eq!(record.table, b"public.t");
        let mut rows = CopiedRows::default();
        rows.push(&line, &record);
        assert_eq!(rows.data_len(), 15);
        assert_eq!(rows.take_data(), b"7\tx\\ty\t\\N\t0/90\n");
        assert_eq!(rows.take_data(), b"", "taken");
        rows.push(&line, &record);
        let mut upsert = Vec::new();
        record.write_upsert(&mut upsert);
        assert_eq!(upsert, b"7\tx\\ty\t\\N\t0/90\tu\n", "the same row, to upsert");
        assert_eq!(rows.take_lines(), [line.clone(), line], "every line, for a fallback");
        assert!(CopiedRecord::parse(b"0/90\tI\tpublic.t\t-\t\t7").is_none());
        assert!(CopiedRecord::parse(b"0/90\tC\tpublic.t").is_none());
        assert!(CopiedRecord::parse(b"0/90\tC\tpublic.t\t-\t").is_none(), "no values field");
        assert!(CopiedRecord::parse(b"0/90\tCC\tpublic.t\t-\t\t7").is_none());
        let unpositioned = CopiedRecord::parse(b"\\N\tC\tpublic.t\t-\t\t7\t8").expect("a C record");
        assert_eq!((unpositioned.commit_lsn, unpositioned.values), (&b"\\N"[..], &b"7\t8"[..]));
    }
}
