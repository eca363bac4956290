//! Copied rows (`C` mirror records, from a chunked copy) on their way into
//! a destination: turned into the COPY text the destination takes, so that
//! a chunk of new rows goes in with one `COPY` (`copied_in`), without the
//! per-key staging of changes. Pure: no I/O.
//!
//! Invariant: the lines are kept too, so that when some of the rows exist
//! already (the stream wrote them first) the caller can stage them as
//! guarded upserts instead, in their order.

use bytes::Bytes;

/// The copied rows of one open copy.
#[derive(Debug, Default)]
pub struct CopiedRows {
    /// `values...\t_walpipe_lsn\n` per row not sent yet, for `COPY destination FROM STDIN`.
    rows: Vec<u8>,
    lines: Vec<Bytes>,
}

/// The parts of a `C` record: `commit_lsn \t C \t table \t - \t \t values...`.
pub struct CopiedRecord<'a> {
    pub commit_lsn: &'a [u8],
    pub table: &'a [u8],
    pub values: &'a [u8],
}

impl CopiedRecord<'_> {
    pub fn parse(line: &[u8]) -> Option<CopiedRecord<'_>> {
        let mut parts = line.splitn(6, |b| *b == b'\t');
        let commit_lsn = parts.next()?;
        (parts.next()? == b"C").then_some(())?;
        let table = parts.next()?;
        (parts.next()? == b"-" && parts.next()?.is_empty()).then_some(())?;
        Some(CopiedRecord { commit_lsn, table, values: parts.next()? })
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
    /// Adds a `C` record (already parsed as `record`, from `line`).
    pub fn push(&mut self, line: &Bytes, record: &CopiedRecord<'_>) {
        record.write_new_row(&mut self.rows);
        self.lines.push(line.clone());
    }

    /// Bytes of COPY text not taken yet.
    pub fn text_len(&self) -> usize {
        self.rows.len()
    }

    /// The COPY text not taken yet.
    pub fn take_text(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rows)
    }

    /// Every line pushed, in order.
    pub fn take_lines(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.lines)
    }
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
        assert_eq!(rows.text_len(), 15);
        assert_eq!(rows.take_text(), b"7\tx\\ty\t\\N\t0/90\n");
        assert_eq!(rows.take_text(), b"", "taken");
        rows.push(&line, &record);
        let mut upsert = Vec::new();
        record.write_upsert(&mut upsert);
        assert_eq!(upsert, b"7\tx\\ty\t\\N\t0/90\tu\n", "the same row, to upsert");
        assert_eq!(rows.take_lines(), [line.clone(), line], "every line, for a fallback");
        assert!(CopiedRecord::parse(b"0/90\tI\tpublic.t\t-\t\t7").is_none());
        assert!(CopiedRecord::parse(b"0/90\tC\tpublic.t").is_none());
    }
}
