//! A table's shape as the change lines know it: its name, and its columns
//! by name with their types named ([`ColumnType`]) and their key. Each
//! source maps its own description into it (the Postgres source: from
//! pgoutput's Relation and Type messages, `source::postgres::relations`);
//! each column's JSON key is worked out once, not once per row.

use super::json::write_str;
use super::value::ValueKind;

#[derive(Debug)]
pub struct Table {
    /// The source's id for the table, stable while it lives (PostgreSQL:
    /// the relation's OID); renames keep it.
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<TableColumn>,
    /// `"schema.name"`, already a JSON string.
    pub(super) qualified_json: Vec<u8>,
    /// `schema.name`, already COPY text (mirror records name tables so).
    pub(super) qualified_copy: Vec<u8>,
    /// The name this table had when the source last described it, when
    /// that differs: the table was renamed.
    pub renamed_from: Option<String>,
}

#[derive(Debug)]
pub struct TableColumn {
    pub name: String,
    /// Part of the key the source identifies rows by.
    pub is_key: bool,
    pub ty: ColumnType,
    /// `"name":`, already JSON.
    pub(super) json_key: Vec<u8>,
}

/// A column's type, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// The type's name in the source, for people and for sinks that map
    /// types by name (PostgreSQL: `int4`, `varchar`, `int4[]`,
    /// `schema.name` for others, else `oid:<n>`).
    pub name: String,
    /// How its values are written as JSON.
    pub kind: ValueKind,
    /// The exact PostgreSQL type when the source is PostgreSQL: a Postgres
    /// destination declares the column with it (`format_type`).
    pub postgres: Option<PostgresType>,
}

/// A PostgreSQL type with its modifier (`varchar(20)`: `varchar`, 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresType {
    pub oid: u32,
    pub modifier: i32,
}

impl TableColumn {
    pub fn new(name: &str, is_key: bool, ty: ColumnType) -> TableColumn {
        let mut json_key = Vec::with_capacity(name.len() + 3);
        write_str(&mut json_key, name);
        json_key.push(b':');
        TableColumn { name: name.to_string(), is_key, ty, json_key }
    }
}

impl Table {
    pub fn new(id: u32, schema: &str, name: &str, columns: Vec<TableColumn>) -> Table {
        let qualified = format!("{schema}.{name}");
        let mut qualified_json = Vec::new();
        write_str(&mut qualified_json, &qualified);
        // A dot needs no escape, so this is the escaped qualified name.
        let mut qualified_copy = Vec::new();
        super::mirror_records::escape(&mut qualified_copy, qualified.as_bytes());
        Table {
            id,
            schema: schema.to_string(),
            name: name.to_string(),
            columns,
            qualified_json,
            qualified_copy,
            renamed_from: None,
        }
    }

    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}
