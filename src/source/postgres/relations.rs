//! pgoutput's Relation and Type messages as table shapes ([`Table`]).
//!
//! pgoutput sends a Relation message before the first change of a table in
//! a session and again whenever its schema changes; changes then refer to
//! it by id. The cache keeps the latest description.
//!
//! With REPLICA IDENTITY FULL the server marks every column as part of the
//! identity, which would make the whole row the `key`. When the table has
//! a primary key (known from [`PrimaryKeys`], read from the catalog before
//! streaming), the key is that primary key instead, as a consumer expects.

use std::collections::HashMap;
use std::sync::Arc;

use super::protocol::pgoutput;
use super::types::{type_name, value_kind};
use crate::change::relation::{ColumnType, PostgresType, Table, TableColumn};

/// The shape a Relation message describes.
pub fn table_of(
    message: &pgoutput::Relation,
    primary_keys: &PrimaryKeys,
    types: &HashMap<u32, String>,
) -> Table {
    // pgoutput sends an empty namespace for pg_catalog.
    let schema = if message.namespace.is_empty() { "pg_catalog" } else { &message.namespace };
    let primary_key = match message.replica_identity {
        b'f' => primary_keys.get(&(schema.to_string(), message.name.clone())),
        _ => None,
    };
    let columns = message
        .columns
        .iter()
        .map(|column| {
            let is_key = match primary_key {
                Some(key) => key.contains(&column.name),
                None => column.is_key(),
            };
            let ty = ColumnType {
                name: type_name(column.type_oid, types),
                kind: value_kind(column.type_oid, types.get(&column.type_oid).map(String::as_str)),
                postgres: Some(PostgresType { oid: column.type_oid, modifier: column.type_modifier }),
            };
            TableColumn::new(&column.name, is_key, ty)
        })
        .collect();
    Table::new(message.id, schema, &message.name, columns)
}

/// A table's name and columns (name, type, modifier), as a Relation
/// message or the catalog gives them: equal signatures mean the shape did
/// not change in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    schema: String,
    name: String,
    columns: Vec<(String, u32, i32)>,
}

impl Signature {
    pub fn new(schema: &str, name: &str, columns: Vec<(String, u32, i32)>) -> Signature {
        Signature { schema: schema.to_string(), name: name.to_string(), columns }
    }

    pub fn of(message: &pgoutput::Relation) -> Signature {
        let schema = if message.namespace.is_empty() { "pg_catalog" } else { &message.namespace };
        let columns = message.columns.iter().map(|c| (c.name.clone(), c.type_oid, c.type_modifier)).collect();
        Signature::new(schema, &message.name, columns)
    }
}

/// Signatures by relation id.
pub type Signatures = HashMap<u32, Signature>;

/// Primary key columns by (schema, table).
pub type PrimaryKeys = HashMap<(String, String), Vec<String>>;

/// The tables seen so far in this replication session, by relation id.
#[derive(Debug, Default)]
pub struct RelationCache {
    /// Looked up once per change: with foldhash, not SipHash.
    tables: foldhash::HashMap<u32, Arc<Table>>,
    primary_keys: PrimaryKeys,
    /// Names of types outside the built-in ones, from Type messages.
    types: HashMap<u32, String>,
}

impl RelationCache {
    pub fn new(primary_keys: PrimaryKeys) -> Self {
        RelationCache { tables: foldhash::HashMap::default(), primary_keys, types: HashMap::new() }
    }

    pub fn apply(&mut self, message: &pgoutput::Relation) {
        let mut table = table_of(message, &self.primary_keys, &self.types);
        table.renamed_from = self
            .tables
            .get(&message.id)
            .filter(|before| before.schema != table.schema || before.name != table.name)
            .map(|before| before.qualified_name());
        self.tables.insert(message.id, Arc::new(table));
    }

    /// A Type message: the server sends it before the Relation message
    /// that first uses a type outside the built-in ones.
    pub fn apply_type(&mut self, message: &pgoutput::TypeInfo) {
        let schema = if message.namespace.is_empty() { "pg_catalog" } else { &message.namespace };
        self.types.insert(message.oid, format!("{schema}.{}", message.name));
    }

    pub fn get(&self, id: u32) -> Option<&Arc<Table>> {
        self.tables.get(&id)
    }

    /// The table the stream last described under this name, if any.
    pub fn by_name(&self, schema: &str, name: &str) -> Option<&Arc<Table>> {
        self.tables.values().find(|table| table.schema == schema && table.name == name)
    }
}
