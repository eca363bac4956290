//! A TCP socket's receive low-water mark (`SO_RCVLOWAT`): how many bytes
//! the kernel gathers before it reports the socket readable, and so before
//! it wakes a reader waiting in `epoll`.
//!
//! Invariants:
//! - Setting the mark makes the kernel check readiness again (Linux's
//!   `tcp_set_rcvlowat`), so lowering it wakes a waiting reader at once if
//!   bytes are there: no byte waits longer than the caller's own timer.
//! - A read never waits for the mark: on a non-blocking socket it returns
//!   what is there.
//!
//! One of walpipe's two `unsafe` blocks (the other is `cli::malloc_tuning`): a
//! `setsockopt` with an `int`, which neither `socket2` nor `rustix` offers for this option.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::TcpStream;

/// The low-water mark of one connection's socket. Held by the
/// [`Connection`](super::Connection) whose transport owns the socket, so
/// the descriptor is open for as long as this is.
#[derive(Debug)]
pub struct ReceiveLowWater {
    fd: RawFd,
}

impl ReceiveLowWater {
    pub(super) fn of(stream: &TcpStream) -> ReceiveLowWater {
        ReceiveLowWater { fd: stream.as_raw_fd() }
    }

    /// The socket is reported readable once `bytes` (at least one) are there.
    #[allow(unsafe_code)]
    pub fn set(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
        let size = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
        // SAFETY: `fd` is the open socket of the connection holding `self`;
        // the kernel reads `size` bytes of `value`, a live local, during the
        // call only.
        let result = unsafe {
            libc::setsockopt(self.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, (&raw const value).cast(), size)
        };
        if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }
}
