use super::*;

fn text(format: &Format, value: Value) -> Option<String> {
    format.text(&BinlogValue::Value(value)).expect("readable")
}

#[test]
fn integers_keep_their_sign_and_unsigned_ones_their_full_range() {
    assert_eq!(text(&Format::Integer { bits: 8 }, Value::Int(-5)).as_deref(), Some("-5"));
    assert_eq!(text(&Format::Integer { bits: 24 }, Value::Int(8_388_608)).as_deref(), Some("-8388608"));
    assert_eq!(text(&Format::Integer { bits: 24 }, Value::Int(8_388_607)).as_deref(), Some("8388607"));
    assert_eq!(text(&Format::Unsigned { bits: 8 }, Value::Int(-1)).as_deref(), Some("255"));
    assert_eq!(
        text(&Format::Unsigned { bits: 64 }, Value::UInt(u64::MAX)).as_deref(),
        Some("18446744073709551615")
    );
    assert_eq!(Format::Unsigned { bits: 64 }.sql_type(), "numeric(20,0)");
    assert_eq!(Format::Unsigned { bits: 32 }.sql_type(), "bigint");
}

#[test]
fn dates_times_and_timestamps_are_written_as_postgres_reads_them() {
    assert_eq!(text(&Format::Date, Value::Date(2024, 2, 29, 0, 0, 0, 0)).as_deref(), Some("2024-02-29"));
    assert_eq!(text(&Format::Date, Value::Date(0, 0, 0, 0, 0, 0, 0)), None, "a zero date is NULL");
    assert_eq!(
        text(&Format::DateTime, Value::Date(2024, 2, 29, 13, 14, 15, 123_456)).as_deref(),
        Some("2024-02-29 13:14:15.123456")
    );
    assert_eq!(text(&Format::Time, Value::Time(true, 1, 2, 3, 4, 0)).as_deref(), Some("-26:03:04.000000"));
    assert_eq!(
        text(&Format::Timestamp, Value::Bytes(b"1700000000.5".to_vec())).as_deref(),
        Some("2023-11-14 22:13:20.500000+00")
    );
}

#[test]
fn bits_enums_sets_bytes_and_geometry_become_text() {
    assert_eq!(
        text(&Format::Bit { bits: 10 }, Value::Bytes(vec![0b10, 0b0000_0101])).as_deref(),
        Some("1000000101")
    );
    let sizes = Format::Enum(vec!["small".into(), "large".into()]);
    assert_eq!(text(&sizes, Value::Int(2)).as_deref(), Some("large"));
    assert_eq!(text(&sizes, Value::Int(0)).as_deref(), Some(""), "MySQL's invalid-value entry");
    let tags = Format::Set(vec!["a".into(), "b".into(), "c".into()]);
    assert_eq!(text(&tags, Value::Bytes(vec![0b101])).as_deref(), Some("a,c"));
    assert_eq!(text(&Format::Binary, Value::Bytes(vec![0, 255])).as_deref(), Some("\\x00ff"));
    assert_eq!(text(&Format::Geometry, Value::Bytes(vec![0, 0, 0, 0, 1, 2])).as_deref(), Some("\\x0102"));
}

#[test]
fn the_catalog_names_the_same_formats_as_the_binlog() {
    assert_eq!(Format::of_catalog("int", "int(10) unsigned", false), Some(Format::Unsigned { bits: 32 }));
    assert_eq!(
        Format::of_catalog("decimal", "decimal(12,2)", false),
        Some(Format::Decimal { precision: 12, scale: 2 })
    );
    assert_eq!(
        Format::of_catalog("enum", "enum('a','it''s')", false),
        Some(Format::Enum(vec!["a".into(), "it's".into()]))
    );
    assert_eq!(Format::of_catalog("varchar", "varchar(10)", true), Some(Format::Binary));
    assert_eq!(Format::of_catalog("longtext", "longtext", false), Some(Format::Text));
    assert_eq!(
        Format::of(Mysql::MYSQL_TYPE_VARCHAR, &[], false, BINARY_CHARSET, vec![]),
        Some(Format::Binary)
    );
    assert_eq!(
        Format::of(Mysql::MYSQL_TYPE_NEWDECIMAL, &[12, 2], false, 0, vec![]),
        Format::of_catalog("decimal", "decimal(12,2)", false)
    );
}
