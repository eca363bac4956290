//! The job state machine, as data.
//!
//! ```text
//!  created ─start─> pending ─(a worker claims)─> starting ─(copies or streams)─> running
//!  starting|running ─pause─> pausing ─(the owner holds)─> paused ─resume─> running
//!  any live state ─stop─> stopping ─(the owner let go)─> stopped ─start─> pending
//!  running ─(permanent error / 10 retries)─> failed ─retry─> pending     initial_only done ─> succeeded
//!  stopped|failed|paused|pausing|running|starting ─restart─> (stopping) ─> pending (progress reset)
//!  created|stopped|failed|succeeded ─delete─> (gone)
//! ```
//!
//! A state is what a job was observed to be. An action on a job that a
//! worker runs is a request: the job shows the transition state
//! ([`pending_state`]) until its owner reaches the action's state
//! ([`reached`]). An action on a job nobody runs takes effect at once.
//!
//! Invariants: an action is allowed exactly when [`TRANSITIONS`] lists it
//! for the current state; everything else is refused, naming the actions
//! that are allowed. Every state allows at least one action; pause and stop
//! are allowed in every live state. Pure: no I/O.

use std::fmt;

/// What the metrics count a failure as (`walpipe_job_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    SlotInvalidated,
    Timeout,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 3] = [ErrorKind::SlotInvalidated, ErrorKind::Timeout, ErrorKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::SlotInvalidated => "slot_invalidated",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }
}

/// Job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Created,
    Pending,
    Starting,
    Running,
    Pausing,
    Paused,
    Stopping,
    Stopped,
    Failed,
    Succeeded,
}

pub const ALL_STATES: [State; 10] = [
    State::Created,
    State::Pending,
    State::Starting,
    State::Running,
    State::Pausing,
    State::Paused,
    State::Stopping,
    State::Stopped,
    State::Failed,
    State::Succeeded,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Pending => "pending",
            State::Starting => "starting",
            State::Running => "running",
            State::Pausing => "pausing",
            State::Paused => "paused",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Succeeded => "succeeded",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        ALL_STATES.into_iter().find(|state| state.as_str() == text)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a running job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Snapshot,
    Streaming,
}

pub const ALL_PHASES: [Phase; 2] = [Phase::Snapshot, Phase::Streaming];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Snapshot => "snapshot",
            Phase::Streaming => "streaming",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        ALL_PHASES.into_iter().find(|phase| phase.as_str() == text)
    }
}

/// What a user can ask of a job (the API's `POST /api/v1/jobs/{name}/{action}` and DELETE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Stop,
    Restart,
    Retry,
    Delete,
}

pub const ALL_ACTIONS: [Action; 7] = [
    Action::Start,
    Action::Pause,
    Action::Resume,
    Action::Stop,
    Action::Restart,
    Action::Retry,
    Action::Delete,
];

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Retry => "retry",
            Action::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        ALL_ACTIONS.into_iter().find(|action| action.as_str() == text)
    }
}

/// Where an allowed action leads; `None`: the job is gone.
pub type Target = Option<State>;

/// The transition table: action, the states it is allowed from, the state it leads to.
pub const TRANSITIONS: [(Action, &[State], Target); 7] = [
    (Action::Start, &[State::Created, State::Stopped], Some(State::Pending)),
    (Action::Pause, &[State::Pending, State::Starting, State::Running], Some(State::Paused)),
    (Action::Resume, &[State::Pausing, State::Paused], Some(State::Running)),
    (
        Action::Stop,
        &[State::Pending, State::Starting, State::Running, State::Pausing, State::Paused, State::Stopping],
        Some(State::Stopped),
    ),
    (
        Action::Restart,
        &[State::Stopped, State::Failed, State::Starting, State::Running, State::Pausing, State::Paused],
        Some(State::Pending),
    ),
    (Action::Retry, &[State::Failed], Some(State::Pending)),
    (Action::Delete, &[State::Created, State::Stopped, State::Failed, State::Succeeded], None),
];

/// The action is not allowed in the job's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a job that is {state}; allowed: {}", allowed_list(.allowed))]
pub struct Refused {
    pub action: &'static str,
    pub state: State,
    pub allowed: Vec<Action>,
}

fn allowed_list(allowed: &[Action]) -> String {
    allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

/// The state `action` leads to from `state`, or why not.
pub fn apply(state: State, action: Action) -> Result<Target, Refused> {
    TRANSITIONS
        .iter()
        .find(|(candidate, from, _)| *candidate == action && from.contains(&state))
        .map(|(_, _, to)| *to)
        .ok_or_else(|| Refused { action: action.as_str(), state, allowed: allowed_actions(state) })
}

/// What a job that a worker runs shows while `action` is pending: the
/// transition state, or `None` when it keeps its state until the owner acts
/// (a resume shows `paused` until the job runs again).
pub fn pending_state(action: Action) -> Option<State> {
    match action {
        Action::Pause => Some(State::Pausing),
        Action::Stop | Action::Restart => Some(State::Stopping),
        Action::Start | Action::Resume | Action::Retry | Action::Delete => None,
    }
}

/// Whether a job in `state` has reached what `action` asked, or settled
/// where it cannot (failed, succeeded): an action's call waits for this.
pub fn reached(action: Action, state: State) -> bool {
    let wanted = match action {
        Action::Pause => State::Paused,
        Action::Stop => State::Stopped,
        Action::Start | Action::Resume | Action::Restart | Action::Retry => State::Running,
        Action::Delete => return true,
    };
    state == wanted || matches!(state, State::Failed | State::Succeeded)
}

/// Every action allowed in `state`, in table order.
pub fn allowed_actions(state: State) -> Vec<Action> {
    TRANSITIONS.iter().filter(|(_, from, _)| from.contains(&state)).map(|(action, _, _)| *action).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_allows_pause_and_stop_in_every_live_state() {
        use Action::*;
        use State::*;
        let expected: &[(State, Action, Target)] = &[
            (Created, Start, Some(Pending)),
            (Stopped, Start, Some(Pending)),
            (Pending, Pause, Some(Paused)),
            (Starting, Pause, Some(Paused)),
            (Running, Pause, Some(Paused)),
            (Pausing, Resume, Some(Running)),
            (Paused, Resume, Some(Running)),
            (Pending, Stop, Some(Stopped)),
            (Starting, Stop, Some(Stopped)),
            (Running, Stop, Some(Stopped)),
            (Pausing, Stop, Some(Stopped)),
            (Paused, Stop, Some(Stopped)),
            (Stopping, Stop, Some(Stopped)),
            (Stopped, Restart, Some(Pending)),
            (Failed, Restart, Some(Pending)),
            (Starting, Restart, Some(Pending)),
            (Running, Restart, Some(Pending)),
            (Pausing, Restart, Some(Pending)),
            (Paused, Restart, Some(Pending)),
            (Failed, Retry, Some(Pending)),
            (Created, Delete, None),
            (Stopped, Delete, None),
            (Failed, Delete, None),
            (Succeeded, Delete, None),
        ];
        for state in ALL_STATES {
            for action in ALL_ACTIONS {
                let allowed = expected.iter().find(|(s, a, _)| *s == state && *a == action);
                match (apply(state, action), allowed) {
                    (Ok(target), Some((_, _, expected))) => {
                        assert_eq!(target, *expected, "{action:?} from {state}")
                    }
                    (Err(refused), None) => {
                        assert_eq!(refused.state, state);
                        let listed: Vec<Action> =
                            expected.iter().filter(|(s, _, _)| *s == state).map(|(_, a, _)| *a).collect();
                        assert_eq!(refused.allowed, listed, "allowed actions from {state}");
                    }
                    (outcome, allowed) => {
                        panic!("{action:?} from {state}: {outcome:?}, expected {allowed:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn a_refusal_reads_as_a_sentence() {
        let refused = apply(State::Created, Action::Pause).expect_err("refused");
        assert_eq!(refused.to_string(), "cannot pause a job that is created; allowed: start, delete");
        for state in ALL_STATES {
            assert!(!allowed_actions(state).is_empty(), "{state} allows nothing");
        }
    }

    #[test]
    fn a_request_shows_its_transition_state_until_its_state_is_reached() {
        assert_eq!(pending_state(Action::Pause), Some(State::Pausing));
        assert_eq!(pending_state(Action::Stop), Some(State::Stopping));
        assert_eq!(pending_state(Action::Resume), None);
        assert!(reached(Action::Pause, State::Paused) && !reached(Action::Pause, State::Pausing));
        assert!(reached(Action::Stop, State::Stopped) && !reached(Action::Stop, State::Stopping));
        assert!(reached(Action::Resume, State::Running) && !reached(Action::Resume, State::Paused));
        assert!(reached(Action::Start, State::Failed), "a failed start settles the wait");
    }

    #[test]
    fn names_round_trip() {
        for state in ALL_STATES {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        for action in ALL_ACTIONS {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
    }
}
