//! `starrocks://user:password@fe-host:8030/db`: the FE to load through
//! and the database. Parsing only; no I/O.
//!
//! Invariant: `Display` and `Debug` never show the password.

use std::fmt;

use url::Url;

use crate::pg::conninfo::percent_decode;

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

impl StarRocksTarget {
    pub fn parse(text: &str) -> Result<StarRocksTarget, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_gives_user_password_database_and_hides_the_password() {
        let sr = StarRocksTarget::parse("starrocks://root:p%40ss@fe:8030/analytics").expect("starrocks");
        assert_eq!(
            (sr.user.as_str(), sr.password.as_str(), sr.database.as_str()),
            ("root", "p@ss", "analytics")
        );
        assert_eq!(sr.frontend.as_str(), "http://fe:8030/");
        assert!(!format!("{sr} {sr:?}").contains("p@ss"));
    }

    #[test]
    fn bad_urls_say_how_to_write_them() {
        for (url, hint) in
            [("starrocks://fe:8030/db", "no user"), ("starrocks://root@fe:8030/", "one database")]
        {
            let error = StarRocksTarget::parse(url).expect_err(url);
            assert!(error.contains(hint), "{url}: {error}");
        }
    }
}
