//! A TCP socket's receive side: its low-water mark (`SO_RCVLOWAT`, how
//! many bytes the kernel gathers before it reports the socket readable, and
//! so before it wakes a reader waiting in `epoll`), its receive buffer
//! (`SO_RCVBUF`), and whether the peer is on this host (a loopback address).
//!
//! Invariants:
//! - Setting the mark makes the kernel check readiness again (Linux's
//!   `tcp_set_rcvlowat`), so lowering it wakes a waiting reader at once if
//!   bytes are there: no byte waits longer than the caller's own timer.
//! - A read never waits for the mark: on a non-blocking socket it returns
//!   what is there.
//! - A fixed receive buffer stays fixed for the connection's life (the
//!   kernel stops sizing it), and bounds the bytes in flight. It is fixed
//!   only for a peer on this host, where the round trip is tens of
//!   microseconds and [`RECEIVE_BUFFER`] carries far more than a walsender
//!   sends. Across a network the kernel sizes it, as it must to keep a
//!   distant link full (a fixed 256 KiB over 50 ms would cap a stream at
//!   5 MB/s). Why a replication socket wants it: `source::postgres::read_pacing`.
//!
//! With `cli::malloc_tuning`, the only `unsafe` code in walpipe:
//! `setsockopt` with an `int`, which neither `socket2` nor `rustix` offers
//! for `SO_RCVLOWAT`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::TcpStream;

/// The receive buffer fixed for a peer on this host (the kernel doubles it).
pub const RECEIVE_BUFFER: usize = 256 * 1024;

/// The receive buffer to fix: [`RECEIVE_BUFFER`] for a peer on this host,
/// else none (the kernel sizes it).
pub fn fixed_buffer(peer_on_this_host: bool) -> Option<usize> {
    peer_on_this_host.then_some(RECEIVE_BUFFER)
}

/// The receive side of one connection's socket. Held by the
/// [`Connection`](super::Connection) whose transport owns the socket, so
/// the descriptor is open for as long as this is.
#[derive(Debug)]
pub struct ReceiveSide {
    fd: RawFd,
    peer_on_this_host: bool,
}

impl ReceiveSide {
    pub(super) fn of(stream: &TcpStream) -> ReceiveSide {
        let peer_on_this_host = stream.peer_addr().is_ok_and(|peer| peer.ip().is_loopback());
        ReceiveSide { fd: stream.as_raw_fd(), peer_on_this_host }
    }

    /// Fixes the receive buffer if the peer's address is a loopback one
    /// (127.0.0.0/8, ::1): see [`fixed_buffer`]. Returns the bytes fixed.
    pub fn fix_buffer_if_peer_on_this_host(&self) -> io::Result<Option<usize>> {
        let Some(bytes) = fixed_buffer(self.peer_on_this_host) else { return Ok(None) };
        self.set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes).map(|()| Some(bytes))
    }

    /// The socket is reported readable once `bytes` (at least one) are there.
    pub fn set_low_water(&self, bytes: usize) -> io::Result<()> {
        self.set_int(libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes.max(1))
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
}
