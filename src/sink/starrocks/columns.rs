//! Which columns a StarRocks destination table has, and what to do with
//! source columns it lacks: pure, no I/O.
//!
//! Invariants:
//! - A load never names a column the destination lacks (StarRocks would
//!   refuse the whole load): such a column is left out of the load, so its
//!   values are not loaded, and every other value still lands in the column
//!   of its name. Nothing is shifted.
//! - Names compare case-insensitively, as StarRocks' column names do.
//! - Each leftover column is reported with the `ALTER TABLE` that adds it,
//!   its type suggested from the source's type.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::plan::{Load, SourceColumn};

/// The columns of a destination table, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationColumns(BTreeSet<String>);

#[derive(Deserialize)]
struct SchemaAnswer {
    #[serde(default)]
    properties: Option<Vec<Property>>,
    /// Newer front ends wrap the answer in `data`.
    #[serde(default)]
    data: Option<Box<SchemaAnswer>>,
}

#[derive(Deserialize)]
struct Property {
    name: String,
}

impl DestinationColumns {
    /// Reads the answer of `GET /api/{db}/{table}/_schema`.
    pub fn from_answer(body: &str) -> Option<DestinationColumns> {
        let answer: SchemaAnswer = serde_json::from_str(body).ok()?;
        let properties = match answer.properties {
            Some(properties) => properties,
            None => answer.data?.properties?,
        };
        Some(DestinationColumns(properties.into_iter().map(|p| p.name.to_lowercase()).collect()))
    }

    fn has(&self, column: &str) -> bool {
        column == "__op" || self.0.contains(&column.to_lowercase())
    }

    /// The columns of `loads` this destination lacks, in name order.
    pub fn missing(&self, loads: &[Load]) -> Vec<String> {
        let named: BTreeSet<&String> = loads.iter().flat_map(|load| &load.columns).collect();
        named.into_iter().filter(|column| !self.has(column)).cloned().collect()
    }

    /// Leaves the columns this destination lacks out of `loads`.
    pub fn trim(&self, loads: &mut [Load]) {
        for load in loads {
            load.columns.retain(|column| self.has(column));
            for row in &mut load.rows {
                row.retain(|column, _| self.has(column));
            }
        }
    }
}

/// `ALTER TABLE` adding `missing` to `database.table`, typed from the
/// source's last announced shape (`STRING` when it is not known).
pub fn alter_statement(database: &str, table: &str, missing: &[String], shape: &[SourceColumn]) -> String {
    let additions: Vec<String> = missing
        .iter()
        .map(|column| {
            let source_type = shape.iter().find(|c| &c.name == column).map(|c| c.type_name.as_str());
            format!("ADD COLUMN {} {}", quote(column), starrocks_type(source_type.unwrap_or("text")))
        })
        .collect();
    format!("ALTER TABLE {}.{} {}", quote(database), quote(table), additions.join(", "))
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The StarRocks type that holds a Postgres type's values as walpipe's
/// change JSON writes them. Schema lines name types as Postgres does
/// internally (`int8`, `numeric`), without modifiers: `numeric` and
/// everything without a close match become `STRING`, which loses nothing.
fn starrocks_type(postgres: &str) -> &'static str {
    match postgres {
        _ if postgres.ends_with("[]") => "JSON",
        "int2" => "SMALLINT",
        "int4" => "INT",
        "int8" => "BIGINT",
        "float4" => "FLOAT",
        "float8" => "DOUBLE",
        "bool" => "BOOLEAN",
        "date" => "DATE",
        "timestamp" | "timestamptz" => "DATETIME",
        "json" | "jsonb" => "JSON",
        _ => "STRING",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn load(columns: &[&str], row: Value) -> Load {
        Load {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            partial: false,
            rows: vec![row.as_object().expect("row").clone()],
        }
    }

    #[test]
    fn the_schema_answer_is_read_in_both_forms() {
        let plain = r#"{"status":200,"properties":[{"name":"ID","type":"INT","comment":""},{"name":"v","type":"VARCHAR"}]}"#;
        let wrapped = r#"{"code":0,"msg":"success","data":{"status":200,"properties":[{"name":"id","type":"INT"},{"name":"v","type":"VARCHAR"}]}}"#;
        assert_eq!(DestinationColumns::from_answer(plain), DestinationColumns::from_answer(wrapped));
        assert!(DestinationColumns::from_answer(plain).is_some());
        assert_eq!(DestinationColumns::from_answer(r#"{"status":404,"exception":"no table"}"#), None);
    }

    #[test]
    fn columns_the_destination_lacks_are_left_out_by_name() {
        let destination = DestinationColumns::from_answer(r#"{"properties":[{"name":"id"},{"name":"A"}]}"#)
            .expect("answer");
        let mut loads = vec![load(&["__op", "a", "b", "id"], json!({"__op": 0, "id": 1, "a": "x", "b": 2}))];
        assert_eq!(destination.missing(&loads), ["b"]);
        destination.trim(&mut loads);
        assert_eq!(loads[0].columns, ["__op", "a", "id"]);
        assert_eq!(Value::Object(loads[0].rows[0].clone()), json!({"__op": 0, "id": 1, "a": "x"}));
        assert!(destination.missing(&loads).is_empty());
    }

    #[test]
    fn the_alter_statement_types_each_column_from_the_source() {
        let shape = vec![
            SourceColumn { name: "n".into(), type_name: "int8".into() },
            SourceColumn { name: "price".into(), type_name: "numeric".into() },
            SourceColumn { name: "tags".into(), type_name: "public.mood[]".into() },
        ];
        let missing = ["n".to_string(), "price".into(), "tags".into(), "odd`name".into()];
        assert_eq!(
            alter_statement("analytics", "items", &missing, &shape),
            "ALTER TABLE `analytics`.`items` ADD COLUMN `n` BIGINT, ADD COLUMN `price` STRING, \
             ADD COLUMN `tags` JSON, ADD COLUMN `odd``name` STRING"
        );
    }
}
