//! The byte stream under a source connection: TCP, Unix socket, or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::conninfo::{ConnInfo, Host, SslMode};
use super::error::SourceError;
use super::receive_side::{self, ReceiveSide};
use super::tls;

pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// Opens the stream and negotiates TLS as `sslmode` asks. With
    /// `fix_receive_buffer`, a TCP socket to a peer on this host gets its
    /// receive buffer fixed before it connects ([`receive_side::fixed_buffer`]).
    pub async fn connect(info: &ConnInfo, fix_receive_buffer: bool) -> Result<Transport, SourceError> {
        let target = info.target();
        let timeout = info.connect_timeout;
        let timed_out = || SourceError::ConnectTimeout { target: target.clone(), seconds: timeout.as_secs() };
        let host = match &info.host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", info.port));
                let stream = tokio::time::timeout(timeout, UnixStream::connect(&path))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|source| SourceError::Connect { target: target.clone(), source })?;
                // libpq does not use TLS over Unix sockets either.
                return Ok(Transport::Unix(stream));
            }
            Host::Tcp(host) => host,
        };
        let mut tcp = tokio::time::timeout(timeout, connect_tcp(host, info.port, fix_receive_buffer))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| SourceError::Connect { target: target.clone(), source })?;
        tcp.set_nodelay(true)?;
        if info.sslmode == SslMode::Disable {
            return Ok(Transport::Tcp(tcp));
        }

        // SSLRequest: length 8, code 80877103; the server answers one byte.
        let mut request = BytesMut::with_capacity(8);
        request.put_i32(8);
        request.put_i32(80_877_103);
        tcp.write_all(&request).await?;
        let answer = tokio::time::timeout(timeout, tcp.read_u8()).await.map_err(|_| timed_out())??;
        match (answer, info.sslmode) {
            (b'S', mode) => {
                let config =
                    tls::client_config(mode, info.sslrootcert.as_deref()).map_err(SourceError::TlsConfig)?;
                let name = ServerName::try_from(host.clone()).map_err(|error| SourceError::Tls {
                    target: target.clone(),
                    message: error.to_string(),
                })?;
                let stream = tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|error| SourceError::Tls {
                        target: target.clone(),
                        message: error.to_string(),
                    })?;
                Ok(Transport::Tls(Box::new(stream)))
            }
            (b'N', SslMode::Prefer) => Ok(Transport::Tcp(tcp)),
            (b'N', mode) => Err(SourceError::TlsRefused {
                target,
                mode: if mode == SslMode::Require { "require" } else { "verify-full" },
            }),
            (other, _) => Err(SourceError::Protocol(format!("answer {other:#x} to an SSLRequest"))),
        }
    }

    /// The socket's receive side (low-water mark, buffer, round trip): TCP
    /// only (a Unix socket reports every write readable whatever the mark).
    pub fn receive_side(&self) -> Option<ReceiveSide> {
        match self {
            Transport::Tcp(stream) => Some(ReceiveSide::of(stream, true)),
            Transport::Tls(stream) => Some(ReceiveSide::of(stream.get_ref().0, false)),
            Transport::Unix(_) => None,
        }
    }
}

/// Connects to the first of `host`'s addresses that answers, as
/// `TcpStream::connect` does; with `fix_receive_buffer`, a socket to a
/// loopback address gets its receive buffer fixed first.
async fn connect_tcp(host: &str, port: u16, fix_receive_buffer: bool) -> io::Result<TcpStream> {
    let mut last_error = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        let fixed = receive_side::fixed_buffer(address.ip().is_loopback()).filter(|_| fix_receive_buffer);
        if let Some(bytes) = fixed {
            // The kernel's own sizing still works, only the walsender pays more.
            match socket.set_recv_buffer_size(bytes) {
                Ok(()) => tracing::debug!(
                    bytes,
                    "the replication socket's receive buffer is fixed: the source is on this host"
                ),
                Err(error) => {
                    tracing::debug!(%error, "the replication socket's receive buffer could not be fixed")
                }
            }
        }
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"))))
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receive buffer the kernel gave a connected socket.
    fn receive_buffer(stream: TcpStream) -> u32 {
        let socket = TcpSocket::from_std_stream(stream.into_std().expect("a std stream"));
        socket.recv_buffer_size().expect("SO_RCVBUF")
    }

    #[tokio::test]
    async fn a_replication_socket_to_this_host_has_its_buffer_fixed_before_it_connects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        let fixed = connect_tcp("127.0.0.1", port, true).await.expect("connected");
        // Linux doubles what was asked, for its bookkeeping.
        assert_eq!(receive_buffer(fixed), 2 * receive_side::RECEIVE_BUFFER);
        let sized = connect_tcp("127.0.0.1", port, false).await.expect("connected");
        assert_ne!(
            receive_buffer(sized),
            2 * receive_side::RECEIVE_BUFFER,
            "an ordinary session keeps the kernel's"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_the_error_of_the_last_address_tried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        drop(listener);
        let error = connect_tcp("127.0.0.1", port, true).await.expect_err("nothing listens");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
