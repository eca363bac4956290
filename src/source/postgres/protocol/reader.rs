//! A bounds-checked cursor over one message.
//!
//! Every read checks the remaining length first and reports a
//! [`DecodeError`] naming what it was reading and at which offset, so that a
//! truncated or malformed message can never index out of bounds or panic.
//!
//! The fixed-size reads are `#[inline]`: they run once per column of every
//! row, and without it whether they are inlined depends on how the release
//! build splits the crate into codegen units (an unrelated change once moved
//! `walpipe tail`'s instruction count by 2%; `benches/tail_instructions.sh`).

use bytes::Bytes;

use super::DecodeError;

pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn take(&mut self, len: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::truncated(what, self.pos));
        }
        let start = self.pos;
        self.pos += len;
        Ok(&self.buf[start..self.pos])
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    #[inline]
    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    #[inline]
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// `len` bytes as a cheap slice of the message (no copy).
    #[inline]
    pub(crate) fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::truncated(what, self.pos));
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let len =
            self.buf[start..].iter().position(|&b| b == 0).ok_or(DecodeError::truncated(what, start))?;
        let text = std::str::from_utf8(&self.buf[start..start + len])
            .map_err(|_| DecodeError::invalid(what, start))?
            .to_owned();
        self.pos += len + 1;
        Ok(text)
    }

    /// An error for a field holding a value the format does not allow.
    pub(crate) fn invalid(&self, what: &'static str) -> DecodeError {
        DecodeError::invalid(what, self.pos)
    }

    pub(crate) fn truncated(&self, what: &'static str) -> DecodeError {
        DecodeError::truncated(what, self.pos)
    }

    /// Fails unless the whole message was read: trailing bytes mean the
    /// decoder and the server disagree about the format.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() == 0 { Ok(()) } else { Err(DecodeError::trailing(what, self.pos)) }
    }
}
