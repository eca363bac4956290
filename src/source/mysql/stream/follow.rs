//! How the stream follows a table's shape: the columns each TABLE_MAP
//! event names, the columns an `ALTER TABLE` removes, and a table renamed.
//!
//! Invariants:
//! - Rows are matched to columns by the names TABLE_MAP gives
//!   (`binlog_row_metadata=FULL`), never by position.
//! - A captured table renamed keeps its id under its new name (within the
//!   session; a table id is the name's hash otherwise, see
//!   `catalog::stable_id`), and its new shape is announced at the DDL with
//!   `renamed_from`: a mirror renames its destination and keeps its rows,
//!   as for a Postgres source. The new name is captured from then on.

use std::sync::Arc;

use mysql_async::binlog::events::TableMapEvent;
use mysql_async::binlog::row::BinlogRow;
use mysql_async::consts::ColumnFlags;

use super::BinlogChanges;
use crate::change::Encoding;
use crate::source::mysql::catalog::stable_id;
use crate::source::mysql::ddl::{self, TableRef};
use crate::source::mysql::transaction::Shape;
use crate::source::mysql::types::Format;

impl<E: Encoding> BinlogChanges<E> {
    /// Announces, at the DDL, the shape without the columns an `ALTER TABLE`
    /// of a captured table removed (see `ddl`).
    pub(super) fn follow_ddl(&mut self, statement: &str, schema: &str) {
        for (from, to) in ddl::renamed_tables(statement, schema) {
            self.follow_rename(from, to);
        }
        let Some((schema, table, removed)) = ddl::removed_columns(statement, schema) else { return };
        if removed.is_empty() || !self.captures(&schema, &table) {
            return;
        }
        let qualified = format!("{schema}.{table}");
        let Some(latest) = self.latest.get(&qualified) else { return };
        let shape = Arc::new(latest.without(&removed));
        self.shapes.retain(|_, cached| cached.table.qualified_name() != qualified);
        self.latest.insert(qualified, shape.clone());
        self.transactions.announce(shape);
    }

    /// A table renamed from `from` to `to`: when it is captured, the new
    /// name is captured instead, keeps the table's id, and its shape is
    /// announced under the new name.
    fn follow_rename(&mut self, (from_schema, from): TableRef, (to_schema, to): TableRef) {
        if !self.captures(&from_schema, &from) {
            return;
        }
        let (old, new) = (format!("{from_schema}.{from}"), format!("{to_schema}.{to}"));
        let id = self.renamed.remove(&old).unwrap_or_else(|| stable_id(&from_schema, &from));
        self.renamed.insert(new.clone(), id);
        if self.captured.remove(&old) {
            self.captured.insert(new.clone());
        }
        self.shapes.retain(|_, cached| cached.table.qualified_name() != old);
        let Some(latest) = self.latest.remove(&old) else { return };
        let columns = latest
            .table
            .columns
            .iter()
            .zip(&latest.formats)
            .map(|(c, f)| (c.name.clone(), f.clone(), c.is_key))
            .collect();
        let mut shape = Shape::new(id, &to_schema, &to, columns);
        shape.table.renamed_from = Some(old.clone());
        let shape = Arc::new(shape);
        tracing::info!(from = %old, to = %new, "a captured table was renamed: its changes follow under the new name");
        self.latest.insert(new, shape.clone());
        self.transactions.announce(shape);
    }

    /// The shape of `table_id`'s rows: read from the TABLE_MAP event and its
    /// first row's columns (names, signedness, charsets, key), kept while
    /// the table id maps the same columns.
    pub(super) fn shape(
        &mut self,
        table_id: u64,
        map: &TableMapEvent<'_>,
        row: &BinlogRow,
    ) -> Result<Arc<Shape>, String> {
        let names: Vec<String> = row.columns_ref().iter().map(|c| c.name_str().into_owned()).collect();
        if let Some(shape) = self.shapes.get(&table_id)
            && shape.table.columns.iter().map(|c| &c.name).eq(names.iter())
        {
            return Ok(shape.clone());
        }
        if names.iter().any(|name| name.starts_with('@')) {
            return Err(
                "the binlog does not name the columns: set binlog_row_metadata=FULL on the source".into()
            );
        }
        let mut enums = enum_values(map, true).into_iter();
        let mut sets = enum_values(map, false).into_iter();
        let mut columns = Vec::with_capacity(names.len());
        for (index, column) in row.columns_ref().iter().enumerate() {
            let kind = column.column_type();
            let values = match kind {
                mysql_async::consts::ColumnType::MYSQL_TYPE_ENUM => enums.next().unwrap_or_default(),
                mysql_async::consts::ColumnType::MYSQL_TYPE_SET => sets.next().unwrap_or_default(),
                _ => Vec::new(),
            };
            let meta = map.get_column_metadata(index).unwrap_or_default();
            let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
            let format =
                Format::of(kind, meta, unsigned, column.character_set(), values).ok_or_else(|| {
                    format!("column {} has type {kind:?}, which walpipe does not read", names[index])
                })?;
            let is_key = column.flags().contains(ColumnFlags::PRI_KEY_FLAG);
            columns.push((names[index].clone(), format, is_key));
        }
        let (schema, name) = (map.database_name(), map.table_name());
        let id = self
            .renamed
            .get(&format!("{schema}.{name}"))
            .copied()
            .unwrap_or_else(|| stable_id(&schema, &name));
        let shape = Arc::new(Shape::new(id, &schema, &name, columns));
        self.shapes.insert(table_id, shape.clone());
        self.latest.insert(shape.table.qualified_name(), shape.clone());
        Ok(shape)
    }
}

/// The ENUM (`enums`) or SET column values the TABLE_MAP event lists, in column order.
fn enum_values(map: &TableMapEvent<'_>, enums: bool) -> Vec<Vec<String>> {
    use mysql_async::binlog::events::OptionalMetadataField as Field;
    let mut found = Vec::new();
    for field in map.iter_optional_meta().flatten() {
        match field {
            Field::EnumStrValue(list) if enums => {
                for values in list.iter_values().flatten() {
                    found.push(values.values().iter().map(|v| v.value().into_owned()).collect());
                }
            }
            Field::SetStrValue(list) if !enums => {
                for values in list.iter_values().flatten() {
                    found.push(values.values().iter().map(|v| v.value().into_owned()).collect());
                }
            }
            _ => {}
        }
    }
    found
}
