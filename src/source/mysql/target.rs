//! What `WALPIPE_SOURCE_URL=mysql://user:password@host:3306/db` (or
//! `mariadb://`) names. Its `Display` shows no password.

use std::fmt;

use mysql_async::prelude::Queryable;

/// A parsed MySQL/MariaDB source URL.
#[derive(Clone)]
pub struct MysqlTarget {
    pub opts: mysql_async::Opts,
    /// The database whose tables are captured when no table list is given.
    pub database: String,
}

impl MysqlTarget {
    pub fn parse(url: &str) -> Result<MysqlTarget, String> {
        let (_, rest) = url
            .split_once("://")
            .ok_or("the URL is not a valid URL: write it as mysql://user:password@host:3306/db")?;
        let opts = mysql_async::Opts::from_url(&format!("mysql://{rest}")).map_err(|e| {
            format!("the URL is not a valid MySQL URL ({e}): write it as mysql://user:password@host:3306/db")
        })?;
        let database = opts
            .db_name()
            .filter(|db| !db.is_empty())
            .ok_or("the URL names no database: write it as mysql://user:password@host:3306/db")?
            .to_string();
        Ok(MysqlTarget { opts, database })
    }

    /// A session with the settings every walpipe session uses: UTC, so
    /// that `TIMESTAMP` values read as text are in UTC; utf8mb4, so that
    /// text is read as stored (a 3-byte utf8 session turns an emoji into
    /// `?`); and backslash escapes on, which quoted literals rely on.
    pub async fn connect(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        let mut conn = mysql_async::Conn::new(self.opts.clone()).await?;
        conn.query_drop(
            "SET time_zone = '+00:00', NAMES utf8mb4, sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
        )
        .await?;
        Ok(conn)
    }
}

impl fmt::Display for MysqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.opts.user().unwrap_or("");
        write!(f, "mysql://{user}@{}:{}/{}", self.opts.ip_or_hostname(), self.opts.tcp_port(), self.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_read_and_shown_without_its_password() {
        let target = MysqlTarget::parse("mariadb://cdc:s3cret@db.example:3307/shop").expect("a MySQL URL");
        assert_eq!(target.to_string(), "mysql://cdc@db.example:3307/shop");
        assert_eq!(target.opts.pass(), Some("s3cret"));
        let error = MysqlTarget::parse("mysql://cdc@db.example:3307").err().unwrap_or_default();
        assert!(error.contains("names no database"), "{error}");
    }
}
