//! PostgreSQL's types as the change lines know them: a type's name for
//! people and how its text form is written as JSON ([`ValueKind`]), from
//! the type OIDs pgoutput sends.

use std::collections::HashMap;

use postgres_types::{Kind, Type};

use crate::change::value::{Scalar, ValueKind};

/// How values of the type `oid` are written. `name`: the type's
/// `schema.name` from a Type message, for a type outside the built-in
/// ones: an array type's name starts with `_` (an array of enums, say),
/// and its elements are written as text.
pub fn value_kind(oid: u32, name: Option<&str>) -> ValueKind {
    let is_array = name.and_then(|n| n.rsplit('.').next()).is_some_and(|n| n.starts_with('_'));
    if Type::from_oid(oid).is_none() && is_array {
        ValueKind::Array(Scalar::Text, ',')
    } else {
        builtin_kind(oid)
    }
}

fn builtin_kind(oid: u32) -> ValueKind {
    match Type::from_oid(oid) {
        Some(ty) => match ty.kind() {
            Kind::Array(element) => {
                ValueKind::Array(scalar_for(element), if *element == Type::BOX { ';' } else { ',' })
            }
            _ => ValueKind::Scalar(scalar_for(&ty)),
        },
        None => ValueKind::Scalar(Scalar::Text),
    }
}

fn scalar_for(ty: &Type) -> Scalar {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => Scalar::Integer,
        Type::FLOAT4 | Type::FLOAT8 => Scalar::Float,
        Type::BOOL => Scalar::Bool,
        Type::JSON | Type::JSONB => Scalar::Json,
        Type::TIMESTAMP => Scalar::Timestamp,
        Type::TIMESTAMPTZ => Scalar::TimestampTz,
        _ => Scalar::Text,
    }
}

/// A type's name for people: PostgreSQL's own for built-in types (`int4`,
/// `varchar`, `int4[]`), `schema.name` for others (from Type messages,
/// `types`), else `oid:<n>`.
pub fn type_name(oid: u32, types: &HashMap<u32, String>) -> String {
    match Type::from_oid(oid) {
        Some(ty) => match ty.kind() {
            Kind::Array(element) => format!("{}[]", element.name()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::value::write_text_value;

    fn json(oid: u32, text: &str) -> String {
        let mut out = Vec::new();
        write_text_value(&mut out, value_kind(oid, None), text.as_bytes());
        let out = String::from_utf8(out).expect("utf-8");
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{out} is not JSON: {e}"));
        out
    }

    #[test]
    fn scalars() {
        assert_eq!(json(23, "42"), "42");
        assert_eq!(json(20, "-9223372036854775808"), "-9223372036854775808");
        assert_eq!(json(701, "1.5e-05"), "1.5e-05");
        assert_eq!(json(701, "NaN"), "\"NaN\"");
        assert_eq!(json(700, "-Infinity"), "\"-Infinity\"");
        assert_eq!(json(1700, "12345678901234567890.000000000001"), "\"12345678901234567890.000000000001\"");
        assert_eq!(json(16, "t"), "true");
        assert_eq!(json(16, "f"), "false");
        assert_eq!(json(25, "a \"quoted\"\nline"), "\"a \\\"quoted\\\"\\nline\"");
        assert_eq!(json(3802, "{\"a\": [1, 2.50]}"), "{\"a\": [1, 2.50]}");
        assert_eq!(json(114, "{\n  \"a\": 1\n}"), "{   \"a\": 1 }");
        assert_eq!(
            json(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""
        );
        assert_eq!(json(17, "\\x0a1b"), "\"\\\\x0a1b\"");
        assert_eq!(json(1082, "2026-11-21"), "\"2026-11-21\"");
        assert_eq!(json(1083, "10:30:00.5"), "\"10:30:00.5\"");
    }

    #[test]
    fn arrays_split_at_their_element_type_delimiter() {
        // box[] (oid 1020): elements separated by ';', commas inside a box.
        assert_eq!(json(1020, "{(1,1),(0,0);(3,3),(2,2)}"), r#"["(1,1),(0,0)","(3,3),(2,2)"]"#);
        assert_eq!(json(1007, "{1,NULL,3}"), "[1,null,3]");
    }

    #[test]
    fn arrays_of_user_types_are_json_arrays() {
        let mut out = Vec::new();
        let kind = value_kind(16_500, Some("public._mood"));
        write_text_value(&mut out, kind, b"{happy,\"so so\",NULL}");
        assert_eq!(String::from_utf8(out).expect("utf-8"), r#"["happy","so so",null]"#);
        assert_eq!(value_kind(16_501, Some("public.mood")), ValueKind::Scalar(Scalar::Text));
    }

    #[test]
    fn timestamps() {
        assert_eq!(json(1114, "2026-11-21 10:30:00.123456"), "\"2026-11-21T10:30:00.123456\"");
        assert_eq!(json(1184, "2026-11-21 10:30:00.123456+00"), "\"2026-11-21T10:30:00.123456Z\"");
        assert_eq!(json(1184, "2026-11-21 10:30:00+05:30"), "\"2026-11-21T10:30:00+05:30\"");
        assert_eq!(json(1184, "2026-11-21 10:30:00-08"), "\"2026-11-21T10:30:00-08:00\"");
        assert_eq!(json(1184, "infinity"), "\"infinity\"");
        assert_eq!(json(1114, "0044-03-15 12:00:00 BC"), "\"0044-03-15 12:00:00 BC\"");
    }

    #[test]
    fn arrays() {
        assert_eq!(json(1007, "{1,2,NULL}"), "[1,2,null]");
        assert_eq!(json(1007, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
        assert_eq!(json(1007, "[0:1]={7,8}"), "[7,8]");
        assert_eq!(json(1009, "{}"), "[]");
        assert_eq!(
            json(1009, "{\"a b\",\"NULL\",c,\"q\\\"x\\\\\"}"),
            "[\"a b\",\"NULL\",\"c\",\"q\\\"x\\\\\"]"
        );
        assert_eq!(json(1000, "{t,f}"), "[true,false]");
        assert_eq!(json(3807, "{\"{\\\"a\\\": 1}\",NULL}"), "[{\"a\": 1},null]");
        assert_eq!(json(1231, "{1.50,NaN}"), "[\"1.50\",\"NaN\"]");
        assert_eq!(json(1185, "{\"2026-01-01 00:00:00+00\"}"), "[\"2026-01-01T00:00:00Z\"]");
        assert_eq!(json(1001, "{\"\\\\x00ff\"}"), "[\"\\\\x00ff\"]");
        // Not an array literal: kept as text.
        assert_eq!(json(1007, "{1,2"), "\"{1,2\"");
    }

    #[test]
    fn unknown_types_pass_their_text() {
        assert_eq!(json(999_999, "(1,2)"), "\"(1,2)\"");
        assert_eq!(json(1186, "1 day 02:00:00"), "\"1 day 02:00:00\"");
    }

    proptest::proptest! {
        #[test]
        fn any_text_gives_valid_json(oid in proptest::sample::select(vec![16u32, 20, 21, 23, 114, 700, 701, 1000, 1007, 1009, 1114, 1184, 1185, 3802, 3807, 25]), text in ".{0,40}") {
            let mut out = Vec::new();
            write_text_value(&mut out, value_kind(oid, None), text.as_bytes());
            // json/jsonb are trusted to be JSON already (the server validated them).
            if !matches!(oid, 114 | 3802 | 3807) {
                let out = String::from_utf8(out).expect("utf-8");
                proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{}", out);
            }
        }
    }
}
