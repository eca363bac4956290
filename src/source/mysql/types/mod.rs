//! MySQL/MariaDB column types as walpipe's neutral shapes, and binlog values
//! as the text the change lines and a Postgres destination take. Pure.
//!
//! | MySQL | change JSON | Postgres destination |
//! |---|---|---|
//! | tinyint .. bigint (signed) | number | smallint, integer, bigint |
//! | unsigned int family | number | the next wider type; bigint unsigned: numeric(20) |
//! | decimal(p,s) | string | numeric(p,s) |
//! | float, double | number | real, double precision |
//! | bit(n) | string of 0 and 1 | bit varying |
//! | year | number | smallint |
//! | date | string | date |
//! | time | string (may exceed 24 h or be negative) | interval |
//! | datetime(6) | ISO 8601 without offset | timestamp |
//! | timestamp(6) | ISO 8601 in UTC (`Z`) | timestamptz |
//! | char, varchar, text (utf8mb4) | string | text |
//! | binary, varbinary, blob | `\x`-prefixed hex string | bytea |
//! | json (MySQL) | JSON | jsonb |
//! | json (MariaDB: an alias of longtext) | string | text |
//! | enum, set | string (`a,b` for a set) | text |
//! | geometry | `\x`-prefixed hex of its WKB (SRID dropped) | bytea |
//!
//! NULL is `null`. A zero date or datetime (`0000-00-00`), which only a
//! server without strict mode stores, is written as `null`: no other system
//! reads it as a date.

use mysql_async::Value;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType as Mysql;

use crate::change::relation::{ColumnType, PostgresType};
use crate::change::value::{Scalar, ValueKind};

/// How one column's values are read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A signed integer; `bits` of storage.
    Integer {
        bits: u8,
    },
    /// An unsigned integer; `bits` of storage.
    Unsigned {
        bits: u8,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Bit {
        bits: u16,
    },
    Year,
    Date,
    Time,
    DateTime,
    Timestamp,
    Text,
    Binary,
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    Geometry,
}

/// Why a column's type or value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {what}")]
pub struct TypeError {
    pub column: String,
    pub what: String,
}

/// The binary charset's id: a string column with it holds bytes.
pub const BINARY_CHARSET: u16 = 63;

impl Format {
    /// The format of a binlog column: its type and metadata as the TABLE_MAP
    /// event gives them, whether it is unsigned and its charset (from the
    /// event's optional metadata), and its enum or set values.
    pub fn of(kind: Mysql, meta: &[u8], unsigned: bool, charset: u16, values: Vec<String>) -> Option<Format> {
        let integer = |bits| if unsigned { Format::Unsigned { bits } } else { Format::Integer { bits } };
        Some(match kind {
            Mysql::MYSQL_TYPE_TINY => integer(8),
            Mysql::MYSQL_TYPE_SHORT => integer(16),
            Mysql::MYSQL_TYPE_INT24 => integer(24),
            Mysql::MYSQL_TYPE_LONG => integer(32),
            Mysql::MYSQL_TYPE_LONGLONG => integer(64),
            Mysql::MYSQL_TYPE_FLOAT => Format::Float,
            Mysql::MYSQL_TYPE_DOUBLE => Format::Double,
            Mysql::MYSQL_TYPE_NEWDECIMAL => Format::Decimal {
                precision: meta.first().copied().unwrap_or(65),
                scale: meta.get(1).copied().unwrap_or(0),
            },
            Mysql::MYSQL_TYPE_BIT => Format::Bit {
                bits: u16::from(meta.get(1).copied().unwrap_or(0)) * 8
                    + u16::from(meta.first().copied().unwrap_or(1)),
            },
            Mysql::MYSQL_TYPE_YEAR => Format::Year,
            Mysql::MYSQL_TYPE_DATE | Mysql::MYSQL_TYPE_NEWDATE => Format::Date,
            Mysql::MYSQL_TYPE_TIME | Mysql::MYSQL_TYPE_TIME2 => Format::Time,
            Mysql::MYSQL_TYPE_DATETIME | Mysql::MYSQL_TYPE_DATETIME2 => Format::DateTime,
            Mysql::MYSQL_TYPE_TIMESTAMP | Mysql::MYSQL_TYPE_TIMESTAMP2 => Format::Timestamp,
            Mysql::MYSQL_TYPE_JSON => Format::Json,
            Mysql::MYSQL_TYPE_ENUM => Format::Enum(values),
            Mysql::MYSQL_TYPE_SET => Format::Set(values),
            Mysql::MYSQL_TYPE_GEOMETRY => Format::Geometry,
            Mysql::MYSQL_TYPE_STRING
            | Mysql::MYSQL_TYPE_VAR_STRING
            | Mysql::MYSQL_TYPE_VARCHAR
            | Mysql::MYSQL_TYPE_BLOB
            | Mysql::MYSQL_TYPE_TINY_BLOB
            | Mysql::MYSQL_TYPE_MEDIUM_BLOB
            | Mysql::MYSQL_TYPE_LONG_BLOB => {
                if charset == BINARY_CHARSET {
                    Format::Binary
                } else {
                    Format::Text
                }
            }
            _ => return None,
        })
    }

    /// The format of a column as `information_schema.columns` describes
    /// it: `data_type` (`int`, `varchar`, ...) and `column_type` (`int(10)
    /// unsigned`, `enum('a','b')`, `decimal(12,2)`).
    pub fn of_catalog(data_type: &str, column_type: &str, binary: bool) -> Option<Format> {
        let unsigned = column_type.contains("unsigned");
        let integer = |bits| if unsigned { Format::Unsigned { bits } } else { Format::Integer { bits } };
        let arguments = || -> Vec<String> {
            let inner = column_type
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map_or("", |(a, _)| a);
            split_quoted(inner)
        };
        let numbers = || -> Vec<u16> {
            let inner =
                column_type.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map_or("", |(a, _)| a);
            inner.split(',').filter_map(|n| n.trim().parse().ok()).collect()
        };
        Some(match data_type {
            "tinyint" => integer(8),
            "smallint" => integer(16),
            "mediumint" => integer(24),
            "int" | "integer" => integer(32),
            "bigint" => integer(64),
            "float" => Format::Float,
            "double" | "real" => Format::Double,
            "decimal" | "numeric" => {
                let n = numbers();
                Format::Decimal {
                    precision: *n.first().unwrap_or(&10) as u8,
                    scale: *n.get(1).unwrap_or(&0) as u8,
                }
            }
            "bit" => Format::Bit { bits: *numbers().first().unwrap_or(&1) },
            "year" => Format::Year,
            "date" => Format::Date,
            "time" => Format::Time,
            "datetime" => Format::DateTime,
            "timestamp" => Format::Timestamp,
            "json" if !column_type.contains("text") => Format::Json,
            "enum" => Format::Enum(arguments()),
            "set" => Format::Set(arguments()),
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => Format::Geometry,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Format::Binary,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "json" => {
                if binary {
                    Format::Binary
                } else {
                    Format::Text
                }
            }
            _ => return None,
        })
    }

    /// The type a Postgres destination declares for it.
    pub fn sql_type(&self) -> String {
        match self {
            Format::Integer { bits: 8 | 16 } | Format::Unsigned { bits: 8 } | Format::Year => {
                "smallint".into()
            }
            Format::Integer { bits: 24 | 32 } | Format::Unsigned { bits: 16 | 24 } => "integer".into(),
            Format::Integer { .. } | Format::Unsigned { bits: 32 } => "bigint".into(),
            Format::Unsigned { .. } => "numeric(20,0)".into(),
            Format::Float => "real".into(),
            Format::Double => "double precision".into(),
            Format::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            Format::Bit { .. } => "bit varying".into(),
            Format::Date => "date".into(),
            Format::Time => "interval".into(),
            Format::DateTime => "timestamp".into(),
            Format::Timestamp => "timestamptz".into(),
            Format::Text | Format::Enum(_) | Format::Set(_) => "text".into(),
            Format::Binary | Format::Geometry => "bytea".into(),
            Format::Json => "jsonb".into(),
        }
    }

    /// The Postgres type of [`Format::sql_type`], as an OID and modifier.
    pub fn postgres_type(&self) -> PostgresType {
        let (oid, modifier) = match self {
            Format::Integer { bits: 8 | 16 } | Format::Unsigned { bits: 8 } | Format::Year => (21, -1),
            Format::Integer { bits: 24 | 32 } | Format::Unsigned { bits: 16 | 24 } => (23, -1),
            Format::Integer { .. } | Format::Unsigned { bits: 32 } => (20, -1),
            Format::Unsigned { .. } => (1700, (20 << 16) + 4),
            Format::Float => (700, -1),
            Format::Double => (701, -1),
            Format::Decimal { precision, scale } => {
                (1700, ((i32::from(*precision) << 16) | i32::from(*scale)) + 4)
            }
            Format::Bit { .. } => (1562, -1),
            Format::Date => (1082, -1),
            Format::Time => (1186, -1),
            Format::DateTime => (1114, -1),
            Format::Timestamp => (1184, -1),
            Format::Text | Format::Enum(_) | Format::Set(_) => (25, -1),
            Format::Binary | Format::Geometry => (17, -1),
            Format::Json => (3802, -1),
        };
        PostgresType { oid, modifier }
    }

    /// How its values are written in change lines.
    pub fn kind(&self) -> ValueKind {
        ValueKind::Scalar(match self {
            Format::Integer { .. } | Format::Unsigned { .. } | Format::Year => Scalar::Integer,
            Format::Float | Format::Double => Scalar::Float,
            Format::DateTime => Scalar::Timestamp,
            Format::Timestamp => Scalar::TimestampTz,
            Format::Json => Scalar::Json,
            _ => Scalar::Text,
        })
    }

    /// The neutral column type: MySQL's name, the kind, the Postgres type.
    pub fn column_type(&self) -> ColumnType {
        ColumnType { name: self.mysql_name(), kind: self.kind(), postgres: Some(self.postgres_type()) }
    }

    fn mysql_name(&self) -> String {
        match self {
            Format::Integer { bits } | Format::Unsigned { bits } => {
                let name = match bits {
                    8 => "tinyint",
                    16 => "smallint",
                    24 => "mediumint",
                    32 => "int",
                    _ => "bigint",
                };
                if matches!(self, Format::Unsigned { .. }) { format!("{name} unsigned") } else { name.into() }
            }
            Format::Float => "float".into(),
            Format::Double => "double".into(),
            Format::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            Format::Bit { bits } => format!("bit({bits})"),
            Format::Year => "year".into(),
            Format::Date => "date".into(),
            Format::Time => "time".into(),
            Format::DateTime => "datetime".into(),
            Format::Timestamp => "timestamp".into(),
            Format::Text => "text".into(),
            Format::Binary => "blob".into(),
            Format::Json => "json".into(),
            Format::Enum(_) => "enum".into(),
            Format::Set(_) => "set".into(),
            Format::Geometry => "geometry".into(),
        }
    }

    /// A binlog value as text (`None`: NULL). The text is what Postgres
    /// reads for [`Format::sql_type`], and what the change JSON writes as
    /// [`Format::kind`].
    pub fn text(&self, value: &BinlogValue<'_>) -> Result<Option<String>, String> {
        let value = match value {
            BinlogValue::Value(value) => value,
            BinlogValue::Jsonb(json) => {
                let json = serde_json::Value::try_from(json.clone()).map_err(|e| e.to_string())?;
                return Ok(Some(json.to_string()));
            }
            BinlogValue::JsonDiff(_) => {
                return Err("a partial JSON update (binlog_row_value_options=PARTIAL_JSON): set it to '' on the source".into());
            }
        };
        Ok(Some(match (self, value) {
            (_, Value::NULL) => return Ok(None),
            (_, Value::Int(n)) if matches!(self, Format::Enum(_)) => return Ok(self.enum_value(*n)),
            (Format::Set(values), Value::Bytes(bits)) => set_value(&values[..], &bits[..]),
            (Format::Unsigned { bits }, Value::Int(n)) => unsigned(*n, *bits).to_string(),
            (Format::Integer { bits }, Value::Int(n)) => signed(*n, *bits).to_string(),
            (_, Value::Int(n)) => n.to_string(),
            (_, Value::UInt(n)) => n.to_string(),
            (_, Value::Float(f)) => f.to_string(),
            (_, Value::Double(f)) => f.to_string(),
            (Format::Bit { bits }, Value::Bytes(bytes)) => bit_string(bytes, *bits),
            (Format::Timestamp, Value::Bytes(seconds)) => timestamp(seconds)?,
            (Format::Binary, Value::Bytes(bytes)) => hex(bytes),
            (Format::Geometry, Value::Bytes(bytes)) => hex(bytes.get(4..).unwrap_or_default()),
            (_, Value::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            (Format::Date, Value::Date(0, 0, 0, ..)) | (Format::DateTime, Value::Date(0, 0, 0, ..)) => {
                return Ok(None);
            }
            (Format::Date, Value::Date(y, m, d, ..)) => format!("{y:04}-{m:02}-{d:02}"),
            (_, Value::Date(y, m, d, h, mi, s, us)) => {
                format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
            }
            (_, Value::Time(negative, days, h, m, s, us)) => {
                let hours = days * 24 + u32::from(*h);
                let sign = if *negative { "-" } else { "" };
                format!("{sign}{hours:02}:{m:02}:{s:02}.{us:06}")
            }
        }))
    }

    fn enum_value(&self, index: i64) -> Option<String> {
        let Format::Enum(values) = self else { return None };
        // 0 is the empty string MySQL stores for an invalid value.
        let index = usize::try_from(index).ok()?;
        Some(if index == 0 { String::new() } else { values.get(index - 1)?.clone() })
    }
}

/// A binlog integer of an unsigned column, read back from the signed
/// storage the decoder gave it.
fn unsigned(n: i64, bits: u8) -> u64 {
    if bits >= 64 { n as u64 } else { (n as u64) & ((1u64 << bits) - 1) }
}

/// A binlog integer of a signed column, sign-extended: the decoder hands
/// a negative `mediumint` over as its 24-bit pattern.
fn signed(n: i64, bits: u8) -> i64 {
    if bits < 64 && n >= 1 << (bits - 1) && n < 1 << bits { n - (1 << bits) } else { n }
}

fn set_value(values: &[String], bits: &[u8]) -> String {
    let mask = bits.iter().rev().fold(0u64, |mask, byte| (mask << 8) | u64::from(*byte));
    values
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The low `bits` bits of `bytes` (big-endian) as `0` and `1`.
pub fn bit_string(bytes: &[u8], bits: u16) -> String {
    let all: String = bytes.iter().map(|b| format!("{b:08b}")).collect();
    all[all.len().saturating_sub(usize::from(bits))..].to_string()
}

/// Postgres's `bytea` text form.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A `TIMESTAMP` from the binlog (seconds since the epoch, maybe with
/// `.micros`) in Postgres's text form, in UTC.
fn timestamp(seconds: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(seconds).map_err(|e| e.to_string())?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let whole: i64 = whole.parse().map_err(|_| format!("a timestamp that is not a number: {text}"))?;
    let micros: i64 =
        format!("{fraction:0<6}")[..6].parse().map_err(|_| format!("a bad timestamp: {text}"))?;
    let iso = crate::change::time::format_rfc3339(whole * 1_000_000 + micros);
    Ok(format!("{}+00", iso.replace('T', " ").trim_end_matches('Z')))
}

/// `'a','b''c'` as its values.
fn split_quoted(list: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                c => value.push(c),
            }
        }
        values.push(value);
    }
    values
}

#[cfg(test)]
mod tests;
