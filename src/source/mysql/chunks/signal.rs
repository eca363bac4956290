//! The signal table: where the chunked copy writes its watermarks, so that
//! they reach the binlog in order with the changes around them.
//!
//! ```text
//!  CREATE TABLE IF NOT EXISTS <db>.walpipe_signal (job VARCHAR(190) PRIMARY KEY, watermark VARCHAR(190))
//!  INSERT ... ON DUPLICATE KEY UPDATE watermark = '<run>/<sequence>/low'    (autocommit: a transaction of its own)
//! ```
//!
//! One row per job, overwritten by every watermark, so the table never
//! grows. The stream reads the watermark from the row's new image by the
//! column's name. The table is never captured, and `walpipe tail` does not
//! show it.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// The signal table's name, in the source URL's database.
pub const SIGNAL_TABLE: &str = "walpipe_signal";
/// The column the stream reads a watermark from.
pub const WATERMARK_COLUMN: &str = "watermark";

/// Which side of a chunk's read a watermark is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Written before the chunk's query.
    Low,
    /// Written after it: the chunk is placed here.
    High,
}

/// A watermark as written: `<run>/<sequence>/low` or `.../high`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// `<run>/<sequence>`: names the chunk (its `token`).
    pub token: String,
    pub edge: Edge,
}

impl Watermark {
    pub fn new(token: &str, edge: Edge) -> Watermark {
        Watermark { token: token.to_string(), edge }
    }

    pub fn text(&self) -> String {
        let edge = match self.edge {
            Edge::Low => "low",
            Edge::High => "high",
        };
        format!("{}/{edge}", self.token)
    }

    /// Reads a watermark's text; `None` for anything else.
    pub fn parse(text: &str) -> Option<Watermark> {
        let (token, edge) = text.rsplit_once('/')?;
        let edge = match edge {
            "low" => Edge::Low,
            "high" => Edge::High,
            _ => return None,
        };
        Some(Watermark { token: token.to_string(), edge })
    }
}

/// The signal table where the copy of `database`'s tables writes.
pub struct Signal {
    database: String,
    job: String,
}

impl Signal {
    pub fn new(database: &str, job: &str) -> Signal {
        Signal { database: database.to_string(), job: job.to_string() }
    }

    fn table(&self) -> String {
        format!("`{}`.`{SIGNAL_TABLE}`", self.database.replace('`', "``"))
    }

    /// Creates the table if it is missing.
    pub async fn ensure(&self, conn: &mut Conn) -> Result<(), mysql_async::Error> {
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (job VARCHAR(190) NOT NULL PRIMARY KEY, {WATERMARK_COLUMN} VARCHAR(190) NOT NULL) ENGINE=InnoDB",
            self.table()
        ))
        .await
    }

    /// Writes `watermark` in a transaction of its own: once this returns,
    /// it is in the binlog, after every transaction that committed before.
    pub async fn write(&self, conn: &mut Conn, watermark: &Watermark) -> Result<(), mysql_async::Error> {
        conn.exec_drop(
            format!(
                "INSERT INTO {} (job, {WATERMARK_COLUMN}) VALUES (?, ?) ON DUPLICATE KEY UPDATE {WATERMARK_COLUMN} = VALUES({WATERMARK_COLUMN})",
                self.table()
            ),
            (&self.job, watermark.text()),
        )
        .await
    }
}

/// Whether the user may write the signal table in `database` (`walpipe check`).
pub async fn signal_grants(conn: &mut Conn, database: &str) -> Result<String, String> {
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|error| format!("could not read the user's grants: {error}"))?;
    check_grants(&grants, database)
}

/// Whether `SHOW GRANTS` gives the user what the signal table needs in
/// `database`: `Ok` says so, `Err` is the fix.
pub fn check_grants(grants: &[String], database: &str) -> Result<String, String> {
    let on_database = format!(" ON `{}`.*", database.replace('`', "``")).to_uppercase();
    let covers = |grant: &String, privilege: &str| {
        let grant = grant.to_uppercase();
        let scoped = grant.contains(" ON *.*") || grant.contains(&on_database);
        scoped && (grant.contains("ALL PRIVILEGES") || grant.contains(privilege))
    };
    let missing: Vec<&str> = ["CREATE", "INSERT", "UPDATE"]
        .into_iter()
        .filter(|privilege| !grants.iter().any(|grant| covers(grant, privilege)))
        .collect();
    if missing.is_empty() {
        Ok(format!("the user can write the chunked copy's watermarks ({database}.{SIGNAL_TABLE})"))
    } else {
        Err(format!(
            "the user lacks {} on {database}, which the chunked copy needs for its signal table {SIGNAL_TABLE}: run GRANT CREATE, INSERT, UPDATE ON `{database}`.* TO the walpipe user, or set WALPIPE_SNAPSHOT_STRATEGY=exported (the blocking snapshot)",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_reads_back_as_written() {
        for edge in [Edge::Low, Edge::High] {
            let mark = Watermark::new("1f-2a/7", edge);
            assert_eq!(Watermark::parse(&mark.text()), Some(mark));
        }
        assert_eq!(Watermark::parse("1f-2a/7"), None);
        assert_eq!(Watermark::parse("something else"), None);
    }

    #[test]
    fn the_signal_table_needs_create_insert_and_update_on_its_database() {
        let grants = |list: &[&str]| list.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        assert!(
            check_grants(&grants(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"]), "shop").is_ok()
        );
        assert!(
            check_grants(&grants(&["GRANT SELECT, INSERT, UPDATE, CREATE ON `shop`.* TO `cdc`@`%`"]), "shop")
                .is_ok()
        );
        let fix = check_grants(&grants(&["GRANT SELECT, INSERT ON `shop`.* TO `cdc`@`%`"]), "shop")
            .expect_err("a fix");
        assert!(fix.contains("lacks CREATE, UPDATE on shop") && fix.contains("GRANT"), "{fix}");
        assert!(check_grants(&grants(&["GRANT ALL PRIVILEGES ON `other`.* TO `cdc`@`%`"]), "shop").is_err());
    }
}
