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
//! - A destination column that no source attribute is known to have made
//!   (one a person added) is never dropped.
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

pub use crate::source::table::{Existing, SourceAttribute};

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
            // Another type: the catalog has moved on since this shape (a new column took the name).
            Some(attribute) if attribute.attnum > last && attribute.type_oid == column.type_oid => {
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
    /// Kept, but a new column takes its name: renamed to `aside` and made nullable.
    KeepAside {
        name: String,
        aside: String,
    },
}

impl Step {
    /// Whether after this step a column named `name` is a new one or another's.
    pub fn adds_or_renames_to(&self, name: &str) -> bool {
        match self {
            Step::Add { name: added, .. } => added == name,
            Step::Rename { to, .. } => to == name,
            _ => false,
        }
    }
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
///
/// A destination column is a shape column of its name unless the attribute
/// numbers disagree: then the source dropped (or renamed away) the old
/// column and added a new one under the same name, and the old values are
/// not cast into it. Steps come in the order they can run: what goes away
/// first (freeing its name), then renames, then type changes and additions.
pub fn plan(
    destination: &[DestinationColumn],
    shape: &[ShapeColumn],
    origins: &[Option<&SourceAttribute>],
    drops: DropPolicy,
    cast_is_plain: impl Fn(&str, &str) -> bool,
) -> Plan {
    let same_column = |d: &DestinationColumn, origin: Option<&SourceAttribute>| match (d.attnum, origin) {
        (Some(recorded), Some(now)) => recorded == now.attnum,
        _ => true,
    };
    let matched: Vec<Option<&DestinationColumn>> = shape
        .iter()
        .zip(origins)
        .map(|(column, origin)| destination.iter().find(|d| d.name == column.name && same_column(d, *origin)))
        .collect();
    let mut gone: Vec<&DestinationColumn> =
        destination.iter().filter(|d| !matched.iter().flatten().any(|m| m.name == d.name)).collect();
    let unknown_origin = gone.iter().any(|d| d.attnum.is_none());

    let (mut renames, mut changes) = (Plan::default(), Plan::default());
    for ((column, origin), matched) in shape.iter().zip(origins).zip(matched) {
        if let Some(existing) = matched {
            retype(&mut changes, &existing.name, &existing.sql_type, column, &cast_is_plain);
            continue;
        }
        let attnum = origin.map(|a| a.attnum);
        if let Some(at) = gone.iter().position(|d| d.attnum.is_some() && d.attnum == attnum) {
            let renamed = gone.remove(at);
            renames.steps.push(Step::Rename { from: renamed.name.clone(), to: column.name.clone() });
            retype(&mut changes, &column.name, &renamed.sql_type, column, &cast_is_plain);
            continue;
        }
        let mut existing = origin.map_or(Existing::Unknown, |a| a.existing.clone());
        if unknown_origin && existing != Existing::Unknown {
            changes.recopy_reasons.push(format!(
                "column {} was added while a column of unknown origin went away: it may be a rename",
                column.name
            ));
            existing = Existing::Unknown;
        } else if existing == Existing::Unknown {
            changes.recopy_reasons.push(format!(
                "column {} was added with values walpipe cannot know for existing rows (a volatile default, or the catalog changed again since)",
                column.name
            ));
        }
        changes.steps.push(Step::Add {
            name: column.name.clone(),
            sql_type: column.sql_type.clone(),
            existing,
        });
    }
    let mut plan = Plan::default();
    // A column walpipe cannot tie to a source attribute (a person added it,
    // or it predates the records) is left as it is: it is not the source's to drop.
    for column in gone {
        let Some(attnum) = column.attnum else { continue };
        let name_reused = shape.iter().any(|c| c.name == column.name);
        plan.steps.push(match drops {
            DropPolicy::Drop => Step::Drop { name: column.name.clone() },
            DropPolicy::Keep if name_reused => {
                Step::KeepAside { name: column.name.clone(), aside: aside_name(&column.name, attnum) }
            }
            DropPolicy::Keep => Step::Keep { name: column.name.clone() },
        });
    }
    plan.steps.extend(renames.steps);
    plan.steps.extend(changes.steps);
    plan.recopy_reasons = changes.recopy_reasons;
    plan
}

/// Where `WALPIPE_SCHEMA_DROP=keep` keeps a dropped column whose name a new
/// column takes: `<name>_dropped_<its attribute number>`.
pub fn aside_name(name: &str, attnum: i16) -> String {
    crate::names::with_suffix(name, &format!("_dropped_{attnum}"))
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
mod tests;
