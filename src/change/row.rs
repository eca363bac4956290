//! A row as a source sent it, in the form every source maps its own into:
//! each column's value in its text form (or binary, or null), in the
//! order of the table's shape ([`super::relation::Table`]); a value the
//! source did not send because it did not change (PostgreSQL's unchanged
//! TOAST, a binlog's minimal row image) is [`Column::Unchanged`], and a
//! sink keeps what it has for it.
//!
//! Values stay as slices of the received buffer (`Bytes`): decoding a row
//! copies no value.

use bytes::Bytes;

/// A row as the source sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple(pub Vec<Column>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Null,
    /// A value that did not change and was not sent.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

/// The old row of an update or delete: only its key columns (the other
/// columns are null), or the whole row (PostgreSQL: REPLICA IDENTITY FULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    Key(Tuple),
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

/// A message an application wrote into the change stream (PostgreSQL's
/// `pg_logical_emit_message`): a prefix that names it, and its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppMessage<'a> {
    pub prefix: &'a str,
    pub content: &'a [u8],
    /// Written as part of a transaction (otherwise on its own, at once).
    pub transactional: bool,
}
