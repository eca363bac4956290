//! How a destination table follows a new shape of its source table. Pure:
//! the plan is made here from facts read elsewhere (`follow`).
//!
//! pgoutput's Relation message names the columns and their types, but not
//! their attribute numbers, defaults, or whether one was renamed: a rename
//! looks like a drop plus an add. So columns are matched:
//! 1. by name: the same column (its type may have changed);
//! 2. by the source's attribute number, for a destination column whose
//!    name is gone and a new name: a rename. The attribute number a
//!    destination column came from is kept in `walpipe.source_columns`;
//!    the new name's number is read from the source catalog when the shape
//!    arrives.
//!
//! Invariants:
//! - A value is never written to another column: rows are matched to
//!   columns by name (the destination's statements are rebuilt for each
//!   shape), and a column is renamed only when the attribute numbers prove it.
//! - What existing destination rows hold in an added column is the value the
//!   source gives its existing rows when the catalog can tell it (no default:
//!   NULL; a constant default: PostgreSQL's "missing value"), else the table
//!   is marked as needing a re-copy, with the reason. The same goes for a
//!   type change the source could only have made with a `USING` expression
//!   (no implicit or assignment cast), and for a destination column whose
//!   origin is unknown next to an added column (it may be a rename).

/// One column of a shape, as the Relation message gave it, with the type
/// the destination uses for it (resolved by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub is_key: bool,
    /// The destination's type for it, as `format_type` prints it.
    pub sql_type: String,
}

/// A column the destination has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationColumn {
    pub name: String,
    pub sql_type: String,
    /// The source attribute number it came from, when known.
    pub attnum: Option<i16>,
}

/// An attribute of the source table in its catalog now, dropped ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAttribute {
    pub name: String,
    pub attnum: i16,
    pub type_oid: u32,
    pub dropped: bool,
    pub existing: Existing,
}

/// For each column of `shape`, the source attribute it is now, when the
/// catalog can tell. A shape lists the table's live columns in attribute
/// order as they were when it was sent; since then columns may have been
/// renamed, dropped or added (added ones come last). So:
/// - a column found by name is that attribute (if the order still holds);
/// - the columns not found, between two found ones, are the live
///   attributes between them (dropped ones skipped), in order, when they are
///   as many and of the same types: they were renamed;
/// - those after the last found one are the first attributes after it,
///   when none of those was dropped and the types match;
/// - anything else is unknown (`None`), never guessed.
pub fn origins<'a>(
    shape: &[ShapeColumn],
    catalog: &'a [SourceAttribute],
) -> Vec<Option<&'a SourceAttribute>> {
    let mut attributes: Vec<&SourceAttribute> = catalog.iter().collect();
    attributes.sort_by_key(|a| a.attnum);
    let mut found: Vec<Option<&SourceAttribute>> = Vec::with_capacity(shape.len());
    let mut last = 0;
    for column in shape {
        let by_name = attributes.iter().find(|a| !a.dropped && a.name == column.name).copied();
        match by_name {
            Some(attribute) if attribute.attnum > last => {
                last = attribute.attnum;
                found.push(Some(attribute));
            }
            _ => found.push(None),
        }
    }
    let named: Vec<i16> = found.iter().flatten().map(|a| a.attnum).collect();
    let mut start = 0;
    while start < shape.len() {
        if found[start].is_some() {
            start += 1;
            continue;
        }
        let end = (start..shape.len()).find(|&i| found[i].is_some()).unwrap_or(shape.len());
        let low = found[..start].iter().rev().flatten().next().map_or(0, |a| a.attnum);
        let between = attributes.iter().filter(|a| a.attnum > low && !named.contains(&a.attnum));
        let candidates: Vec<&SourceAttribute> = match found.get(end).copied().flatten() {
            Some(high) => between.filter(|a| a.attnum < high.attnum && !a.dropped).copied().collect(),
            None => between.take(end - start).copied().collect(),
        };
        let fits = candidates.len() == end - start
            && candidates.iter().zip(&shape[start..end]).all(|(a, c)| !a.dropped && a.type_oid == c.type_oid);
        if fits {
            for (slot, attribute) in found[start..end].iter_mut().zip(candidates) {
                *slot = Some(attribute);
            }
        }
        start = end;
    }
    found
}

/// What existing rows hold in a column added on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    Null,
    /// PostgreSQL's missing value, as the text of a one-element array (`{7}`).
    Value(String),
    /// Each row has its own (a volatile default), or the catalog cannot tell.
    Unknown,
}

/// What a dropped source column does to its destination column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPolicy {
    /// `WALPIPE_SCHEMA_DROP=drop` (the default): the mirror keeps the source's shape.
    Drop,
    /// `keep`: the column stays, NULL in rows written from now on.
    Keep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Rename {
        from: String,
        to: String,
    },
    Add {
        name: String,
        sql_type: String,
        existing: Existing,
    },
    Retype {
        name: String,
        sql_type: String,
    },
    Drop {
        name: String,
    },
    /// Kept (DropPolicy::Keep): made nullable, as new rows leave it out.
    Keep {
        name: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Why existing destination rows may now differ from the source.
    pub recopy_reasons: Vec<String>,
}

/// The steps that turn `destination` into `shape`.
/// `origins`: for each shape column, the source attribute it is now ([`origins`]).
/// `cast_is_plain(from, to)`: whether the source could change a column's
/// type from `from` to `to` without a `USING` expression.
pub fn plan(
    destination: &[DestinationColumn],
    shape: &[ShapeColumn],
    origins: &[Option<&SourceAttribute>],
    drops: DropPolicy,
    cast_is_plain: impl Fn(&str, &str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let in_shape = |name: &str| shape.iter().any(|c| c.name == name);
    let mut gone: Vec<&DestinationColumn> = destination.iter().filter(|d| !in_shape(&d.name)).collect();
    let unknown_origin = gone.iter().any(|d| d.attnum.is_none());

    for (column, origin) in shape.iter().zip(origins) {
        if let Some(existing) = destination.iter().find(|d| d.name == column.name) {
            retype(&mut plan, &existing.name, &existing.sql_type, column, &cast_is_plain);
            continue;
        }
        let attnum = origin.map(|a| a.attnum);
        if let Some(at) = gone.iter().position(|d| d.attnum.is_some() && d.attnum == attnum) {
            let renamed = gone.remove(at);
            plan.steps.push(Step::Rename { from: renamed.name.clone(), to: column.name.clone() });
            retype(&mut plan, &column.name, &renamed.sql_type, column, &cast_is_plain);
            continue;
        }
        let mut existing = origin.map_or(Existing::Unknown, |a| a.existing.clone());
        if unknown_origin && existing != Existing::Unknown {
            plan.recopy_reasons.push(format!(
                "column {} was added while a column of unknown origin went away: it may be a rename",
                column.name
            ));
            existing = Existing::Unknown;
        } else if existing == Existing::Unknown {
            plan.recopy_reasons.push(format!(
                "column {} was added with values walpipe cannot know for existing rows (a volatile default, or the catalog changed again since)",
                column.name
            ));
        }
        plan.steps.push(Step::Add { name: column.name.clone(), sql_type: column.sql_type.clone(), existing });
    }
    for column in gone {
        plan.steps.push(match drops {
            DropPolicy::Drop => Step::Drop { name: column.name.clone() },
            DropPolicy::Keep => Step::Keep { name: column.name.clone() },
        });
    }
    plan
}

fn retype(
    plan: &mut Plan,
    name: &str,
    old_type: &str,
    column: &ShapeColumn,
    cast_is_plain: &impl Fn(&str, &str) -> bool,
) {
    if old_type == column.sql_type {
        return;
    }
    if !cast_is_plain(old_type, &column.sql_type) {
        plan.recopy_reasons.push(format!(
            "column {name} changed type from {old_type} to {}, which takes a USING expression walpipe cannot see",
            column.sql_type
        ));
    }
    plan.steps.push(Step::Retype { name: name.to_string(), sql_type: column.sql_type.clone() });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(columns: &[(&str, &str)]) -> Vec<ShapeColumn> {
        columns
            .iter()
            .map(|(name, sql_type)| ShapeColumn {
                name: name.to_string(),
                type_oid: 0,
                type_modifier: -1,
                is_key: *name == "id",
                sql_type: sql_type.to_string(),
            })
            .collect()
    }

    fn dest(columns: &[(&str, &str, i16)]) -> Vec<DestinationColumn> {
        columns
            .iter()
            .map(|(name, sql_type, attnum)| DestinationColumn {
                name: name.to_string(),
                sql_type: sql_type.to_string(),
                attnum: (*attnum > 0).then_some(*attnum),
            })
            .collect()
    }

    fn now(columns: &[(&str, i16, Existing)]) -> Vec<SourceAttribute> {
        columns
            .iter()
            .map(|(name, attnum, existing)| SourceAttribute {
                name: name.to_string(),
                attnum: *attnum,
                type_oid: 0,
                dropped: name.is_empty(),
                existing: existing.clone(),
            })
            .collect()
    }

    /// `plan` with the origins `origins` finds.
    fn plan_now(
        d: &[DestinationColumn],
        s: &[ShapeColumn],
        n: &[SourceAttribute],
        drops: DropPolicy,
        cast_is_plain: impl Fn(&str, &str) -> bool,
    ) -> Plan {
        plan(d, s, &origins(s, n), drops, cast_is_plain)
    }

    #[test]
    fn origins_are_found_by_name_then_by_order_never_guessed() {
        let s = shape(&[("id", "integer"), ("k1", "integer"), ("v", "text"), ("tail", "text")]);
        let names = |found: Vec<Option<&SourceAttribute>>| -> Vec<Option<String>> {
            found.into_iter().map(|a| a.map(|a| a.name.clone())).collect()
        };
        // k1 renamed to kk1 since, tail renamed to t2, a column added after.
        let n = now(&[
            ("id", 1, Existing::Null),
            ("kk1", 2, Existing::Null),
            ("v", 3, Existing::Null),
            ("t2", 4, Existing::Null),
            ("added", 5, Existing::Null),
        ]);
        assert_eq!(
            names(origins(&s, &n)),
            [Some("id"), Some("kk1"), Some("v"), Some("t2")].map(|n| n.map(str::to_string))
        );
        // A dropped attribute right after the last known one: the trailing column may be it.
        let n = now(&[
            ("id", 1, Existing::Null),
            ("kk1", 2, Existing::Null),
            ("v", 3, Existing::Null),
            ("", 4, Existing::Null),
            ("added", 5, Existing::Null),
        ]);
        assert_eq!(origins(&s, &n)[3], None);
        // Between two known columns, a dropped attribute is skipped (dropped before or after).
        let n = now(&[
            ("id", 1, Existing::Null),
            ("", 2, Existing::Null),
            ("kk1", 3, Existing::Null),
            ("v", 4, Existing::Null),
            ("tail", 5, Existing::Null),
        ]);
        assert_eq!(origins(&s, &n)[1].map(|a| a.attnum), Some(3));
        // Two candidates for one column: unknown.
        let n = now(&[
            ("id", 1, Existing::Null),
            ("x", 2, Existing::Null),
            ("y", 3, Existing::Null),
            ("v", 4, Existing::Null),
            ("tail", 5, Existing::Null),
        ]);
        assert_eq!(origins(&s, &n)[1], None);
    }

    fn plain(_: &str, _: &str) -> bool {
        true
    }

    #[test]
    fn the_same_shape_needs_nothing() {
        let d = dest(&[("id", "integer", 1), ("a", "text", 2)]);
        let plan = plan_now(&d, &shape(&[("id", "integer"), ("a", "text")]), &[], DropPolicy::Drop, plain);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn an_added_column_gets_the_value_existing_source_rows_have() {
        let d = dest(&[("id", "integer", 1)]);
        let s = shape(&[("id", "integer"), ("b", "integer"), ("c", "text"), ("r", "double precision")]);
        let n = now(&[
            ("id", 1, Existing::Null),
            ("b", 2, Existing::Value("{7}".into())),
            ("c", 3, Existing::Null),
            ("r", 4, Existing::Unknown),
        ]);
        let plan = plan_now(&d, &s, &n, DropPolicy::Drop, plain);
        assert_eq!(
            plan.steps,
            vec![
                Step::Add {
                    name: "b".into(),
                    sql_type: "integer".into(),
                    existing: Existing::Value("{7}".into())
                },
                Step::Add { name: "c".into(), sql_type: "text".into(), existing: Existing::Null },
                Step::Add {
                    name: "r".into(),
                    sql_type: "double precision".into(),
                    existing: Existing::Unknown
                },
            ]
        );
        assert_eq!(plan.recopy_reasons.len(), 1, "only the volatile default: {:?}", plan.recopy_reasons);
    }

    #[test]
    fn a_drop_and_an_add_of_the_same_width_never_shift_values() {
        // DROP COLUMN a; ADD COLUMN c: b keeps its values, a goes, c is new.
        let d = dest(&[("id", "integer", 1), ("a", "text", 2), ("b", "text", 3)]);
        let s = shape(&[("id", "integer"), ("b", "text"), ("c", "text")]);
        let n = now(&[("id", 1, Existing::Null), ("b", 3, Existing::Null), ("c", 4, Existing::Null)]);
        let drop = plan_now(&d, &s, &n, DropPolicy::Drop, plain);
        assert_eq!(
            drop.steps,
            vec![
                Step::Add { name: "c".into(), sql_type: "text".into(), existing: Existing::Null },
                Step::Drop { name: "a".into() },
            ]
        );
        assert!(drop.recopy_reasons.is_empty());
        let keep = plan_now(&d, &s, &n, DropPolicy::Keep, plain);
        assert_eq!(keep.steps[1], Step::Keep { name: "a".into() });
    }

    #[test]
    fn a_rename_is_known_by_its_attribute_number() {
        let d = dest(&[("id", "integer", 1), ("status", "text", 2)]);
        let s = shape(&[("id", "integer"), ("state", "text")]);
        let n = now(&[("id", 1, Existing::Null), ("state", 2, Existing::Null)]);
        let plan = plan_now(&d, &s, &n, DropPolicy::Drop, plain);
        assert_eq!(plan.steps, vec![Step::Rename { from: "status".into(), to: "state".into() }]);
        assert!(plan.recopy_reasons.is_empty());
    }

    #[test]
    fn a_column_of_unknown_origin_next_to_an_add_marks_a_recopy() {
        let d = dest(&[("id", "integer", 1), ("old", "text", 0)]);
        let s = shape(&[("id", "integer"), ("new", "text")]);
        let n = now(&[("id", 1, Existing::Null), ("new", 2, Existing::Null)]);
        let plan = plan_now(&d, &s, &n, DropPolicy::Drop, plain);
        assert_eq!(
            plan.steps[0],
            Step::Add { name: "new".into(), sql_type: "text".into(), existing: Existing::Unknown }
        );
        assert_eq!(plan.steps[1], Step::Drop { name: "old".into() });
        assert_eq!(plan.recopy_reasons.len(), 1);
    }

    #[test]
    fn a_type_change_follows_and_one_that_needed_using_marks_a_recopy() {
        let d = dest(&[("id", "integer", 1), ("n", "integer", 2), ("t", "text", 3)]);
        let s = shape(&[("id", "integer"), ("n", "bigint"), ("t", "integer")]);
        let n = now(&[("id", 1, Existing::Null), ("n", 2, Existing::Null), ("t", 3, Existing::Null)]);
        let plan = plan_now(&d, &s, &n, DropPolicy::Drop, |from, _| from != "text");
        assert_eq!(
            plan.steps,
            vec![
                Step::Retype { name: "n".into(), sql_type: "bigint".into() },
                Step::Retype { name: "t".into(), sql_type: "integer".into() },
            ]
        );
        assert_eq!(plan.recopy_reasons.len(), 1, "{:?}", plan.recopy_reasons);
        assert!(plan.recopy_reasons[0].contains("USING"));
    }
}
