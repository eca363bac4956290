//! The supervisor: one per `walpipe run` process (a worker). It claims jobs
//! from the state store, runs each in a task of its own, and keeps the
//! store and the tasks agreeing.
//!
//! ```text
//!  every TICK, and at once on NOTIFY walpipe_jobs (an action) or a job's own state change:
//!               worker heartbeat ──> renew the owned job's lease, recording its observed state ──> what the user wants:
//!                 run   pause   stop (cleanup?)   let go (restart)      lease lost: let go at once
//!               claim pending jobs and jobs whose worker's lease expired ──> a task (+ its slot monitor) per job
//!  job task:    run ──(pause)──> hold, monitor on ──(resume)──> run ... ──> failed / succeeded / stopped: let go
//! ```
//!
//! Invariants:
//! - A job runs only while this worker holds its lease; a lost lease stops
//!   the job at once, so it streams in at most one worker.
//! - Stopping, pausing, letting go and shutting down all end a run
//!   gracefully: pending batches are committed with their checkpoint.
//! - Every run is an instance in the store's history, with the records and
//!   bytes it applied.
//! - The store hears of every state a job reaches as soon as it is reached
//!   (through a bounded queue: a job's changes coalesce, never block it),
//!   so an action's caller waiting for that state is told the truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::runner::{self, Ended};
use super::spec::{self, JobSpec, Naming};
use super::store::{JobRow, RunEnd, Store};
use crate::lifecycle::{Action, Phase, State};
use crate::metrics::{self, JobMetrics};
use crate::source::setup::Background;

/// How often the supervisor renews leases, claims jobs and follows the store.
pub const TICK: Duration = Duration::from_secs(2);
/// While paused, how often the retained WAL is logged as a warning.
const PAUSED_WARNING_EVERY: Duration = Duration::from_secs(30);

/// What the store says a job should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Desired {
    Run,
    Pause,
    Stop {
        cleanup: bool,
    },
    /// Stop and leave the job to whoever claims it next (restart, lost lease, shutdown).
    LetGo,
}

impl Desired {
    /// A pending request first, else what the state asks for.
    fn from_store(state: State, requested: Option<Action>, cleanup: bool) -> Desired {
        match requested {
            Some(Action::Pause) => return Desired::Pause,
            Some(Action::Resume) => return Desired::Run,
            Some(Action::Stop) => return Desired::Stop { cleanup },
            Some(Action::Restart) => return Desired::LetGo,
            Some(Action::Start | Action::Retry | Action::Delete) | None => {}
        }
        match state {
            State::Starting | State::Running => Desired::Run,
            State::Pausing | State::Paused => Desired::Pause,
            State::Stopping | State::Stopped => Desired::Stop { cleanup },
            State::Pending | State::Created | State::Failed | State::Succeeded => Desired::LetGo,
        }
    }
}

/// A job's run ended for good in this worker.
#[derive(Debug)]
pub struct Finished {
    pub job: String,
    pub from_environment: bool,
    pub state: Option<State>,
    pub error: Option<String>,
}

struct Owned {
    control: watch::Sender<Desired>,
    /// The job as its latest revision in the store defines it.
    edits: watch::Sender<JobSpec>,
    task: JoinHandle<()>,
    /// Stops when dropped.
    monitor: Background,
    /// Passes the job's state changes on to the supervisor.
    observer: JoinHandle<()>,
    metrics: Arc<JobMetrics>,
}

impl Owned {
    fn abort_helpers(&self) {
        self.monitor.abort();
        self.observer.abort();
    }
}

/// Room in the queue of state changes; a full queue makes a job's
/// observer wait, and its changes coalesce meanwhile.
const OBSERVED_QUEUE: usize = 64;

pub struct Supervisor {
    store: Arc<Store>,
    worker: String,
    wal_volume_bytes: i64,
    owned: HashMap<String, Owned>,
    finished_tx: mpsc::UnboundedSender<Finished>,
    finished: mpsc::UnboundedReceiver<Finished>,
    /// Names of owned jobs whose state changed.
    observed_tx: mpsc::Sender<String>,
    observed: Option<mpsc::Receiver<String>>,
}

impl Supervisor {
    pub fn new(store: Arc<Store>, wal_volume_bytes: i64) -> Supervisor {
        let (finished_tx, finished) = mpsc::unbounded_channel();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        // Random, so that a worker restarted with the same pid on the same host is a new worker.
        let worker = format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let (observed_tx, observed) = mpsc::channel(OBSERVED_QUEUE);
        Supervisor {
            store,
            worker,
            wal_volume_bytes,
            owned: HashMap::new(),
            finished_tx,
            finished,
            observed_tx,
            observed: Some(observed),
        }
    }

    /// Runs until `shutdown`, or until the environment's job ends for good
    /// (failed, or copied with `initial_only`): then returns how it ended.
    /// On the way out every owned job is stopped gracefully and let go.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Option<Finished> {
        tracing::info!(worker = %self.worker, "supervising the jobs of the state store");
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (actions_tx, mut actions) = mpsc::channel(OBSERVED_QUEUE);
        let listener = tokio::spawn(listen(self.store.info().clone(), actions_tx));
        let mut observed = self.observed.take()?;
        let outcome = loop {
            tokio::select! {
                _ = ticker.tick() => self.tick().await,
                Some(job) = actions.recv() => {
                    if self.owned.contains_key(&job) {
                        self.renew(&job).await;
                    } else {
                        self.claim().await;
                    }
                }
                Some(job) = observed.recv() => self.renew(&job).await,
                Some(finished) = self.finished.recv() => {
                    if let Some(owned) = self.owned.remove(&finished.job) {
                        owned.abort_helpers();
                    }
                    if finished.from_environment && matches!(finished.state, Some(State::Failed | State::Succeeded)) {
                        break Some(finished);
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => break None,
            }
        };
        listener.abort();
        self.let_go_of_everything().await;
        outcome
    }

    async fn tick(&mut self) {
        if let Err(error) = self.store.worker_alive(&self.worker).await {
            tracing::warn!("the state store is unreachable, retrying in {} s: {error}", TICK.as_secs());
            return;
        }
        let names: Vec<String> = self.owned.keys().cloned().collect();
        for name in names {
            self.renew(&name).await;
        }
        self.claim().await;
        self.show_other_jobs().await;
    }

    async fn claim(&mut self) {
        match self.store.claim(&self.worker).await {
            Ok(claimed) => {
                for job in claimed {
                    self.take(job);
                }
            }
            Err(error) => tracing::warn!("could not claim jobs: {error}"),
        }
    }

    /// Renews the lease of an owned job, recording the state it is in, and
    /// passes on what the store says.
    async fn renew(&self, name: &str) {
        let Some(owned) = self.owned.get(name) else { return };
        let (observed, phase) = owned.metrics.status.state();
        let phase = phase.map(Phase::as_str);
        let checkpoint =
            owned.metrics.status.checkpoint().filter(|at| at.value() > 0).map(|at| at.to_string());
        let renewed =
            self.store.renew(name, &self.worker, observed, phase, &owned.metrics.summary(), checkpoint).await;
        let desired = match renewed {
            Ok(Some(renewed)) => {
                if renewed.revision > owned.edits.borrow().revision {
                    self.revise(name, owned).await;
                }
                Desired::from_store(renewed.state, renewed.requested, renewed.cleanup_requested)
            }
            // A job that ended let go of its lease itself, just before telling the supervisor.
            Ok(None) if matches!(observed, State::Failed | State::Succeeded) => return,
            Ok(None) => {
                tracing::warn!(job = %name, "lost the job's lease (another worker holds it, or it was deleted): stopping it here");
                Desired::LetGo
            }
            Err(error) => {
                tracing::warn!(job = %name, "could not renew the job's lease: {error}");
                return;
            }
        };
        // The task wakes only when what is desired changed.
        owned.control.send_if_modified(|current| std::mem::replace(current, desired) != desired);
    }

    /// Hands a newer revision of an owned job (tables edited, copies
    /// requested) to its task; a definition that no longer holds is logged
    /// and the job keeps running as it was.
    async fn revise(&self, name: &str, owned: &Owned) {
        match self.store.get(name).await.map(|job| (self.spec_of(&job), job.revision)) {
            Ok((Ok(spec), _)) => {
                tracing::info!(job = %name, revision = spec.revision, "the job was edited or a copy requested");
                owned.edits.send_replace(spec);
            }
            Ok((Err(error), revision)) => {
                tracing::warn!(job = %name, revision, "the job's new definition cannot run, keeping the one it runs: {error}");
                owned.edits.send_modify(|spec| spec.revision = revision);
            }
            Err(error) => tracing::warn!(job = %name, "could not read the job's new revision: {error}"),
        }
    }

    /// The spec a job row defines: checkpoints outside a Postgres sink live
    /// in the state store, and copy requests come from the row.
    fn spec_of(&self, job: &JobRow) -> Result<JobSpec, spec::SpecError> {
        let naming = if job.from_environment { Naming::Environment } else { Naming::Api };
        let mut spec = JobSpec::from_definition(&job.definition, naming)?;
        if !spec.sink.holds_checkpoint() {
            spec.checkpoint_db = self.store.info().clone();
        }
        spec.copy_requests = job.copy_requests.clone();
        spec.revision = job.revision;
        Ok(spec)
    }

    /// Starts a task for a job this worker just claimed.
    fn take(&mut self, job: JobRow) {
        let name = job.definition.name.clone();
        let spec = match self.spec_of(&job) {
            Ok(spec) => spec,
            Err(error) => {
                let store = self.store.clone();
                let worker = self.worker.clone();
                let finished = self.finished_tx.clone();
                tokio::spawn(async move {
                    let message = error.to_string();
                    if let Err(e) = store.finish(&name, &worker, Some(State::Failed), Some(&message)).await {
                        tracing::warn!(job = %name, "could not record the job's failure in the state store: {e}");
                    }
                    // Err only when the supervisor has already shut down: nobody is left to tell.
                    let _ = finished.send(Finished {
                        job: name,
                        from_environment: job.from_environment,
                        state: Some(State::Failed),
                        error: Some(message),
                    });
                });
                return;
            }
        };
        tracing::info!(job = %name, worker = %self.worker, state = %job.state, "claimed the job");
        let metrics = metrics::global().job(&spec.name, &spec.slot);
        metrics.wal_volume.set(self.wal_volume_bytes);
        // What this worker observes from now on, not a state left from an earlier run here.
        metrics
            .status
            .set_state(if job.state == State::Paused { State::Paused } else { State::Starting }, None);
        let desired = Desired::from_store(job.state, job.requested, job.cleanup_requested);
        let (control, control_rx) = watch::channel(desired);
        let (edits, edits_rx) = watch::channel(spec.clone());
        let monitor = spec.source.monitor(&metrics);
        let observer = tokio::spawn(observe(name.clone(), metrics.clone(), self.observed_tx.clone()));
        let run = JobTask {
            store: self.store.clone(),
            worker: self.worker.clone(),
            spec,
            from_environment: job.from_environment,
            reset: job.reset_requested,
            metrics: metrics.clone(),
            control: control_rx,
            edits: edits_rx,
            finished: self.finished_tx.clone(),
        };
        let task = tokio::spawn(run.run());
        self.owned.insert(name, Owned { control, edits, task, monitor, observer, metrics });
    }

    /// The state and phase of the jobs other workers hold (or nobody does), as metrics.
    async fn show_other_jobs(&self) {
        let Ok(jobs) = self.store.list().await else { return };
        for job in jobs.iter().filter(|job| !self.owned.contains_key(&job.definition.name)) {
            let slot = job
                .definition
                .slot_name
                .clone()
                .unwrap_or_else(|| spec::default_slot_name(&job.definition.name));
            let phase = job.phase.as_deref().and_then(Phase::parse);
            metrics::global().job(&job.definition.name, &slot).status.set_state(job.state, phase);
        }
    }

    async fn let_go_of_everything(&mut self) {
        for owned in self.owned.values() {
            let _ = owned.control.send(Desired::LetGo);
        }
        for (_, owned) in self.owned.drain() {
            owned.abort_helpers();
            let _ = owned.task.await;
        }
    }
}

/// Passes each state change of `job` to the supervisor (one made before
/// this task ran too).
async fn observe(job: String, metrics: Arc<JobMetrics>, changes: mpsc::Sender<String>) {
    let mut states = metrics.status.watch_state();
    states.mark_changed();
    while states.changed().await.is_ok() && changes.send(job.clone()).await.is_ok() {}
}

/// Hears of actions at once (`LISTEN walpipe_jobs`), reconnecting with
/// backoff when the connection breaks; the supervisor's tick is the fallback.
async fn listen(store: crate::pg::ConnInfo, actions: mpsc::Sender<String>) {
    let mut delays = crate::backoff::delays(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let (tx, mut notifications) = mpsc::channel(OBSERVED_QUEUE);
        match crate::pg::sql::listen(&store, "the state store", super::store::CHANNEL, tx).await {
            Ok(_client) => {
                while let Some(job) = notifications.recv().await {
                    if actions.send(job).await.is_err() {
                        return;
                    }
                }
                tracing::debug!("the state store's notifications stopped: listening again");
            }
            Err(error) => tracing::debug!("could not listen to the state store: {error}"),
        }
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(30))).await;
    }
}

/// One owned job.
struct JobTask {
    store: Arc<Store>,
    worker: String,
    spec: JobSpec,
    from_environment: bool,
    reset: bool,
    metrics: Arc<JobMetrics>,
    control: watch::Receiver<Desired>,
    edits: watch::Receiver<JobSpec>,
    finished: mpsc::UnboundedSender<Finished>,
}

impl JobTask {
    async fn run(mut self) {
        if self.reset {
            tracing::info!(job = %self.spec.name, "restart: forgetting the checkpoint; a new slot and a new copy follow");
            if let Err(error) = runner::reset(&self.spec).await {
                return self
                    .end(Some(State::Failed), Some(format!("the restart could not reset the job: {error}")))
                    .await;
            }
            self.record_reset().await;
        }
        loop {
            let desired = *self.control.borrow_and_update();
            match desired {
                Desired::Run => {
                    if let Some((state, error)) = self.run_once().await {
                        return self.end(Some(state), error).await;
                    }
                }
                Desired::Pause => self.hold().await,
                Desired::Stop { cleanup } => {
                    let mut error = None;
                    if cleanup {
                        if let Err(e) = runner::drop_slot_and_publication(&self.spec).await {
                            error = Some(format!("stopped, but the cleanup failed: {e}"));
                        }
                    }
                    return self.end(Some(State::Stopped), error).await;
                }
                Desired::LetGo => return self.end(None, None).await,
            }
        }
    }

    /// One run, recorded as an instance. `Some`: the job ended for good.
    async fn run_once(&mut self) -> Option<(State, Option<String>)> {
        let instance = self.store.instance_started(&self.spec.name, &self.worker).await.ok();
        let (records, bytes) = (self.metrics.sink_events_ok.get(), self.metrics.sink_bytes.get());
        let (stop, stop_rx) = watch::channel(false);
        let mut control = self.control.clone();
        let forward = tokio::spawn(async move {
            let _ = control.wait_for(|desired| *desired != Desired::Run).await;
            let _ = stop.send(true);
        });
        let outcome = runner::run(&self.spec, &self.metrics, stop_rx, self.edits.clone()).await;
        forward.abort();
        let (status, ended) = match &outcome {
            Ok(Ended::Copied) => (RunEnd::Succeeded, Some((State::Succeeded, None))),
            Ok(Ended::Stopped) => match *self.control.borrow() {
                Desired::Pause => (RunEnd::Paused, None),
                Desired::Stop { .. } => (RunEnd::Stopped, None),
                Desired::LetGo | Desired::Run => (RunEnd::LetGo, None),
            },
            Err(error) => (RunEnd::Failed, Some((State::Failed, Some(error.to_string())))),
        };
        if let Some(id) = instance {
            let applied =
                |now: u64, before: u64| i64::try_from(now.saturating_sub(before)).unwrap_or(i64::MAX);
            let error = ended.as_ref().and_then(|(_, e)| e.as_deref());
            let recorded = self
                .store
                .instance_ended(
                    id,
                    status,
                    applied(self.metrics.sink_events_ok.get(), records),
                    applied(self.metrics.sink_bytes.get(), bytes),
                    error,
                )
                .await;
            if let Err(e) = recorded {
                tracing::warn!(job = %self.spec.name, "could not record the run in the history: {e}");
            }
        }
        if let Err(error) = &outcome {
            tracing::error!(job = %self.spec.name, "the job failed: {error}");
        }
        ended
    }

    /// Paused: no replication session, the slot keeps the position; the
    /// monitor keeps reporting and the retained WAL is logged as a warning.
    async fn hold(&mut self) {
        self.metrics.status.set_state(State::Paused, None);
        tracing::info!(job = %self.spec.name, "paused: the slot keeps its position and retains WAL until resumed");
        loop {
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() || *self.control.borrow() != Desired::Pause {
                        return;
                    }
                }
                () = tokio::time::sleep(PAUSED_WARNING_EVERY) => {
                    let retained = self.metrics.summary()["retained_wal_bytes"].as_i64().unwrap_or(0);
                    tracing::warn!(job = %self.spec.name, retained_wal_bytes = retained,
                        "paused: the slot retains {} MB of WAL on the source, and it grows until the job is resumed", retained / 1_000_000);
                }
            }
        }
    }

    /// Lets go of the job, setting `state` (or keeping the store's).
    async fn end(self, state: Option<State>, error: Option<String>) {
        if let Some(state) = state {
            self.metrics.status.set_state(state, None);
        }
        if let Err(e) = self.store.finish(&self.spec.name, &self.worker, state, error.as_deref()).await {
            tracing::warn!(job = %self.spec.name, "could not record the job's end in the state store: {e}");
        }
        let _ = self.finished.send(Finished {
            job: self.spec.name.clone(),
            from_environment: self.from_environment,
            state,
            error,
        });
    }
}

mod reset;
#[cfg(test)]
mod tests;
