//! The job state machine of SPEC section 4, as data.
//!
//! ```text
//!  created ─start─> pending ─(a worker claims)─> starting ─> running ─pause─> paused ─resume─> running
//!  running|paused ─stop─> stopped ─start─> pending      running ─(permanent error / 10 retries)─> failed ─retry─> pending
//!  stopped|failed|paused|running ─restart─> pending (progress reset)      initial_only done ─> succeeded
//!  created|stopped|failed|succeeded ─delete─> (gone)
//! ```
//!
//! Invariants: an action is allowed exactly when [`TRANSITIONS`] lists it
//! for the current state; everything else is refused, naming the actions
//! that are allowed. Pure: no I/O.

use std::fmt;

/// Job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Created,
    Pending,
    Starting,
    Running,
    Paused,
    Stopped,
    Failed,
    Succeeded,
}

pub const ALL_STATES: [State; 8] = [
    State::Created,
    State::Pending,
    State::Starting,
    State::Running,
    State::Paused,
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
            State::Paused => "paused",
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
    (Action::Pause, &[State::Running], Some(State::Paused)),
    (Action::Resume, &[State::Paused], Some(State::Running)),
    (Action::Stop, &[State::Running, State::Paused], Some(State::Stopped)),
    (Action::Restart, &[State::Stopped, State::Failed, State::Paused, State::Running], Some(State::Pending)),
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
    if allowed.is_empty() {
        return "nothing until it settles".into();
    }
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

/// Every action allowed in `state`, in table order.
pub fn allowed_actions(state: State) -> Vec<Action> {
    TRANSITIONS.iter().filter(|(_, from, _)| from.contains(&state)).map(|(action, _, _)| *action).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_spec_section_4() {
        use Action::*;
        use State::*;
        let expected: &[(State, Action, Target)] = &[
            (Created, Start, Some(Pending)),
            (Stopped, Start, Some(Pending)),
            (Running, Pause, Some(Paused)),
            (Paused, Resume, Some(Running)),
            (Running, Stop, Some(Stopped)),
            (Paused, Stop, Some(Stopped)),
            (Stopped, Restart, Some(Pending)),
            (Failed, Restart, Some(Pending)),
            (Paused, Restart, Some(Pending)),
            (Running, Restart, Some(Pending)),
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
        assert!(
            apply(State::Starting, Action::Retry)
                .expect_err("refused")
                .to_string()
                .ends_with("nothing until it settles")
        );
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
