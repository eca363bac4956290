//! A job's status, as its run reached it: the state and phase, the tables
//! that need a re-copy (and a count of the marks made), and the position
//! the sink last made durable. The run and the sinks write it; the
//! supervisor, the API and the metrics observe it.
//!
//! Invariants:
//! - Observers ([`JobStatus::observe`]) see every change, in the order it
//!   was made, before the call that made it returns: a gauge never shows
//!   an older state than the API.
//! - Watchers ([`JobStatus::watch_state`], [`JobStatus::watch_marks`]) wake
//!   on every change made after they subscribed; a state set to what it
//!   already is wakes nobody.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::lifecycle::{Phase, State};
use crate::position::Position;

/// One change, as observers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    State(State, Option<Phase>),
    /// `table` needs a re-copy.
    NeedsRecopy {
        table: &'a str,
    },
    /// `table` was copied again: it no longer needs one.
    Recopied {
        table: &'a str,
    },
    /// The sink made everything up to this position durable.
    Checkpoint(Position),
}

type Observer = Box<dyn Fn(Change<'_>) + Send + Sync>;

/// One job's status; see the module.
pub struct JobStatus {
    state: watch::Sender<(State, Option<Phase>)>,
    /// Table to the reason it needs a re-copy.
    recopy: Mutex<BTreeMap<String, String>>,
    /// Counts the marks made, so that a running job can start its session
    /// again to begin their copy.
    marks: watch::Sender<u64>,
    checkpoint: Mutex<Option<Position>>,
    observers: Mutex<Vec<Observer>>,
}

impl Default for JobStatus {
    fn default() -> Self {
        JobStatus {
            state: watch::Sender::new((State::Created, None)),
            recopy: Mutex::new(BTreeMap::new()),
            marks: watch::Sender::new(0),
            checkpoint: Mutex::new(None),
            observers: Mutex::new(Vec::new()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JobStatus {
    /// Calls `observer` with every change from now on, and with the current state at once.
    pub fn observe(&self, observer: impl Fn(Change<'_>) + Send + Sync + 'static) {
        let (state, phase) = self.state();
        observer(Change::State(state, phase));
        lock(&self.observers).push(Box::new(observer));
    }

    fn tell(&self, change: Change<'_>) {
        for observer in lock(&self.observers).iter() {
            observer(change);
        }
    }

    /// Moves the job to `state` (and `phase` while running).
    pub fn set_state(&self, state: State, phase: Option<Phase>) {
        self.state.send_if_modified(|now| {
            let changed = *now != (state, phase);
            *now = (state, phase);
            changed
        });
        self.tell(Change::State(state, phase));
    }

    /// The current state and phase.
    pub fn state(&self) -> (State, Option<Phase>) {
        *self.state.borrow()
    }

    /// Wakes on every change of state or phase.
    pub fn watch_state(&self) -> watch::Receiver<(State, Option<Phase>)> {
        self.state.subscribe()
    }

    /// `table` needs a re-copy, for `reason`.
    pub fn needs_recopy(&self, table: &str, reason: &str) {
        lock(&self.recopy).insert(table.to_string(), reason.to_string());
        self.marks.send_modify(|marks| *marks += 1);
        self.tell(Change::NeedsRecopy { table });
    }

    /// Wakes on every new mark.
    pub fn watch_marks(&self) -> watch::Receiver<u64> {
        self.marks.subscribe()
    }

    /// The tables that need a re-copy, with the reason.
    pub fn recopy(&self) -> BTreeMap<String, String> {
        lock(&self.recopy).clone()
    }

    /// `table` was copied again.
    pub fn recopied_table(&self, table: &str) {
        if lock(&self.recopy).remove(table).is_some() {
            self.tell(Change::Recopied { table });
        }
    }

    /// Every table was copied again.
    pub fn recopied(&self) {
        let tables = std::mem::take(&mut *lock(&self.recopy));
        for table in tables.keys() {
            self.tell(Change::Recopied { table });
        }
    }

    /// The sink made everything up to `position` durable.
    pub fn checkpointed(&self, position: Position) {
        *lock(&self.checkpoint) = Some(position);
        self.tell(Change::Checkpoint(position));
    }

    /// The position the sink last made durable in this process.
    pub fn checkpoint(&self) -> Option<Position> {
        *lock(&self.checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn observers_see_every_change_in_order_and_watchers_wake() {
        let status = JobStatus::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        status.observe(move |change| lock(&log).push(format!("{change:?}")));
        let mut states = status.watch_state();
        let marks = status.watch_marks();
        status.set_state(State::Running, Some(Phase::Streaming));
        status.needs_recopy("public.t", "a type change");
        status.recopied_table("public.t");
        status.recopied_table("public.t");
        status.checkpointed(Position::new(7));
        assert!(states.has_changed().expect("open") && marks.has_changed().expect("open"));
        assert_eq!(status.checkpoint(), Some(Position::new(7)));
        assert!(status.recopy().is_empty());
        assert_eq!(
            *lock(&seen),
            [
                "State(Created, None)",
                "State(Running, Some(Streaming))",
                "NeedsRecopy { table: \"public.t\" }",
                "Recopied { table: \"public.t\" }",
                "Checkpoint(Position(7))",
            ]
        );
        states.mark_unchanged();
        status.set_state(State::Running, Some(Phase::Streaming));
        assert!(!states.has_changed().expect("open"), "the same state wakes nobody");
    }
}
