//! PostgreSQL's binary COPY format, as far as walpipe reads and writes it:
//! how many rows a piece of it holds (for the progress of a binary copy,
//! whose bytes otherwise pass through untouched), and a whole COPY's data
//! written from its fields ([`CopyWriter`]). Pure: no I/O.
//!
//! ```text
//!  header:  "PGCOPY\n\xff\r\n\0" | flags (int32) | extension length (int32) | extension
//!  tuple:   field count (int16) | per field: length (int32, -1 for NULL) | bytes
//!  trailer: -1 (int16)
//! ```
//!
//! Invariant: a malformed or cut piece is never an error here, and never
//! read past its end: counting stops at the first tuple that does not fit
//! (the sink's COPY checks the data itself).

use std::ops::Range;

/// The signature a binary COPY begins with.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The whole tuples in `piece`: a run of tuples, the first piece starting
/// with the header, the last one ending with the trailer.
pub fn rows(piece: &[u8]) -> u64 {
    let mut rest = piece;
    if let Some(after) = rest.strip_prefix(SIGNATURE) {
        // A field count cannot begin with "PG" (20,551 fields is more than a row has).
        let Some(extension) = after.get(4..8).and_then(int32) else { return 0 };
        let Some(tuples) = usize::try_from(extension).ok().and_then(|len| after.get(8 + len..)) else {
            return 0;
        };
        rest = tuples;
    }
    let mut count = 0;
    while let Some(fields) = rest.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) {
        let Some(after) = skip_fields(&rest[2..], fields) else { break };
        rest = after;
        count += 1;
    }
    count
}

/// What follows `fields` fields at the start of `tuple`; `None` for the
/// trailer (a negative count) or a tuple cut short.
fn skip_fields(mut tuple: &[u8], fields: i16) -> Option<&[u8]> {
    for _ in 0..u16::try_from(fields).ok()? {
        let length = tuple.get(..4).and_then(int32)?;
        let bytes = match length {
            // NULL: no bytes follow.
            -1 => 0,
            length => usize::try_from(length).ok()?,
        };
        tuple = tuple.get(4 + bytes..)?;
    }
    Some(tuple)
}

/// A whole binary COPY's data, tuple by tuple: the header first, the
/// trailer at [`CopyWriter::finish`] (or [`CopyWriter::trailer`]).
#[derive(Debug)]
pub struct CopyWriter {
    out: Vec<u8>,
}

impl CopyWriter {
    pub fn with_capacity(capacity: usize) -> CopyWriter {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(SIGNATURE);
        // No flags (no OIDs), and no header extension.
        out.extend([0; 8]);
        CopyWriter { out }
    }

    /// Starts a tuple of `fields` fields.
    #[inline]
    pub fn tuple(&mut self, fields: i16) {
        self.out.extend_from_slice(&fields.to_be_bytes());
    }

    #[inline]
    pub fn null(&mut self) {
        self.out.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// A field whose bytes `write` appends, and where they are; `None`
    /// when `write` is (the writer is then of no further use).
    #[inline]
    pub fn field(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Option<Range<usize>> {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        write(&mut self.out)?;
        let length = i32::try_from(self.out.len() - start - 4).ok()?;
        self.out[start..start + 4].copy_from_slice(&length.to_be_bytes());
        Some(start + 4..self.out.len())
    }

    /// A field of the bytes `value`, whose length is known before they are
    /// written (no length to fill in after).
    #[inline]
    pub fn bytes(&mut self, value: &[u8]) -> Option<Range<usize>> {
        let length = i32::try_from(value.len()).ok()?;
        self.out.reserve(4 + value.len());
        self.out.extend_from_slice(&length.to_be_bytes());
        let start = self.out.len();
        self.out.extend_from_slice(value);
        Some(start..self.out.len())
    }

    /// A field with the bytes of an earlier one (`bytes`, as
    /// [`CopyWriter::field`] gave them).
    #[inline]
    pub fn repeat(&mut self, bytes: Range<usize>) -> Option<Range<usize>> {
        let length = i32::try_from(bytes.len()).ok()?;
        self.out.extend_from_slice(&length.to_be_bytes());
        let start = self.out.len();
        self.out.extend_from_within(bytes);
        Some(start..self.out.len())
    }

    /// Bytes written since the last piece taken (the first piece begins
    /// with the header), for a COPY sent in pieces; ranges given before
    /// this no longer apply.
    pub fn take_piece(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes written since the last piece taken.
    pub fn piece_len(&self) -> usize {
        self.out.len()
    }

    /// Ends the data: nothing is written after it.
    pub fn trailer(&mut self) {
        self.out.extend_from_slice(&(-1i16).to_be_bytes());
    }

    /// The data, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.trailer();
        self.out
    }
}

fn int32(bytes: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                Some(bytes) => {
                    out.extend((bytes.len() as i32).to_be_bytes());
                    out.extend(*bytes);
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
        out
    }

    fn header() -> Vec<u8> {
        [SIGNATURE, &0i32.to_be_bytes(), &0i32.to_be_bytes()].concat()
    }

    #[test]
    fn counts_the_tuples_after_the_header_and_before_the_trailer() {
        let first = tuple(&[Some(b"\0\0\0\x01"), None, Some(b"text")]);
        let second = tuple(&[Some(b"\0\0\0\x02"), Some(b""), None]);
        let whole = [header(), first.clone(), second.clone(), (-1i16).to_be_bytes().to_vec()].concat();
        assert_eq!(rows(&whole), 2);
        // Pieces after the first carry no header.
        assert_eq!(rows(&[first, second].concat()), 2);
        assert_eq!(rows(&[header(), (-1i16).to_be_bytes().to_vec()].concat()), 0);
    }

    #[test]
    fn the_writer_frames_what_the_counter_reads() {
        let mut writer = CopyWriter::with_capacity(64);
        writer.tuple(3);
        let bytes = |value: &'static [u8]| {
            move |out: &mut Vec<u8>| {
                out.extend_from_slice(value);
                Some(())
            }
        };
        writer.field(bytes(&[0, 0, 0, 1])).expect("written");
        writer.null();
        let text = writer.field(bytes(b"text")).expect("written");
        writer.tuple(3);
        writer.field(bytes(&[0, 0, 0, 2])).expect("written");
        writer.field(|_| Some(())).expect("written");
        writer.null();
        writer.tuple(1);
        assert!(writer.repeat(text).is_some());
        let first = tuple(&[Some(b"\0\0\0\x01"), None, Some(b"text")]);
        let second = tuple(&[Some(b"\0\0\0\x02"), Some(b""), None]);
        let third = tuple(&[Some(b"text")]);
        let whole = [header(), first, second, third, (-1i16).to_be_bytes().to_vec()].concat();
        assert_eq!(writer.finish(), whole);
    }

    #[test]
    fn a_cut_or_malformed_piece_counts_what_is_whole() {
        let whole = tuple(&[Some(b"abcdef"), Some(b"g")]);
        let piece = [whole.clone(), whole.clone()].concat();
        for cut in 0..piece.len() {
            assert_eq!(rows(&piece[..cut]), u64::from(cut >= whole.len()), "cut at {cut}");
        }
        assert_eq!(rows(&SIGNATURE[..5]), 0);
        assert_eq!(rows(&[SIGNATURE, &[0; 4], &i32::MAX.to_be_bytes()].concat()), 0);
        assert_eq!(rows(&[0, 1, 0x80, 0, 0, 0]), 0);
    }
}
