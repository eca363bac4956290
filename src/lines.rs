//! Newline-separated buffers (COPY text pieces, encoded change lines),
//! scanned with `memchr`. These scans run once per row of every copy and
//! every change, so they use the vectorised search rather than a byte loop.
//!
//! Invariant: no byte is lost. Every line of a buffer is yielded, including
//! a last one that lacks its newline; empty lines are yielded too, and the
//! callers that skip them say so.

use std::ops::Range;

/// The ranges of `buffer`'s lines, without their newlines.
pub fn line_ranges(buffer: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    let whole = memchr::memchr_iter(b'\n', buffer).map(move |end| {
        let line = start..end;
        start = end + 1;
        line
    });
    let last = buffer.iter().rposition(|b| *b == b'\n').map_or(0, |end| end + 1);
    whole.chain((last < buffer.len()).then_some(last..buffer.len()))
}

/// `buffer`'s lines, without their newlines.
pub fn lines(buffer: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_ranges(buffer).map(move |line| &buffer[line])
}

/// How many times `byte` occurs in `buffer`.
pub fn count(byte: u8, buffer: &[u8]) -> usize {
    memchr::memchr_iter(byte, buffer).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_yielded_the_last_one_even_without_its_newline() {
        assert_eq!(lines(b"a\tb\n\nc\n").collect::<Vec<_>>(), [&b"a\tb"[..], b"", b"c"]);
        assert_eq!(lines(b"a\nb").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(line_ranges(b"ab\ncd\n").collect::<Vec<_>>(), [0..2, 3..5]);
        assert_eq!(count(b'\t', b"a\tb\tc"), 2);
    }
}
