//! Plain SQL connections (released `tokio-postgres`) to any PostgreSQL that
//! walpipe talks to: the source's catalog and snapshot, the Postgres sink,
//! the state store. Same URL rules and TLS as the replication connection.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres::config::SslMode as PgSslMode;

use super::conninfo::{ConnInfo, Host, SslMode};
use super::tls;

/// A failure to open a SQL connection: the sentence names the target.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Tls(String),
    #[error("could not connect to {what} at {target}: {}", describe(.source))]
    Postgres { what: &'static str, target: String, source: tokio_postgres::Error },
}

impl ConnectError {
    /// Whether trying again later may succeed (the server is down or unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Tls(_) => false,
            ConnectError::Postgres { source, .. } => is_transient(source),
        }
    }
}

/// The whole of a SQL error for a message: the server's text with its
/// detail, hint and SQLSTATE, or the I/O cause (the driver's own Display
/// says only "db error" or "error connecting to server").
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; {hint}"));
        }
        return format!("{text} [SQLSTATE {}]", db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Whether a SQL error is worth retrying: the connection broke or the
/// server is starting, shutting down or out of resources.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        Some(code) => is_transient_sqlstate(code.code()),
        // No SQLSTATE: an I/O error or a closed connection.
        None => true,
    }
}

/// Whether a SQL error is a timeout: a connect or socket timeout (an I/O
/// error of kind `TimedOut` among its causes), or a statement cancelled by
/// `statement_timeout` (57014).
pub fn is_timeout(error: &tokio_postgres::Error) -> bool {
    if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        return true;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        if inner.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// The one list of SQLSTATEs worth retrying, for SQL sessions and the
/// replication connection alike: connection exceptions (class 08),
/// insufficient resources (53), the server shutting down, crashed or not
/// yet up (57P01-03), an idle session timed out (57P05), serialization
/// failures and deadlocks (40001, 40P01), and an object in use (55006: the
/// slot is still held by a walsender that is going away). Everything else,
/// a dropped database (57P04) included, needs a person.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "57P05" | "40001" | "40P01" | "55006")
}

/// Opens a transaction without a round trip of its own: `BEGIN` is queued
/// on the connection, and the server answers it just ahead of the next
/// statement, whose answer is awaited. `tokio-postgres` queues a request
/// when its future is first polled, and drops the answer of a request
/// nobody waits for. `BEGIN` outside a transaction cannot fail; a
/// connection already closed fails here, one that breaks later fails the
/// next statement. Call it only with no transaction open: inside one,
/// `BEGIN` is a warning, and nothing would be opened.
pub fn queue_begin(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    use futures_util::FutureExt;
    // The only poll: it queues the request. Its answer cannot have come
    // yet, so only a refusal to queue it (a closed connection) completes it.
    client.batch_execute("BEGIN").now_or_never().unwrap_or(Ok(()))
}

/// `COPY ... FROM STDIN` (the prepared `statement`) of `rows`, COPY text
/// or binary as the statement says.
pub async fn copy_rows(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    rows: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::SinkExt;
    let writer = client.copy_in::<_, bytes::Bytes>(statement).await?;
    futures_util::pin_mut!(writer);
    writer.send(bytes::Bytes::from(rows)).await?;
    writer.finish().await.map(drop)
}

/// Connects; `what` names the database in messages ("the source", "the sink").
pub async fn connect(info: &ConnInfo, what: &'static str) -> Result<tokio_postgres::Client, ConnectError> {
    open(info, what, None).await
}

/// Connects and `LISTEN`s on `channel`: each notification's payload goes to
/// `payloads` (a full queue drops it: listeners poll as a fallback). The
/// sender is dropped when the connection ends. Keep the client: dropping
/// it ends the connection.
pub async fn listen(
    info: &ConnInfo,
    what: &'static str,
    channel: &str,
    payloads: mpsc::Sender<String>,
) -> Result<tokio_postgres::Client, ConnectError> {
    let client = open(info, what, Some(payloads)).await?;
    client
        .batch_execute(&format!("LISTEN {}", crate::names::quote_ident(channel)))
        .await
        .map_err(|source| ConnectError::Postgres { what, target: info.target(), source })?;
    Ok(client)
}

async fn open(
    info: &ConnInfo,
    what: &'static str,
    payloads: Option<mpsc::Sender<String>>,
) -> Result<tokio_postgres::Client, ConnectError> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&info.user)
        .dbname(&info.dbname)
        .port(info.port)
        .application_name(&info.application_name)
        .connect_timeout(info.connect_timeout)
        .options(
            "-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3 -c lc_monetary=C",
        );
    if let Some(password) = &info.password {
        config.password(password.expose());
    }
    match &info.host {
        Host::Tcp(host) => config.host(host),
        Host::Unix(dir) => config.host_path(dir),
    };
    let fail = |source| ConnectError::Postgres { what, target: info.target(), source };
    let client = if info.sslmode == SslMode::Disable || matches!(info.host, Host::Unix(_)) {
        config.ssl_mode(PgSslMode::Disable);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(fail)?;
        tokio::spawn(drive(connection, what, payloads));
        client
    } else {
        config.ssl_mode(if info.sslmode == SslMode::Prefer { PgSslMode::Prefer } else { PgSslMode::Require });
        let tls_config =
            tls::client_config(info.sslmode, info.sslrootcert.as_deref()).map_err(ConnectError::Tls)?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls_config).clone());
        let (client, connection) = config.connect(tls).await.map_err(fail)?;
        tokio::spawn(drive(connection, what, payloads));
        client
    };
    Ok(client)
}

/// Runs the connection until it ends, passing notifications on.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    what: &'static str,
    payloads: Option<mpsc::Sender<String>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                if let Some(payloads) = &payloads {
                    let _ = payloads.try_send(notification.payload().to_string());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!("the SQL connection to {what} ended: {error}");
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient_sqlstate;

    #[test]
    fn the_transient_sqlstates_are_one_list() {
        for code in ["08006", "08P01", "53300", "57P01", "57P02", "57P03", "57P05", "40001", "40P01", "55006"]
        {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["57P04", "42P01", "42501", "23505", "22P02", "55000"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }
}
