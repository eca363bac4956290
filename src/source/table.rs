//! A captured table as the source's catalog describes it: its columns, as
//! a Postgres destination would declare them, its key, and what identifies
//! it and its columns across renames. Each source reads its catalog into
//! it; the sinks create and follow their destinations from it.
//!
//! A change stream names a table's columns, not what became of them: a
//! rename looks like a drop and an add. A sink that follows shapes asks
//! the source's [`ColumnHistory`], which keeps a column's id across renames.

use super::BoxFuture;
use crate::change::value::ValueKind;
use crate::names::{TableName, quote_ident};

/// A table a job could capture, as offered to a person choosing tables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OfferedTable {
    /// `schema.table`, quoted where needed: as `WALPIPE_TABLES` takes it.
    pub table: String,
    /// The catalog's estimate; `None` where it has never counted.
    pub estimated_rows: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    pub schema: String,
    pub name: String,
    /// The source's id for the table, stable while it lives (PostgreSQL:
    /// `pg_class.oid`); 0 where not read from the catalog.
    pub relid: u32,
    pub columns: Vec<SourceColumn>,
    /// The primary key, else the replica identity index; empty if neither.
    pub key: Vec<String>,
    /// Which old values the source sends for an update or a delete
    /// (PostgreSQL's replica identity: `d` default, `n` nothing, `f` full,
    /// `i` index).
    pub replica_identity: char,
    /// A partitioned table: its changes are published under its own name
    /// only with `publish_via_partition_root`.
    pub partitioned: bool,
    /// Stored generated columns the server does not publish (before
    /// PostgreSQL 18): a destination computes them with the same expression.
    /// From 18 on they are published and are among `columns`.
    pub generated: Vec<GeneratedColumn>,
    /// A chunked copy can page through its key: it has one, of types the
    /// source reads alike from a query and from its stream. A table that
    /// cannot is copied only under a new stream's snapshot.
    pub pages_by_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedColumn {
    pub name: String,
    pub sql_type: String,
    pub expression: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub name: String,
    /// The type as a Postgres destination declares it (`numeric(12,2)`,
    /// `integer[]`): a domain's base type; `text` for other types outside
    /// `pg_catalog`, which a sink database may not have.
    pub sql_type: String,
    pub not_null: bool,
    /// The source's type as a PostgreSQL type OID (the Postgres source's
    /// own; another source names the nearest), for writing its values as
    /// the change JSON does.
    pub type_oid: u32,
    /// How its values are written in change lines.
    pub kind: ValueKind,
    /// Its attribute number: it stays when the column is renamed.
    pub attnum: i16,
}

impl SourceTable {
    /// `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// No key to write by: REPLICA IDENTITY FULL without a primary key.
    pub fn is_keyless(&self) -> bool {
        self.key.is_empty()
    }
}

/// A column of a source table in its catalog now, dropped ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAttribute {
    pub name: String,
    /// The column's id ([`SourceColumn::attnum`]): it stays when the column is renamed.
    pub attnum: i16,
    pub type_oid: u32,
    pub dropped: bool,
    pub existing: Existing,
}

/// What existing rows hold in a column added on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Null,
    /// One value for every existing row, as the text of a one-element
    /// array (`{7}`): PostgreSQL's "missing value".
    Value(String),
    /// Each row has its own (a volatile default), or the catalog cannot tell.
    Unknown,
}

/// The source's catalog, as a sink that follows shapes asks it.
pub trait ColumnHistory: Send + Sync {
    /// `table`'s columns in the catalog now, dropped ones included (none
    /// when the table is gone). The error is a sentence for the log.
    fn columns_now<'a>(&'a self, table: &'a TableName)
    -> BoxFuture<'a, Result<Vec<SourceAttribute>, String>>;
}
