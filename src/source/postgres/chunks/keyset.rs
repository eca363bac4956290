//! The chunk queries: keyset pagination over a table's key, the keys of
//! the rows read, and the chunk size that keeps a chunk near its time
//! budget. Pure: no I/O.
//!
//! Invariant: consecutive chunks of a table cover its key space without
//! gap or overlap: a chunk reads the first `limit` rows after the previous
//! chunk's last key, in the source's own key order, and the last chunk is
//! the first one to come back short.

use std::time::Duration;

use super::watch::{Key, push_key_value};
use crate::change::mirror_records::unescape;
use crate::names::{quote_ident, quote_literal};

/// `COPY (SELECT <columns> FROM <table> WHERE (<key>) > (<after>) ORDER BY <key> LIMIT <limit>) TO STDOUT`.
pub fn chunk_query(
    table: &str,
    columns: &str,
    key: &[String],
    after: Option<&[String]>,
    limit: usize,
) -> String {
    let key_list = key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    let filter = match after {
        Some(values) => format!(
            " WHERE ({key_list}) > ({})",
            values.iter().map(|v| quote_literal(v)).collect::<Vec<_>>().join(", ")
        ),
        None => String::new(),
    };
    format!("COPY (SELECT {columns} FROM {table}{filter} ORDER BY {key_list} LIMIT {limit}) TO STDOUT")
}

/// The fields of one COPY text row (still escaped).
pub fn fields(row: &[u8]) -> impl Iterator<Item = &[u8]> {
    row.split(|b| *b == b'\t')
}

/// The key of a COPY text row: the unescaped values at `positions`.
/// `None` if the row is too short or a key value is null.
pub fn row_key(row: &[u8], positions: &[usize]) -> Option<Key> {
    let values: Vec<&[u8]> = fields(row).collect();
    let mut key = Key::with_capacity(32);
    for position in positions {
        push_key_value(&mut key, &unescape(values.get(*position)?)?);
    }
    Some(key)
}

/// The key of a COPY text row as text values, for the progress record.
pub fn row_key_text(row: &[u8], positions: &[usize]) -> Option<Vec<String>> {
    let values: Vec<&[u8]> = fields(row).collect();
    positions
        .iter()
        .map(|position| {
            let value = unescape(values.get(*position)?)?;
            Some(String::from_utf8_lossy(&value).into_owned())
        })
        .collect()
}

/// Rows per chunk: scaled after every chunk towards the time budget,
/// between a floor and a ceiling, and kept under a byte cap (what a chunk
/// holds in memory until the stream reaches it).
#[derive(Debug, Clone)]
pub struct ChunkSizer {
    rows: usize,
    budget: Duration,
    floor: usize,
    ceiling: usize,
    max_bytes: usize,
}

impl ChunkSizer {
    pub fn new(budget: Duration, floor: usize, ceiling: usize, max_bytes: usize) -> ChunkSizer {
        ChunkSizer { rows: floor.max(1), budget, floor: floor.max(1), ceiling: ceiling.max(floor), max_bytes }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// A chunk of `rows` rows and `bytes` bytes took `took`.
    pub fn observe(&mut self, rows: usize, bytes: usize, took: Duration) {
        if rows < self.rows {
            return; // the table's last chunk says nothing about the rate
        }
        let by_time = self.budget.as_secs_f64() / took.as_secs_f64().max(0.001);
        let by_bytes = self.max_bytes as f64 / bytes.max(1) as f64;
        // At most 4x up at once, so one fast chunk cannot overshoot by much.
        let factor = by_time.min(by_bytes).min(4.0);
        self.rows = ((self.rows as f64 * factor) as usize).clamp(self.floor, self.ceiling);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_chunk_has_no_lower_bound_and_later_ones_start_after_the_last_key() {
        let key = ["a".to_string(), "B b".to_string()];
        assert_eq!(
            chunk_query("public.t", "a, \"B b\", c", &key, None, 100),
            "COPY (SELECT a, \"B b\", c FROM public.t ORDER BY \"a\", \"B b\" LIMIT 100) TO STDOUT"
        );
        assert_eq!(
            chunk_query("public.t", "a, c", &key, Some(&["7".into(), "it's".into()]), 5),
            "COPY (SELECT a, c FROM public.t WHERE (\"a\", \"B b\") > ('7', 'it''s') ORDER BY \"a\", \"B b\" LIMIT 5) TO STDOUT"
        );
    }

    #[test]
    fn keys_are_read_unescaped_in_key_order() {
        let row = b"1\tx\\ty\t\\N";
        assert_eq!(row_key_text(row, &[1, 0]), Some(vec!["x\ty".to_string(), "1".to_string()]));
        let mut expected = Key::new();
        push_key_value(&mut expected, b"x\ty");
        push_key_value(&mut expected, b"1");
        assert_eq!(row_key(row, &[1, 0]), Some(expected));
        assert_eq!(row_key(row, &[2]), None, "null");
        assert_eq!(row_key(row, &[5]), None, "short");
    }

    #[test]
    fn the_size_follows_the_time_budget_within_its_bounds() {
        let mut sizer = ChunkSizer::new(Duration::from_secs(1), 1_000, 100_000, 1 << 30);
        sizer.observe(1_000, 100_000, Duration::from_millis(100));
        assert_eq!(sizer.rows(), 4_000, "at most 4x at once");
        sizer.observe(4_000, 400_000, Duration::from_millis(500));
        assert_eq!(sizer.rows(), 8_000);
        sizer.observe(8_000, 800_000, Duration::from_secs(4));
        assert_eq!(sizer.rows(), 2_000);
        sizer.observe(2_000, 200_000, Duration::from_secs(100));
        assert_eq!(sizer.rows(), 1_000, "floor");
        for _ in 0..10 {
            let rows = sizer.rows();
            sizer.observe(rows, rows * 100, Duration::from_millis(1));
        }
        assert_eq!(sizer.rows(), 100_000, "ceiling");
        sizer.observe(10, 1000, Duration::from_millis(1));
        assert_eq!(sizer.rows(), 100_000, "a short last chunk changes nothing");
    }

    #[test]
    fn the_size_stays_under_the_byte_cap() {
        let mut sizer = ChunkSizer::new(Duration::from_secs(1), 100, 1_000_000, 1_000_000);
        sizer.observe(100, 100_000, Duration::from_millis(10));
        assert_eq!(sizer.rows(), 400);
        sizer.observe(400, 4_000_000, Duration::from_millis(10));
        assert_eq!(sizer.rows(), 100);
    }
}
