//! A row's key as the chunked copies compare it: its key columns' text
//! values, read from a change (the stream) or from COPY text (a chunk).
//! Pure: no I/O.
//!
//! Invariant: the same values give the same key whichever side they come
//! from: each value is length-prefixed, so no two keys run together.

use crate::change::mirror_records::unescape;

/// A row's key: its key columns' text values, each with its length in front.
pub type Key = Vec<u8>;

/// Appends one key column's text value to `key`.
pub fn push_key_value(key: &mut Key, value: &[u8]) {
    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
    key.extend_from_slice(value);
}

/// The key of one text value (the unit tests' keys).
#[cfg(test)]
pub(crate) fn text_key(value: &str) -> Key {
    let mut key = Key::new();
    push_key_value(&mut key, value.as_bytes());
    key
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
