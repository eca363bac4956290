//! Column values, from their text form to typed JSON.
//!
//! The text forms are PostgreSQL's, with `DateStyle=ISO`, `TimeZone=UTC`,
//! `bytea_output=hex` and `extra_float_digits=3` (the Postgres source sets
//! them for its session, `pg::connection`); another source renders its
//! values the same way, and says how each column is written by its
//! [`ValueKind`]. Rules of the change JSON:
//! integers and floats become JSON numbers (NaN and infinities stay strings),
//! `numeric` stays a string so no precision is lost, booleans are booleans,
//! `json`/`jsonb` are embedded as JSON, arrays of these become JSON arrays,
//! timestamps become RFC 3339, and every other type is passed as its text.
//! Text that does not look as expected is passed as a string: a value is
//! never dropped and this code never panics on it.

use super::json::{is_json_number, write_bytes_str, write_joined, write_str};

/// How a column's text form is written as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Scalar(Scalar),
    /// Elements of that kind, separated by the element type's delimiter
    /// (`,` for every built-in type but `box`, whose is `;`).
    Array(Scalar, char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    Integer,
    Float,
    Bool,
    Json,
    /// `timestamp without time zone`: ISO 8601 without an offset, since
    /// the value has none (inventing `Z` would claim a zone it lacks).
    Timestamp,
    /// `timestamptz`, printed in UTC: RFC 3339 with `Z`.
    TimestampTz,
    /// Everything else, including numeric, text, date, time, uuid and bytea:
    /// the text form as a JSON string.
    Text,
}

/// Appends the JSON for one non-null value in text form.
pub fn write_text_value(out: &mut Vec<u8>, kind: ValueKind, text: &[u8]) {
    match kind {
        ValueKind::Scalar(scalar) => write_scalar(out, scalar, text),
        ValueKind::Array(element, delimiter) => match parse_array(text, delimiter) {
            Some(array) => write_array(out, element, &array),
            None => write_bytes_str(out, text),
        },
    }
}

/// Appends a value that arrived in binary form, as PostgreSQL prints bytea
/// (`\x...`). walpipe asks for text, so this only happens if a server sends
/// binary unasked; the bytes are kept rather than guessed at.
pub fn write_binary_value(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\"\\\\x");
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
    out.push(b'"');
}

fn write_scalar(out: &mut Vec<u8>, scalar: Scalar, text: &[u8]) {
    match scalar {
        Scalar::Integer | Scalar::Float if is_json_number(text) => out.extend_from_slice(text),
        Scalar::Bool if text == b"t" => out.extend_from_slice(b"true"),
        Scalar::Bool if text == b"f" => out.extend_from_slice(b"false"),
        Scalar::Json => write_json(out, text),
        Scalar::Timestamp => write_timestamp(out, text, false),
        Scalar::TimestampTz => write_timestamp(out, text, true),
        _ => write_bytes_str(out, text),
    }
}

/// `json` keeps its input's whitespace, which may include newlines; outside
/// strings they are insignificant and inside strings JSON forbids them raw,
/// so replacing them by spaces keeps the value and the one-line rule.
fn write_json(out: &mut Vec<u8>, text: &[u8]) {
    if std::str::from_utf8(text).is_err() {
        return write_bytes_str(out, text);
    }
    let start = out.len();
    out.extend_from_slice(text);
    for byte in &mut out[start..] {
        if matches!(*byte, b'\n' | b'\r') {
            *byte = b' ';
        }
    }
}

/// `2026-11-21 10:30:00.123456+00` to `2026-11-21T10:30:00.123456Z`.
/// Values without a date-time shape (`infinity`, BC dates) stay as text.
fn write_timestamp(out: &mut Vec<u8>, text: &[u8], with_zone: bool) {
    let Ok(text) = std::str::from_utf8(text) else {
        return write_bytes_str(out, text);
    };
    let shaped = text.len() >= 19 && text.as_bytes()[10] == b' ' && text.as_bytes()[4] == b'-';
    if !shaped || text.ends_with(" BC") {
        return write_str(out, text);
    }
    let (date, time) = text.split_at(10);
    let time = &time[1..];
    if !with_zone {
        return write_joined(out, &[date, "T", time]);
    }
    // The offset starts at the last '+' or '-' of the time part.
    let Some(sign_at) = time.rfind(['+', '-']) else {
        return write_str(out, text);
    };
    let (clock, offset) = time.split_at(sign_at);
    match offset.len() {
        3 if offset == "+00" || offset == "-00" => write_joined(out, &[date, "T", clock, "Z"]),
        3 => write_joined(out, &[date, "T", clock, offset, ":00"]),
        _ => write_joined(out, &[date, "T", clock, offset]),
    }
}

/// An array literal parsed into nested elements.
#[derive(Debug, PartialEq, Eq)]
enum Element {
    Null,
    Value(String),
    Array(Vec<Element>),
}

/// Parses `{1,2,NULL}`, `{{"a b",c},{d,e}}` and `[0:1]={1,2}`. `None` when
/// the text is not an array literal.
fn parse_array(text: &[u8], delimiter: char) -> Option<Vec<Element>> {
    let text = std::str::from_utf8(text).ok()?;
    // Drop a dimension decoration such as `[0:2]=`.
    let text = if text.starts_with('[') { &text[text.find('=')? + 1..] } else { text };
    let mut chars = text.chars().peekable();
    let array = parse_level(&mut chars, delimiter)?;
    if chars.next().is_some() { None } else { Some(array) }
}

fn parse_level(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delimiter: char,
) -> Option<Vec<Element>> {
    if chars.next()? != '{' {
        return None;
    }
    let mut elements = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(elements);
    }
    loop {
        let element = match chars.peek()? {
            '{' => Element::Array(parse_level(chars, delimiter)?),
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => value.push(chars.next()?),
                        c => value.push(c),
                    }
                }
                Element::Value(value)
            }
            _ => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == delimiter || c == '}' {
                        break;
                    }
                    if c == '\\' {
                        chars.next();
                        value.push(chars.next()?);
                    } else {
                        value.push(c);
                        chars.next();
                    }
                }
                let value = value.trim();
                if value.eq_ignore_ascii_case("NULL") {
                    Element::Null
                } else {
                    Element::Value(value.to_string())
                }
            }
        };
        elements.push(element);
        match chars.next()? {
            '}' => return Some(elements),
            c if c == delimiter => continue,
            _ => return None,
        }
    }
}

fn write_array(out: &mut Vec<u8>, scalar: Scalar, elements: &[Element]) {
    out.push(b'[');
    for (i, element) in elements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match element {
            Element::Null => out.extend_from_slice(b"null"),
            Element::Value(value) => write_scalar(out, scalar, value.as_bytes()),
            Element::Array(inner) => write_array(out, scalar, inner),
        }
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc_3339() {
        let printed = |text: &str, with_zone: bool| {
            let mut out = Vec::new();
            write_timestamp(&mut out, text.as_bytes(), with_zone);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(printed("2026-11-21 10:30:00.123456+00", true), r#""2026-11-21T10:30:00.123456Z""#);
        assert_eq!(printed("2026-11-21 10:30:00-05", true), r#""2026-11-21T10:30:00-05:00""#);
        assert_eq!(printed("2026-11-21 10:30:00+05:30", true), r#""2026-11-21T10:30:00+05:30""#);
        assert_eq!(printed("2026-11-21 10:30:00.5", false), r#""2026-11-21T10:30:00.5""#);
        assert_eq!(printed("0044-03-15 12:00:00+00 BC", true), r#""0044-03-15 12:00:00+00 BC""#);
        assert_eq!(printed("infinity", true), r#""infinity""#);
        assert_eq!(
            printed("2026-11-21 10:30:00\"x", false),
            r#""2026-11-21T10:30:00\"x""#,
            "escaped when it must be"
        );
    }

    #[test]
    fn binary_values_print_as_bytea() {
        let mut out = Vec::new();
        write_binary_value(&mut out, &[0x0a, 0xff]);
        assert_eq!(out, b"\"\\\\x0aff\"");
    }
}
