//! The byte stream under a source connection: TCP, Unix socket, or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::conninfo::{ConnInfo, Host, SslMode};
use super::error::SourceError;
use super::receive_side::ReceiveSide;
use super::tls;

pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// Opens the stream and negotiates TLS as `sslmode` asks.
    pub async fn connect(info: &ConnInfo) -> Result<Transport, SourceError> {
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
        let mut tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), info.port)))
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
            Transport::Tcp(stream) => Some(ReceiveSide::of(stream)),
            Transport::Tls(stream) => Some(ReceiveSide::of(stream.get_ref().0)),
            Transport::Unix(_) => None,
        }
    }
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
