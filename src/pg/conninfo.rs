//! Connection settings from a `postgres://` URL.
//!
//! Accepts what libpq users write: `postgres://user:pass@host:port/db?sslmode=..`,
//! percent-encoded parts, and a Unix socket directory as the host (`%2Frun%2Fpostgresql`
//! or `?host=/run/postgresql`). The password is held in a [`Secret`], whose
//! `Debug` and `Display` never show it, and [`ConnInfo`]'s `Display` omits it,
//! so neither can reach a log line or an error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A directory holding the server's socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it, without verifying its certificate (libpq's default).
    Prefer,
    /// TLS or nothing, without verifying the certificate.
    Require,
    /// TLS with the certificate checked against trusted roots and the host name.
    VerifyFull,
}

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// PEM file of trusted roots for `verify-full`; else `~/.postgresql/root.crt`
    /// when present, else the system's roots.
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    pub connect_timeout: Duration,
}

/// The URL could not be used; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnInfoError(String);

const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

impl ConnInfo {
    pub fn parse(text: &str) -> Result<ConnInfo, ConnInfoError> {
        let bad = |what: String| ConnInfoError(what);
        let url = Url::parse(text).map_err(|error| {
            bad(format!(
                "the URL is not a valid URL ({error}): write it as postgres://user:password@host:5432/dbname"
            ))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!(
                "the URL has scheme {:?}, expected postgres://user:password@host:5432/dbname",
                url.scheme()
            )));
        }
        let decode = |part: &str| {
            percent_decode(part).ok_or_else(|| bad("the URL has a malformed %-escape".to_string()))
        };

        let mut user = decode(url.username())?;
        let mut password = url.password().map(decode).transpose()?;
        let mut host_text = url.host_str().map(decode).transpose()?.unwrap_or_default();
        let mut port = url.port();
        let mut dbname = decode(url.path().trim_start_matches('/'))?;
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        let mut application_name = "walpipe".to_string();
        let mut connect_timeout = Duration::from_secs(10);

        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "sslmode" => {
                    sslmode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(bad(format!(
                                "sslmode={other} is not supported: use disable, prefer, require or verify-full"
                            )));
                        }
                    }
                }
                "sslrootcert" => sslrootcert = Some(PathBuf::from(value)),
                "application_name" => application_name = value,
                "connect_timeout" => {
                    let seconds: u64 = value.parse().map_err(|_| {
                        bad(format!("connect_timeout={value} is not a number of seconds: write e.g. connect_timeout=10"))
                    })?;
                    connect_timeout = Duration::from_secs(seconds.max(1));
                }
                "host" => host_text = value,
                "port" => {
                    port = Some(value.parse().map_err(|_| {
                        bad(format!("port={value} is not a port number: write e.g. port=5432"))
                    })?)
                }
                "user" => user = value,
                "password" => password = Some(value),
                "dbname" => dbname = value,
                other => {
                    return Err(bad(format!(
                        "the URL has the unknown parameter {other:?}: remove it (known: sslmode, sslrootcert, application_name, connect_timeout, host, port, user, password, dbname)"
                    )));
                }
            }
        }

        if user.is_empty() {
            user = std::env::var("USER").unwrap_or_else(|_| "postgres".to_string());
        }
        if dbname.is_empty() {
            dbname = user.clone();
        }
        let host = if host_text.is_empty() {
            Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR))
        } else if host_text.starts_with('/') {
            Host::Unix(PathBuf::from(host_text))
        } else {
            Host::Tcp(host_text)
        };
        Ok(ConnInfo {
            host,
            port: port.unwrap_or(5432),
            user,
            password: password.map(Secret::new),
            dbname,
            sslmode,
            sslrootcert,
            application_name,
            connect_timeout,
        })
    }

    /// `host:port`, or the socket path: for messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(host) => format!("{host}:{}", self.port),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), self.port),
        }
    }
}

impl fmt::Display for ConnInfo {
    /// The URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}@{}/{}", self.user, self.target(), self.dbname)
    }
}

/// `%40` to `@` and so on; `None` when an escape is malformed (the
/// `percent-encoding` crate would keep it as text) or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let escapes_are_whole = text
        .split('%')
        .skip(1)
        .all(|after| after.len() >= 2 && after.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit));
    if !escapes_are_whole {
        return None;
    }
    percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|decoded| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let info = ConnInfo::parse("postgres://al%40ice:p%3Ass@db.example:6543/shop?sslmode=verify-full")
            .expect("valid URL");
        assert_eq!(info.host, Host::Tcp("db.example".into()));
        assert_eq!(info.port, 6543);
        assert_eq!(info.user, "al@ice");
        assert_eq!(info.password.as_ref().map(Secret::expose), Some("p:ss"));
        assert_eq!(info.dbname, "shop");
        assert_eq!(info.sslmode, SslMode::VerifyFull);
    }

    #[test]
    fn unix_socket_hosts() {
        let info = ConnInfo::parse("postgres://u@%2Ftmp%2Fpg:5433/db").expect("valid URL");
        assert_eq!(info.host, Host::Unix("/tmp/pg".into()));
        assert_eq!(info.target(), "/tmp/pg/.s.PGSQL.5433");
        let info = ConnInfo::parse("postgresql:///db?host=/run/pg&user=x").expect("valid URL");
        assert_eq!(info.host, Host::Unix("/run/pg".into()));
        assert_eq!(info.user, "x");
        assert_eq!(info.dbname, "db");
    }

    #[test]
    fn never_prints_the_password() {
        let info = ConnInfo::parse("postgres://u:hunter2@h/db").expect("valid URL");
        assert!(!info.to_string().contains("hunter2"));
        assert!(!format!("{info:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in
            ["mysql://h/db", "postgres://h/db?sslmode=verify-ca", "postgres://h/db?bogus=1", "not a url"]
        {
            let error = ConnInfo::parse(bad).expect_err(bad).to_string();
            assert!(error.contains(':'), "{error}");
        }
    }
}
