use super::*;

fn spec(vars: &[(&str, &str)]) -> Result<Option<JobSpec>, SpecError> {
    let config = Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("config");
    JobSpec::from_config(&config)
}

#[test]
fn defaults_and_names() {
    let job = spec(&[("WALPIPE_SOURCE_URL", "postgres://a@h/db"), ("WALPIPE_SINK_URL", "postgres://b@k/db")])
        .expect("valid")
        .expect("a job");
    assert_eq!(job.slot, "walpipe_default");
    assert_eq!(job.publication, "walpipe_default");
    assert_eq!(job.snapshot_mode, SnapshotMode::Initial);
    assert_eq!(job.sink_settings().destination("public", "t"), ("public".into(), "t".into()));
    assert!(spec(&[]).expect("valid").is_none(), "no source, no environment job");
}

#[test]
fn mappings_and_tables() {
    let job = spec(&[
        ("WALPIPE_SOURCE_URL", "postgres://a@h/db"),
        ("WALPIPE_SINK_URL", "postgres://b@k/db"),
        ("WALPIPE_TABLES", "public.orders, public.customers"),
        ("WALPIPE_TABLE_MAPPINGS", "public.orders=raw.orders,customers=raw.people"),
    ])
    .expect("valid")
    .expect("a job");
    assert_eq!(job.tables, vec![TableName::new("public", "orders"), TableName::new("public", "customers")]);
    assert_eq!(job.sink_settings().destination("public", "orders"), ("raw".into(), "orders".into()));
    assert_eq!(job.sink_settings().destination("public", "customers"), ("raw".into(), "people".into()));
}

#[test]
fn bad_settings_name_the_variable() {
    let base = [("WALPIPE_SOURCE_URL", "postgres://a@h/db"), ("WALPIPE_SINK_URL", "postgres://b@k/db")];
    for (name, value) in [
        ("WALPIPE_SNAPSHOT_MODE", "sometimes"),
        ("WALPIPE_TABLE_MAPPINGS", "orders"),
        ("WALPIPE_SLOT_NAME", "Bad-Slot"),
        ("WALPIPE_START_POSITION", "yesterday"),
        ("WALPIPE_BATCH_SIZE", "0"),
    ] {
        let mut vars = base.to_vec();
        vars.push((name, value));
        let error = spec(&vars).expect_err(name).to_string();
        assert!(error.contains(name), "{error}");
    }
    let error = spec(&[("WALPIPE_SOURCE_URL", "postgres://a@h/db")]).expect_err("no sink").to_string();
    assert!(error.contains("WALPIPE_SINK_URL"), "{error}");
}

#[test]
fn sinks_outside_postgres_keep_their_checkpoint_elsewhere_and_refuse_settings_they_cannot_use() {
    let source = ("WALPIPE_SOURCE_URL", "postgres://a@h/db");
    let job =
        spec(&[source, ("WALPIPE_SINK_URL", "https://hooks.example.com/x")]).expect("valid").expect("job");
    assert!(matches!(job.sink, SinkTarget::Webhook(_)));
    assert_eq!(
        job.checkpoint_db.to_string(),
        job.source.to_string(),
        "the state store defaults to the source"
    );
    let outbox = spec(&[
        source,
        ("WALPIPE_SINK_URL", "stdout:"),
        ("WALPIPE_OUTBOX_TABLES", "outbox"),
        ("WALPIPE_OUTBOX_PREFIX", "events"),
    ])
    .expect("valid")
    .expect("job");
    assert!(
        outbox.outbox.tables.contains("public.outbox") && outbox.outbox.prefix.as_deref() == Some("events")
    );
    for (vars, named) in [
        (
            vec![("WALPIPE_SINK_URL", "postgres://b@k/db"), ("WALPIPE_SINK_SIGNING_SECRET", "s")],
            "WALPIPE_SINK_SIGNING_SECRET",
        ),
        (
            vec![("WALPIPE_SINK_URL", "starrocks://u:p@fe:8030/db"), ("WALPIPE_OUTBOX_TABLES", "outbox")],
            "WALPIPE_OUTBOX_TABLES",
        ),
        (
            vec![
                ("WALPIPE_SINK_URL", "stdout:"),
                ("WALPIPE_TABLES", "public.orders"),
                ("WALPIPE_OUTBOX_TABLES", "outbox"),
            ],
            "WALPIPE_TABLES",
        ),
        (vec![("WALPIPE_SINK_URL", "stdout:"), ("WALPIPE_OUTBOX_DELETE", "true")], "WALPIPE_OUTBOX_DELETE"),
        (vec![("WALPIPE_SINK_URL", "kafka://b/t")], "WALPIPE_SINK_URL"),
    ] {
        let mut all = vec![source];
        all.extend(vars);
        let error = spec(&all).expect_err(named).to_string();
        assert!(error.contains(named), "{error}");
    }
}

#[test]
fn the_signing_secret_is_never_shown() {
    let config = Config::from_vars(
        [
            ("WALPIPE_SOURCE_URL", "postgres://a:pw@h/db?sslmode=require&password=qpw"),
            ("WALPIPE_SINK_URL", "https://u:hookpw@hooks.example.com/x?token=tok3n"),
            ("WALPIPE_SINK_SIGNING_SECRET", "s3cret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("config");
    let definition = JobDefinition::from_config(&config).expect("valid").expect("job");
    let shown = serde_json::to_string(&definition.redacted()).expect("json");
    for secret in ["s3cret", "hookpw", ":pw@", "qpw", "tok3n"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let spec = JobSpec::from_definition(&definition, Naming::Environment).expect("valid");
    let printed = format!("{spec:?} {} {}", spec.sink, spec.source);
    for secret in ["s3cret", "hookpw", "qpw", "tok3n"] {
        assert!(!printed.contains(secret), "{printed}");
    }
}

#[test]
fn a_mysql_source_is_read_by_its_scheme_and_its_state_store_is_set_later() {
    let job = spec(&[
        ("WALPIPE_SOURCE_URL", "mariadb://u:pw@h:3306/shop"),
        ("WALPIPE_SINK_URL", "https://hook.example/in"),
    ])
    .expect("valid")
    .expect("a job");
    assert_eq!(job.source.to_string(), "mysql://u@h:3306/shop", "no password shown");
    assert!(
        job.checkpoint_db.to_string().contains("state-store.invalid"),
        "the supervisor points it at the state store"
    );
    let error = spec(&[("WALPIPE_SOURCE_URL", "oracle://u@h/db"), ("WALPIPE_SINK_URL", "postgres://b@k/db")])
        .expect_err("no such source")
        .to_string();
    assert!(error.contains("expected postgres://") && error.contains("mysql://"), "{error}");
}
