//! What `WALPIPE_SINK_URL` names (README, "Configuration"): a Postgres database, a
//! webhook, a StarRocks FE, or stdout. Parsing only; no I/O.
//!
//! Invariant: a target's `Display` never shows a password (URLs are shown
//! without their user info), so it may go into logs and errors.

use std::fmt;

use url::Url;

use crate::source::conninfo::{ConnInfo, percent_decode};

#[derive(Clone)]
pub enum SinkTarget {
    Postgres(ConnInfo),
    /// `http(s)://...`: batches are POSTed here.
    Webhook(Url),
    StarRocks(StarRocksTarget),
    /// `stdout:`: change lines on standard output.
    Stdout,
}

/// `starrocks://user:password@fe-host:8030/db`
#[derive(Clone)]
pub struct StarRocksTarget {
    /// `http://fe-host:8030`
    pub frontend: Url,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl fmt::Debug for StarRocksTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StarRocksTarget({self})")
    }
}

impl fmt::Display for StarRocksTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.frontend.host_str().unwrap_or("?");
        let port = self.frontend.port_or_known_default().unwrap_or(8030);
        write!(f, "starrocks://{}@{host}:{port}/{}", self.user, self.database)
    }
}

impl SinkTarget {
    /// Reads a sink URL; the error says what to write instead.
    pub fn parse(text: &str) -> Result<SinkTarget, String> {
        let scheme = text.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => {
                ConnInfo::parse(text).map(SinkTarget::Postgres).map_err(|e| e.to_string())
            }
            "http" | "https" => {
                let url = Url::parse(text).map_err(|e| {
                    format!("{e}: write the webhook as http(s)://host:port/path, e.g. https://hooks.example.com/walpipe")
                })?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err("the webhook URL has no host: write it as http(s)://host:port/path".into());
                }
                Ok(SinkTarget::Webhook(url))
            }
            "starrocks" => StarRocksTarget::parse(text).map(SinkTarget::StarRocks),
            "stdout" => Ok(SinkTarget::Stdout),
            _ => Err(format!(
                "{scheme:?} is not a sink: use postgres://..., http(s)://... (a webhook), starrocks://user:password@fe-host:8030/db or stdout:"
            )),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, SinkTarget::Postgres(_))
    }
}

impl StarRocksTarget {
    fn parse(text: &str) -> Result<StarRocksTarget, String> {
        let example = "write it as starrocks://user:password@fe-host:8030/database";
        let url = Url::parse(text).map_err(|e| format!("{e}: {example}"))?;
        let host =
            url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("no FE host: {example}"))?;
        let database = url.path().trim_matches('/').to_string();
        if database.is_empty() || database.contains('/') {
            return Err(format!("the URL must name one database: {example}"));
        }
        if url.username().is_empty() {
            return Err(format!("the URL has no user: {example}"));
        }
        let decode = |part: &str| {
            percent_decode(part)
                .ok_or_else(|| format!("the user or password is not valid percent-encoding: {example}"))
        };
        let frontend = Url::parse(&format!("http://{host}:{}", url.port().unwrap_or(8030)))
            .map_err(|e| format!("{e}: {example}"))?;
        Ok(StarRocksTarget {
            frontend,
            user: decode(url.username())?,
            password: decode(url.password().unwrap_or(""))?,
            database,
        })
    }
}

/// As `Display`: without passwords, so that a debug print cannot leak one.
impl fmt::Debug for SinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkTarget({self})")
    }
}

impl fmt::Display for SinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkTarget::Postgres(info) => write!(f, "{info}"),
            SinkTarget::Webhook(url) => write!(f, "{}", without_credentials(url)),
            SinkTarget::StarRocks(target) => write!(f, "{target}"),
            SinkTarget::Stdout => f.write_str("stdout:"),
        }
    }
}

/// The URL without user, password and credential-like query values, for messages.
pub fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    crate::secret::redact_url(shown.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_parses_and_hides_its_password() {
        assert!(SinkTarget::parse("postgres://a:b@h/db").expect("pg").is_postgres());
        let hook = SinkTarget::parse("https://u:secret@hooks.example.com/x").expect("hook");
        assert_eq!(hook.to_string(), "https://hooks.example.com/x");
        let Ok(SinkTarget::StarRocks(sr)) = SinkTarget::parse("starrocks://root:p%40ss@fe:8030/analytics")
        else {
            panic!("starrocks");
        };
        assert_eq!(
            (sr.user.as_str(), sr.password.as_str(), sr.database.as_str()),
            ("root", "p@ss", "analytics")
        );
        assert_eq!(sr.frontend.as_str(), "http://fe:8030/");
        assert!(!format!("{sr} {sr:?}").contains("p@ss"));
        assert!(matches!(SinkTarget::parse("stdout:"), Ok(SinkTarget::Stdout)));
    }

    #[test]
    fn bad_urls_say_how_to_write_them() {
        for (url, hint) in [
            ("kafka://broker/topic", "is not a sink"),
            ("starrocks://fe:8030/db", "no user"),
            ("starrocks://root@fe:8030/", "one database"),
            ("http://", "host"),
        ] {
            let error = SinkTarget::parse(url).expect_err(url);
            assert!(error.contains(hint), "{url}: {error}");
        }
    }
}
