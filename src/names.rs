//! Table names as users write them in `WALPIPE_TABLES`,
//! `WALPIPE_TABLE_MAPPINGS` and `WALPIPE_OUTBOX_TABLES`: one parser. Pure.
//!
//! A name is `schema.table` or `table` (schema `public`). Each part is
//! either written plainly, taken as written (`Sales.Order Items`, as
//! earlier versions did), or in PostgreSQL's double quotes, inside which
//! anything goes and `""` stands for one quote (`"Sales"."Order Items"`,
//! `"a.b"."c,d"`). Lists are split at commas outside quotes.
//!
//! Invariant: [`TableName::qualified`] (`schema.table`, unquoted) is the
//! name's identity everywhere inside walpipe; it is made from the parts,
//! never split again.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} has a quote that is not closed: close it, as in \"Sales\".\"Order Items\"")]
    Unclosed(String),
    #[error(
        "{0:?} is not a table name: write schema.table, quoting parts that hold dots, commas or quotes, as in \"Sales\".\"Order Items\""
    )]
    Malformed(String),
    #[error(
        "{0:?} is not a mapping: write source=destination pairs with the destination's schema, like public.orders=raw.orders"
    )]
    Mapping(String),
}

impl TableName {
    pub fn new(schema: &str, name: &str) -> TableName {
        TableName { schema: schema.to_string(), name: name.to_string() }
    }

    /// `schema.table` or `table` (schema `public`), parts plain or quoted.
    pub fn parse(text: &str) -> Result<TableName, NameError> {
        let malformed = || NameError::Malformed(text.to_string());
        let parts = identifiers(text)?;
        match parts.as_slice() {
            [name] => Ok(TableName::new("public", name)),
            [schema, name] => Ok(TableName::new(schema, name)),
            _ => Err(malformed()),
        }
        .and_then(|table| {
            if table.schema.is_empty() || table.name.is_empty() { Err(malformed()) } else { Ok(table) }
        })
    }

    /// `schema.table`, unquoted: the name walpipe knows the table by.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `"schema"."table"`, for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.qualified())
    }
}

/// `"name"`, with quotes doubled: an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `stem` then `suffix`, the stem cut (on a character boundary) so that
/// the whole fits PostgreSQL's 63-byte identifiers.
pub fn with_suffix(stem: &str, suffix: &str) -> String {
    let mut cut = 63usize.saturating_sub(suffix.len()).min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &stem[..cut])
}

/// `'text'`, with quotes doubled: a string literal for SQL.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The dot-separated parts of one name, unquoted.
fn identifiers(text: &str) -> Result<Vec<String>, NameError> {
    let text = text.trim();
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(NameError::Unclosed(text.to_string())),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(NameError::Malformed(text.to_string()));
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                if c == '"' {
                    return Err(NameError::Malformed(text.to_string()));
                }
                part.push(c);
            }
            part = part.trim().to_string();
        }
        parts.push(part);
        if chars.next().is_none() {
            return Ok(parts);
        }
    }
}

/// Splits `text` at `separator` outside double quotes; trims each piece and
/// leaves out empty ones.
pub fn split_outside_quotes(text: &str, separator: char) -> Result<Vec<String>, NameError> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c == separator && !quoted => pieces.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        return Err(NameError::Unclosed(text.to_string()));
    }
    pieces.push(current);
    Ok(pieces.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
}

/// A comma-separated list of table names.
pub fn parse_list(text: &str) -> Result<Vec<TableName>, NameError> {
    split_outside_quotes(text, ',')?.iter().map(|name| TableName::parse(name)).collect()
}

/// `source=destination` pairs, comma-separated, each side a table name;
/// the destination names its schema (a bare name would silently land in public).
pub fn parse_mappings(text: &str) -> Result<Vec<(TableName, TableName)>, NameError> {
    split_outside_quotes(text, ',')?
        .into_iter()
        .map(|pair| {
            let wrong = || NameError::Mapping(pair.clone());
            let sides = split_outside_quotes(&pair, '=').map_err(|_| wrong())?;
            let [from, to] = sides.as_slice() else { return Err(wrong()) };
            if split_outside_quotes(to, '.').map_err(|_| wrong())?.len() != 2 {
                return Err(wrong());
            }
            Ok((TableName::parse(from)?, TableName::parse(to)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(schema: &str, table: &str) -> TableName {
        TableName::new(schema, table)
    }

    #[test]
    fn plain_names_are_taken_as_written() {
        assert_eq!(TableName::parse("public.orders"), Ok(name("public", "orders")));
        assert_eq!(TableName::parse("orders"), Ok(name("public", "orders")));
        assert_eq!(TableName::parse(" Sales.Order Items "), Ok(name("Sales", "Order Items")));
    }

    #[test]
    fn quoted_names_follow_postgres() {
        assert_eq!(TableName::parse(r#""Sales"."Order Items""#), Ok(name("Sales", "Order Items")));
        assert_eq!(TableName::parse(r#""a.b"."c,d""#), Ok(name("a.b", "c,d")));
        assert_eq!(TableName::parse(r#"public."say ""hi""""#), Ok(name("public", r#"say "hi""#)));
        assert_eq!(TableName::parse(r#""Orders""#), Ok(name("public", "Orders")));
    }

    #[test]
    fn bad_names_say_how_to_write_them() {
        assert!(matches!(TableName::parse(r#""Sales.orders"#), Err(NameError::Unclosed(_))));
        for bad in ["a.b.c", "a.", ".b", r#""a"x.b"#, r#"a"b.c"#] {
            assert!(matches!(TableName::parse(bad), Err(NameError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn lists_split_outside_quotes() {
        let list = parse_list(r#"public.orders, "Sales"."Order, Items",x"#).expect("valid");
        assert_eq!(list, vec![name("public", "orders"), name("Sales", "Order, Items"), name("public", "x")]);
        assert_eq!(parse_list(" , ").expect("empty"), vec![]);
        assert!(parse_list(r#""unclosed, x"#).is_err());
    }

    #[test]
    fn mappings_take_the_same_names() {
        let pairs =
            parse_mappings(r#"public.orders=raw.orders, customers = "Raw"."People, all""#).expect("valid");
        assert_eq!(
            pairs,
            vec![
                (name("public", "orders"), name("raw", "orders")),
                (name("public", "customers"), name("Raw", "People, all")),
            ]
        );
        for bad in ["public.orders", "a=b", "a=b=c", "a.b=c.d.e"] {
            assert!(parse_mappings(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_for_sql() {
        assert_eq!(quote_ident("my \"pub\""), "\"my \"\"pub\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn quoting_round_trips() {
        let table = name("Sa\"les", "Order Items");
        assert_eq!(table.quoted(), r#""Sa""les"."Order Items""#);
        assert_eq!(TableName::parse(&table.quoted()), Ok(table));
    }
}
