//! The stream's side of the watermark rule: the keys of the tables being
//! copied that transactions changed between a chunk's low and high
//! watermarks, and the tables a DDL statement named there (the rule is in
//! the module above). Pure: no I/O.
//!
//! Invariants:
//! - Only one window is open at a time: the copier writes a chunk's high
//!   watermark before the next chunk's low one, on one session, so they
//!   reach the binlog in that order.
//! - A key is noted when its transaction commits (the stream holds a
//!   transaction's rows until then), so a rolled-back change never costs a
//!   chunk row.
//! - Keys are compared in one text form whichever side they come from
//!   ([`canonical`]): a query and the binlog write a temporal value's
//!   fraction and zone differently.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::super::types::Format;
use crate::chunked::keys::Key;

/// What the window says about a chunk of one table.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The keys changed in the window: the stream has their newer versions.
    Stale(HashSet<Key>),
    /// A DDL statement named the table in the window: the chunk may have
    /// another shape than the rows around it, so it is read again.
    Altered,
}

#[derive(Debug, Default)]
pub struct Window {
    /// `schema.name` of the tables whose copy is not finished.
    copying: HashSet<String>,
    /// The token of the chunk whose low watermark was seen last.
    open: Option<String>,
    changed: HashMap<String, HashSet<Key>>,
    altered: HashSet<String>,
}

impl Window {
    pub fn new(copying: impl IntoIterator<Item = String>) -> Window {
        Window { copying: copying.into_iter().collect(), ..Window::default() }
    }

    /// Whether a window is open: only then is any change noted.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether a change of `table` now must be noted.
    pub fn watches(&self, table: &str) -> bool {
        self.open.is_some() && self.copying.contains(table)
    }

    /// The low watermark of chunk `token` committed.
    pub fn low(&mut self, token: &str) {
        self.open = Some(token.to_string());
        self.changed.clear();
        self.altered.clear();
    }

    /// A committed transaction changed the row of `table` with `key`.
    pub fn changed(&mut self, table: &str, key: Key) {
        if self.watches(table) {
            self.changed.entry(table.to_string()).or_default().insert(key);
        }
    }

    /// A DDL statement committed: the tables being copied that it names
    /// (by their name as a word, in any case) are altered.
    pub fn ddl(&mut self, statement: &str) {
        if self.open.is_none() {
            return;
        }
        let statement = statement.to_lowercase();
        for table in &self.copying {
            let name = table.rsplit('.').next().unwrap_or(table).to_lowercase();
            if names(&statement, &name) {
                self.altered.insert(table.clone());
            }
        }
    }

    /// The high watermark of chunk `token` of `table` committed; `None`
    /// when its low watermark was not seen (the stream started after it).
    pub fn high(&mut self, token: &str, table: &str) -> Option<Closed> {
        if self.open.as_deref() != Some(token) {
            return None;
        }
        self.open = None;
        if self.altered.remove(table) {
            return Some(Closed::Altered);
        }
        Some(Closed::Stale(self.changed.remove(table).unwrap_or_default()))
    }

    /// The table's copy is done: its changes no longer matter.
    pub fn done(&mut self, table: &str) {
        self.copying.remove(table);
    }
}

/// Whether `statement` has `name` as a whole identifier.
fn names(statement: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    statement.match_indices(name).any(|(at, _)| {
        let before = statement[..at].chars().next_back();
        let after = statement[at + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// A key column's value in the one form both sides compare: a temporal
/// value without its zone (`+00`) and without trailing zeros in its fraction.
pub fn canonical<'a>(format: &Format, text: &'a [u8]) -> Cow<'a, [u8]> {
    if !matches!(format, Format::DateTime | Format::Timestamp | Format::Time) {
        return Cow::Borrowed(text);
    }
    let text = text.strip_suffix(b"+00").unwrap_or(text);
    let Some(dot) = text.iter().position(|b| *b == b'.') else { return Cow::Borrowed(text) };
    let fraction = &text[dot + 1..];
    let kept = fraction.iter().rposition(|b| *b != b'0').map_or(0, |last| last + 1);
    let end = if kept == 0 { dot } else { dot + 1 + kept };
    Cow::Borrowed(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Key {
        crate::chunked::keys::text_key(value)
    }

    #[test]
    fn only_keys_changed_between_the_watermarks_are_stale() {
        let mut window = Window::new(["shop.orders".to_string()]);
        window.changed("shop.orders", key("1"));
        window.low("run/1");
        window.changed("shop.orders", key("2"));
        window.changed("shop.other", key("3"));
        assert_eq!(window.high("run/1", "shop.orders"), Some(Closed::Stale(HashSet::from([key("2")]))));
        window.changed("shop.orders", key("4"));
        window.low("run/2");
        assert_eq!(window.high("run/2", "shop.orders"), Some(Closed::Stale(HashSet::new())));
    }

    #[test]
    fn a_high_watermark_without_its_low_one_closes_nothing() {
        let mut window = Window::new(["shop.orders".to_string()]);
        assert_eq!(window.high("run/1", "shop.orders"), None);
        window.low("run/1");
        assert_eq!(window.high("run/2", "shop.orders"), None);
    }

    #[test]
    fn a_ddl_naming_the_table_in_the_window_alters_its_chunk() {
        let mut window = Window::new(["shop.orders".to_string(), "shop.items".to_string()]);
        window.ddl("ALTER TABLE orders ADD COLUMN x int");
        window.low("run/1");
        window.ddl("ALTER TABLE `shop`.`Orders` ADD COLUMN y int");
        window.ddl("CREATE TABLE orders_archive (id int)");
        assert_eq!(window.high("run/1", "shop.orders"), Some(Closed::Altered));
        window.low("run/2");
        assert_eq!(window.high("run/2", "shop.items"), Some(Closed::Stale(HashSet::new())));
    }

    #[test]
    fn temporal_keys_compare_without_zone_and_trailing_zeros() {
        let both = |format: Format, binlog: &str, query: &str| {
            assert_eq!(canonical(&format, binlog.as_bytes()), canonical(&format, query.as_bytes()))
        };
        both(Format::DateTime, "2024-01-02 03:04:05.000000", "2024-01-02 03:04:05");
        both(Format::Timestamp, "2024-01-02 03:04:05.120000+00", "2024-01-02 03:04:05.12+00");
        both(Format::Time, "-838:59:59.000000", "-838:59:59");
        assert_eq!(&canonical(&Format::Text, b"a.500")[..], b"a.500");
        assert_eq!(&canonical(&Format::Date, b"2024-01-02")[..], b"2024-01-02");
    }
}
