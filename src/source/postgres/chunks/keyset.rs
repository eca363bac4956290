//! The chunk query: keyset pagination over a table's key. Pure: no I/O.
//!
//! Invariant: consecutive chunks of a table cover its key space without
//! gap or overlap: a chunk reads the first `limit` rows after the previous
//! chunk's last key, in the source's own key order, and the last chunk is
//! the first one to come back short.

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
}
