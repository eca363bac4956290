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
            Step::Add { name: "r".into(), sql_type: "double precision".into(), existing: Existing::Unknown },
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
            Step::Drop { name: "a".into() },
            Step::Add { name: "c".into(), sql_type: "text".into(), existing: Existing::Null },
        ]
    );
    assert!(drop.recopy_reasons.is_empty());
    let keep = plan_now(&d, &s, &n, DropPolicy::Keep, plain);
    assert_eq!(keep.steps[0], Step::Keep { name: "a".into() });
}

#[test]
fn a_column_dropped_and_added_again_under_its_name_is_a_new_column_never_a_cast() {
    // DROP COLUMN a (text, attribute 2); ADD COLUMN a int (attribute 3).
    let d = dest(&[("id", "integer", 1), ("a", "text", 2)]);
    let s = shape(&[("id", "integer"), ("a", "integer")]);
    let n = now(&[("id", 1, Existing::Null), ("", 2, Existing::Null), ("a", 3, Existing::Null)]);
    let add = Step::Add { name: "a".into(), sql_type: "integer".into(), existing: Existing::Null };
    let drop = plan_now(&d, &s, &n, DropPolicy::Drop, |_, _| false);
    assert_eq!(drop.steps, vec![Step::Drop { name: "a".into() }, add.clone()]);
    assert!(drop.recopy_reasons.is_empty(), "{:?}", drop.recopy_reasons);
    let keep = plan_now(&d, &s, &n, DropPolicy::Keep, |_, _| false);
    assert_eq!(keep.steps, vec![Step::KeepAside { name: "a".into(), aside: "a_dropped_2".into() }, add]);
    // The same type: still a new column, whose existing rows hold NULL, not the old values.
    let s = shape(&[("id", "integer"), ("a", "text")]);
    let drop = plan_now(&d, &s, &n, DropPolicy::Drop, plain);
    assert_eq!(
        drop.steps,
        vec![
            Step::Drop { name: "a".into() },
            Step::Add { name: "a".into(), sql_type: "text".into(), existing: Existing::Null }
        ]
    );
}

#[test]
fn a_rename_then_an_add_that_takes_the_old_name_renames_first() {
    // RENAME a TO b; ADD COLUMN a.
    let d = dest(&[("id", "integer", 1), ("a", "text", 2)]);
    let s = shape(&[("id", "integer"), ("b", "text"), ("a", "text")]);
    let n = now(&[("id", 1, Existing::Null), ("b", 2, Existing::Null), ("a", 3, Existing::Null)]);
    let plan = plan_now(&d, &s, &n, DropPolicy::Drop, plain);
    assert_eq!(
        plan.steps,
        vec![
            Step::Rename { from: "a".into(), to: "b".into() },
            Step::Add { name: "a".into(), sql_type: "text".into(), existing: Existing::Null },
        ]
    );
}

#[test]
fn a_shape_older_than_the_catalog_is_not_taken_for_a_new_column() {
    // The stream still describes a (text, attribute 2); the catalog has since a new a (int, 3).
    let d = dest(&[("id", "integer", 1), ("a", "text", 2)]);
    let mut s = shape(&[("id", "integer"), ("a", "text")]);
    s[1].type_oid = 25;
    let mut n = now(&[("id", 1, Existing::Null), ("", 2, Existing::Null), ("a", 3, Existing::Null)]);
    n[2].type_oid = 23;
    assert_eq!(origins(&s, &n)[1], None, "the catalog's a is another type: not this column");
    assert!(plan_now(&d, &s, &n, DropPolicy::Drop, plain).steps.is_empty());
}

#[test]
fn an_aside_name_fits_in_63_bytes() {
    assert_eq!(aside_name("a", 2), "a_dropped_2");
    let long = "é".repeat(40);
    let aside = aside_name(&long, 12);
    assert!(aside.len() <= 63 && aside.ends_with("_dropped_12"), "{aside}");
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
    // "old" is not known to come from the source: it is left as it is.
    assert_eq!(
        plan.steps,
        vec![Step::Add { name: "new".into(), sql_type: "text".into(), existing: Existing::Unknown }]
    );
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
