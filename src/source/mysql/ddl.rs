//! The columns an `ALTER TABLE` removes, and the tables a statement
//! renames, read from its text. Pure.
//!
//! The binlog logs DDL as a statement; the next rows' TABLE_MAP event
//! shows the new columns but not what happened in between. A column
//! dropped and added again under the same name before any row was written
//! would look unchanged, and its old values would stay in a mirror: so the
//! stream announces the shape without the removed columns at the DDL
//! itself (`stream`). A column renamed (`CHANGE`, `RENAME COLUMN`) counts as
//! removed: the new name arrives as an added column, which the mirror
//! cannot fill from the catalog and marks for a copy.

/// The table an `ALTER TABLE` statement names (`schema` when it names
/// none) and the columns it drops or renames; `None` for any other statement.
pub fn removed_columns(statement: &str, schema: &str) -> Option<(String, String, Vec<String>)> {
    let tokens = tokens(statement);
    let mut words = tokens.iter().map(|t| t.as_str());
    let mut next_upper = || words.next().map(str::to_ascii_uppercase);
    if next_upper()? != "ALTER" {
        return None;
    }
    let mut word = next_upper()?;
    while matches!(word.as_str(), "ONLINE" | "IGNORE") {
        word = next_upper()?;
    }
    if word != "TABLE" {
        return None;
    }
    let (table_schema, table, after) = table_named(&tokens, schema)?;
    let mut removed = Vec::new();
    for clause in tokens[after..].split(|t| t == ",") {
        let upper: Vec<String> = clause.iter().map(|t| t.to_ascii_uppercase()).collect();
        let word = |i: usize| upper.get(i).map(String::as_str);
        // Where the clause's column name is, if it removes one.
        let column = match (word(0), word(1)) {
            (
                Some("DROP"),
                Some(
                    "PRIMARY" | "INDEX" | "KEY" | "FOREIGN" | "CONSTRAINT" | "CHECK" | "PARTITION" | "PERIOD"
                    | "SYSTEM",
                ),
            ) => None,
            (Some("DROP" | "CHANGE" | "RENAME"), Some("COLUMN")) => Some(2),
            (Some("DROP" | "CHANGE"), _) => Some(1),
            _ => None,
        };
        if let Some(mut index) = column {
            if word(index) == Some("IF") && word(index + 1) == Some("EXISTS") {
                index += 2;
            }
            if let Some(name) = clause.get(index) {
                removed.push(name.clone());
            }
        }
    }
    Some((table_schema, table, removed))
}

/// A table name at `position` (`schema.name` or `name`, then in
/// `schema`), and the position after it.
fn table_at(tokens: &[String], position: usize, schema: &str) -> Option<(String, String, usize)> {
    match (tokens.get(position), tokens.get(position + 1), tokens.get(position + 2)) {
        (Some(first), Some(dot), Some(second)) if dot == "." => {
            Some((first.clone(), second.clone(), position + 3))
        }
        (Some(name), ..) if name != "," && name != "." => {
            Some((schema.to_string(), name.clone(), position + 1))
        }
        _ => None,
    }
}

/// A table as `(schema, name)`.
pub type TableRef = (String, String);

/// The tables a statement renames, each as (from, to): `RENAME TABLE a TO
/// b, c TO d`, or an `ALTER TABLE a ... RENAME [TO|AS] b`. Empty for any
/// other statement.
pub fn renamed_tables(statement: &str, schema: &str) -> Vec<(TableRef, TableRef)> {
    let tokens = tokens(statement);
    let upper = |i: usize| tokens.get(i).map(|t| t.to_ascii_uppercase());
    let mut renamed = Vec::new();
    if upper(0).as_deref() == Some("RENAME") && matches!(upper(1).as_deref(), Some("TABLE" | "TABLES")) {
        let mut at = 2;
        while let Some((from_schema, from, after)) = table_at(&tokens, at, schema) {
            if upper(after).as_deref() != Some("TO") {
                break;
            }
            let Some((to_schema, to, next)) = table_at(&tokens, after + 1, schema) else { break };
            renamed.push(((from_schema, from), (to_schema, to)));
            if tokens.get(next).map(String::as_str) != Some(",") {
                break;
            }
            at = next + 1;
        }
        return renamed;
    }
    // An ALTER TABLE names its table the way removed_columns reads it.
    let Some((from_schema, from, _)) = removed_columns(statement, schema) else { return renamed };
    for clause in tokens.split(|t| t == ",") {
        let Some(start) = clause.iter().position(|t| t.eq_ignore_ascii_case("RENAME")) else { continue };
        let mut at = start + 1;
        match clause.get(at).map(|t| t.to_ascii_uppercase()).as_deref() {
            Some("COLUMN" | "INDEX" | "KEY" | "CONSTRAINT") | None => continue,
            Some("TO" | "AS") => at += 1,
            _ => {}
        }
        if let Some((to_schema, to, _)) = table_at(clause, at, &from_schema) {
            renamed.push(((from_schema.clone(), from.clone()), (to_schema, to)));
        }
    }
    renamed
}

/// The table an `ALTER TABLE` names.
fn table_named(tokens: &[String], schema: &str) -> Option<(String, String, usize)> {
    let mut position = tokens.iter().position(|t| t.eq_ignore_ascii_case("TABLE"))? + 1;
    if tokens.get(position).is_some_and(|t| t.eq_ignore_ascii_case("IF"))
        && tokens.get(position + 1).is_some_and(|t| t.eq_ignore_ascii_case("EXISTS"))
    {
        position += 2;
    }
    table_at(tokens, position, schema)
}

/// Words, backquoted identifiers (unquoted), quoted strings, and `,` `.`
/// at the top level; what is inside parentheses is skipped.
fn tokens(statement: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = statement.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '`' | '\'' | '"' => {
                let mut text = String::new();
                while let Some(inner) = chars.next() {
                    if inner == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            text.push(c);
                            continue;
                        }
                        break;
                    }
                    text.push(inner);
                }
                if depth == 0 && c == '`' {
                    tokens.push(text);
                }
            }
            ',' | '.' if depth == 0 => tokens.push(c.to_string()),
            c if c.is_whitespace() => {}
            c if depth == 0 => {
                let mut word = c.to_string();
                while let Some(&next) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' || next == '$' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(word);
            }
            _ => {}
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(statement: &str) -> Option<(String, String, Vec<String>)> {
        removed_columns(statement, "shop")
    }

    #[test]
    fn drops_and_renames_are_removed_columns_and_other_clauses_are_not() {
        assert_eq!(
            removed("ALTER TABLE orders DROP COLUMN note"),
            Some(("shop".into(), "orders".into(), vec!["note".into()]))
        );
        assert_eq!(
            removed(
                "alter table `sales`.`Orders` drop `a b`, ADD COLUMN c int DEFAULT (1 + 2), DROP IF EXISTS d, DROP INDEX i, DROP PRIMARY KEY"
            ),
            Some(("sales".into(), "Orders".into(), vec!["a b".into(), "d".into()]))
        );
        assert_eq!(
            removed("ALTER TABLE orders CHANGE note remark varchar(9), RENAME COLUMN qty TO quantity"),
            Some(("shop".into(), "orders".into(), vec!["note".into(), "qty".into()]))
        );
        assert_eq!(
            removed("ALTER TABLE orders ADD COLUMN colour varchar(10)"),
            Some(("shop".into(), "orders".into(), vec![]))
        );
        assert_eq!(
            removed("ALTER ONLINE IGNORE TABLE IF EXISTS orders DROP x"),
            Some(("shop".into(), "orders".into(), vec!["x".into()]))
        );
        assert_eq!(removed("CREATE TABLE orders (id int)"), None);
        assert_eq!(removed("ALTER DATABASE shop CHARACTER SET utf8mb4"), None);
    }

    #[test]
    fn renamed_tables_are_read_from_rename_table_and_alter_table() {
        let table = |schema: &str, name: &str| (schema.to_string(), name.to_string());
        assert_eq!(
            renamed_tables("RENAME TABLE orders TO orders_old, `sales`.`new` TO orders", "shop"),
            vec![
                (table("shop", "orders"), table("shop", "orders_old")),
                (table("sales", "new"), table("shop", "orders"))
            ]
        );
        assert_eq!(
            renamed_tables("ALTER TABLE sales.orders ADD COLUMN x int, RENAME TO orders2", "shop"),
            vec![(table("sales", "orders"), table("sales", "orders2"))]
        );
        assert_eq!(
            renamed_tables("alter table orders rename as archive.orders", "shop"),
            vec![(table("shop", "orders"), table("archive", "orders"))]
        );
        assert!(renamed_tables("ALTER TABLE orders RENAME COLUMN a TO b", "shop").is_empty());
        assert!(renamed_tables("ALTER TABLE orders RENAME INDEX a TO b", "shop").is_empty());
        assert!(renamed_tables("CREATE TABLE orders (id int)", "shop").is_empty());
    }
}
