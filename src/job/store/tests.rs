use super::*;

fn job(state: State, leased: bool) -> JobRow {
    let definition =
        serde_json::json!({"name": "j", "source_url": "postgres://u@h/db", "sink_url": "stdout:"});
    JobRow {
        definition: serde_json::from_value(definition).expect("a definition"),
        from_environment: false,
        state,
        phase: None,
        error: None,
        worker_id: leased.then(|| "w".to_string()),
        leased,
        reset_requested: false,
        cleanup_requested: false,
        status: serde_json::json!({}),
        checkpoint_lsn: None,
        requested: None,
        revision: 0,
        copy_requests: Default::default(),
    }
}

#[test]
fn an_action_on_a_job_a_worker_runs_is_a_request_else_it_takes_effect_at_once() {
    for state in [State::Starting, State::Running, State::Pausing, State::Paused] {
        for action in [Action::Pause, Action::Resume, Action::Stop, Action::Restart] {
            assert_eq!(
                placement(&job(state, true), action, false),
                Placement::Request,
                "{action:?} from {state}"
            );
        }
    }
    assert_eq!(
        placement(&job(State::Running, false), Action::Pause, false),
        Placement::AtOnce,
        "nobody runs it"
    );
    assert_eq!(placement(&job(State::Pending, false), Action::Stop, false), Placement::AtOnce);
    assert_eq!(placement(&job(State::Stopped, true), Action::Start, false), Placement::AtOnce);
    // A cleanup needs a worker to drop the slot, even for a job nobody runs now.
    assert_eq!(placement(&job(State::Pending, false), Action::Stop, true), Placement::Request);
    assert_eq!(placement(&job(State::Failed, false), Action::Restart, false), Placement::AtOnce);
}

#[test]
fn a_requested_action_is_read_back_or_refused_as_corrupt() {
    assert_eq!(parse_requested(Some("pause".into())).expect("an action"), Some(Action::Pause));
    assert_eq!(parse_requested(None).expect("none"), None);
    assert!(matches!(parse_requested(Some("dance".into())), Err(StoreError::Corrupt(_))));
}
