//! A TCP socket's receive side: its low-water mark (`SO_RCVLOWAT`, how
//! many bytes the kernel gathers before it reports the socket readable, and
//! so before it wakes a reader waiting in `epoll`), its receive buffer
//! (`SO_RCVBUF`, fixed before connecting to a peer on this host), and reads
//! that empty the socket of what it holds without waiting.
//!
//! Invariants:
//! - Setting the mark makes the kernel check readiness again (Linux's
//!   `tcp_set_rcvlowat`), so lowering it wakes a waiting reader at once if
//!   bytes are there: no byte waits longer than the caller's own timer.
//! - A read never waits for the mark: on a non-blocking socket it returns
//!   what is there. [`ReceiveSide::drain_into`] does not wait either
//!   (`MSG_DONTWAIT`), and reads only a plain TCP socket: under TLS the
//!   bytes are records for the TLS layer.
//! - A fixed receive buffer is set on the socket before it connects
//!   ([`fixed_buffer`], used by `pg::transport`), so the window offered in
//!   the SYN and every window after stay within it. A sender bounds its
//!   segment size by half the largest window it has seen; had it seen a
//!   larger window first, a smaller one later could stall it until its
//!   probe timer fired.
//! - The buffer is fixed only for a peer on this host, where the round trip
//!   is tens of microseconds. Across a network the kernel sizes it, as it
//!   must to keep a distant link full (a fixed 32 KiB over 50 ms would cap
//!   a stream at 1.3 MB/s). Why a replication socket wants it:
//!   `source::postgres::read_pacing`.
//!
//! With `cli::malloc_tuning`, the only `unsafe` code in walpipe:
//! `setsockopt` with an `int`, which neither `socket2` nor `rustix` offers
//! for `SO_RCVLOWAT`, and a `recv` into a buffer's spare capacity.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;

/// The receive buffer fixed for a peer on this host (the kernel doubles
/// it). Small on purpose: while walpipe reads a backlog, the window must
/// fill between two reads, so that the walsender's messages queue into
/// full segments (`source::postgres::read_pacing`).
pub const RECEIVE_BUFFER: u32 = 32 * 1024;

/// The receive buffer to fix: [`RECEIVE_BUFFER`] for a peer on this host,
/// else none (the kernel sizes it).
pub fn fixed_buffer(peer_on_this_host: bool) -> Option<u32> {
    peer_on_this_host.then_some(RECEIVE_BUFFER)
}

/// The receive side of one connection's socket. Held by the
/// [`Connection`](super::Connection) whose transport owns the socket, so
/// the descriptor is open for as long as this is.
#[derive(Debug)]
pub struct ReceiveSide {
    fd: RawFd,
    /// Whether the socket's bytes are the stream itself (not TLS records).
    plain: bool,
}

impl ReceiveSide {
    /// `plain`: whether the bytes on the socket are read as they are (no TLS).
    pub(super) fn of(stream: &TcpStream, plain: bool) -> ReceiveSide {
        ReceiveSide { fd: stream.as_raw_fd(), plain }
    }

    /// The socket is reported readable once `bytes` (at least one) are there.
    pub fn set_low_water(&self, bytes: usize) -> io::Result<()> {
        self.set_int(libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes.max(1))
    }

    /// Appends to `buf` what the socket holds now, until it has no more or
    /// `buf` holds at least `limit` bytes; never waits. Each read frees the window,
    /// so a sender with bytes queued sends them at once, and the next read
    /// finds them. Returns the bytes read; an end of stream or an error is
    /// left for the next ordinary read to report. Reads nothing under TLS.
    pub fn drain_into(&self, buf: &mut BytesMut, limit: usize) -> usize {
        let mut total = 0;
        while self.plain && buf.len() < limit {
            if buf.capacity() - buf.len() < 64 * 1024 {
                buf.reserve(256 * 1024);
            }
            match self.recv_now(buf) {
                0 => break,
                read => total += read,
            }
        }
        total
    }

    /// One `recv` into `buf`'s spare capacity without waiting: the bytes
    /// read, or 0 if there were none, the stream ended, or it failed.
    #[allow(unsafe_code)]
    fn recv_now(&self, buf: &mut BytesMut) -> usize {
        let spare = buf.spare_capacity_mut();
        // SAFETY: `fd` is the open socket of the connection holding `self`;
        // the kernel writes at most `spare.len()` bytes into `spare`, memory
        // `buf` owns and does not otherwise use during the call.
        let read = unsafe { libc::recv(self.fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
        let Ok(read) = usize::try_from(read) else { return 0 };
        // SAFETY: the kernel initialized the first `read` bytes of the spare capacity.
        unsafe { buf.advance_mut(read) };
        read
    }

    #[allow(unsafe_code)]
    fn set_int(&self, level: libc::c_int, option: libc::c_int, value: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
        let size = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
        // SAFETY: `fd` is the open socket of the connection holding `self`;
        // the kernel reads `size` bytes of `value`, a live local, during the
        // call only.
        let result = unsafe { libc::setsockopt(self.fd, level, option, (&raw const value).cast(), size) };
        if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_the_buffer_only_for_a_peer_on_this_host() {
        assert_eq!(fixed_buffer(true), Some(RECEIVE_BUFFER));
        assert_eq!(fixed_buffer(false), None, "across a network the kernel sizes it");
    }

    /// A connected pair on loopback: the accepted side writes, `reader` reads.
    async fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let reader =
            TcpStream::connect(listener.local_addr().expect("an address")).await.expect("a connection");
        let (writer, _) = listener.accept().expect("the other end");
        (reader, writer)
    }

    #[tokio::test]
    async fn a_drain_takes_every_byte_in_order_and_never_waits() {
        use std::io::Write;
        let (reader, mut writer) = pair().await;
        let side = ReceiveSide::of(&reader, true);
        let mut buf = BytesMut::new();
        assert_eq!(side.drain_into(&mut buf, 1 << 20), 0, "nothing there yet: no wait");
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writing = std::thread::spawn(move || writer.write_all(&sent).map(|()| sent));
        // The writer blocks on a full window until a drain frees it.
        while buf.len() < 3_000_000 {
            side.drain_into(&mut buf, 8 << 20);
            tokio::task::yield_now().await;
        }
        let sent = writing.join().expect("the writer").expect("all written");
        assert_eq!(&buf[..], &sent[..]);
    }

    #[tokio::test]
    async fn a_drain_reads_nothing_once_the_buffer_holds_its_limit() {
        use std::io::Write;
        let (reader, mut writer) = pair().await;
        let side = ReceiveSide::of(&reader, true);
        writer.write_all(&[7u8; 50_000]).expect("written");
        reader.readable().await.expect("readable");
        let mut buf = BytesMut::from(&[1u8; 1_000][..]);
        assert_eq!(side.drain_into(&mut buf, 1_000), 0, "the buffer is at its limit");
        let mut read = 0;
        while read < 50_000 {
            read += side.drain_into(&mut buf, 100_000);
        }
        assert_eq!(buf.len(), 51_000);
    }

    #[tokio::test]
    async fn a_socket_under_tls_is_never_drained() {
        use std::io::Write;
        let (reader, mut writer) = pair().await;
        writer.write_all(b"a TLS record").expect("written");
        let side = ReceiveSide::of(&reader, false);
        let mut buf = BytesMut::new();
        reader.readable().await.expect("readable");
        assert_eq!(side.drain_into(&mut buf, 1 << 20), 0);
        assert!(buf.is_empty(), "the bytes stay for the TLS layer");
    }
}
