//! What the stream has told us about each table.
//!
//! pgoutput sends a Relation message before the first change of a table in
//! a session and again whenever its schema changes; changes then refer to
//! it by id. The cache keeps the latest description, with each column's
//! JSON key and value kind worked out once, not once per row.
//!
//! With REPLICA IDENTITY FULL the server marks every column as part of the
//! identity, which would make the whole row the `key`. When the table has
//! a primary key (known from [`PrimaryKeys`], read from the catalog before
//! streaming), the key is that primary key instead, as a consumer expects.

use std::collections::HashMap;
use std::sync::Arc;

use super::json::write_str;
use super::value::ValueKind;
use crate::source::postgres::protocol::pgoutput;

#[derive(Debug)]
pub struct Table {
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<TableColumn>,
    /// `"schema.name"`, already a JSON string.
    pub(super) qualified_json: Vec<u8>,
    /// The name this relation had when the stream last described it in this
    /// session, when that differs: the table was renamed.
    pub renamed_from: Option<String>,
}

#[derive(Debug)]
pub struct TableColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (with REPLICA IDENTITY FULL, every column).
    pub is_key: bool,
    /// The type's name: PostgreSQL's own for built-in types (`int4`,
    /// `varchar`, `int4[]`), `schema.name` for others (from Type messages),
    /// else `oid:<n>`.
    pub type_name: String,
    pub(super) kind: ValueKind,
    /// `"name":`, already JSON.
    pub(super) json_key: Vec<u8>,
}

impl Table {
    pub fn from_message(
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
        let mut qualified_json = Vec::new();
        write_str(&mut qualified_json, &format!("{schema}.{}", message.name));
        let columns = message
            .columns
            .iter()
            .map(|column| {
                let mut json_key = Vec::with_capacity(column.name.len() + 3);
                write_str(&mut json_key, &column.name);
                json_key.push(b':');
                TableColumn {
                    name: column.name.clone(),
                    type_oid: column.type_oid,
                    type_modifier: column.type_modifier,
                    is_key: match primary_key {
                        Some(key) => key.contains(&column.name),
                        None => column.is_key(),
                    },
                    type_name: type_name(column.type_oid, types),
                    kind: ValueKind::for_named_type(
                        column.type_oid,
                        types.get(&column.type_oid).map(String::as_str),
                    ),
                    json_key,
                }
            })
            .collect();
        Table {
            id: message.id,
            schema: schema.to_string(),
            name: message.name.clone(),
            replica_identity: message.replica_identity,
            columns,
            qualified_json,
            renamed_from: None,
        }
    }

    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A type's name for people: see [`TableColumn::type_name`].
fn type_name(oid: u32, types: &HashMap<u32, String>) -> String {
    match postgres_types::Type::from_oid(oid) {
        Some(ty) => match ty.kind() {
            postgres_types::Kind::Array(element) => format!("{}[]", element.name()),
            _ => ty.name().to_string(),
        },
        None => match types.get(&oid) {
            // An array type is named `_element` in the catalog.
            Some(name) => match name.split_once("._") {
                Some((schema, element)) => format!("{schema}.{element}[]"),
                None => name.clone(),
            },
            None => format!("oid:{oid}"),
        },
    }
}

/// Primary key columns by (schema, table).
pub type PrimaryKeys = HashMap<(String, String), Vec<String>>;

/// The tables seen so far in this replication session, by relation id.
#[derive(Debug, Default)]
pub struct RelationCache {
    tables: HashMap<u32, Arc<Table>>,
    primary_keys: PrimaryKeys,
    /// Names of types outside the built-in ones, from Type messages.
    types: HashMap<u32, String>,
}

impl RelationCache {
    pub fn new(primary_keys: PrimaryKeys) -> Self {
        RelationCache { tables: HashMap::new(), primary_keys, types: HashMap::new() }
    }

    pub fn apply(&mut self, message: &pgoutput::Relation) {
        let mut table = Table::from_message(message, &self.primary_keys, &self.types);
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
