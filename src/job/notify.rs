//! Job state changes POSTed to `WALPIPE_WEBHOOK_URL` (docs/src/guide/jobs.md):
//! `{"event":"job.state_changed","job":...,"previous_state":...,"new_state":...,"error":...,"timestamp":...}`.
//!
//! Invariants: announcing never blocks or fails the caller (a bounded queue
//! of [`QUEUE`] events feeds one sender task; when a receiver is so slow
//! that it fills, new events are dropped with a warning rather than memory
//! growing without end); each event is delivered in order and retried with
//! the common backoff (5 attempts) on network errors and non-2xx answers;
//! then it is dropped with a warning. The URL may hold a secret, so it is
//! never logged.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::lifecycle::State;

const ATTEMPTS: u32 = 5;
/// Events waiting for the webhook at most.
pub const QUEUE: usize = 1024;

/// Where state changes go; a no-op without a webhook URL.
#[derive(Clone)]
pub struct Notifier {
    events: Option<mpsc::Sender<serde_json::Value>>,
}

impl Notifier {
    /// Starts the sender task when `url` is set.
    pub fn new(url: Option<String>) -> Notifier {
        let Some(url) = url else { return Notifier { events: None } };
        let (events, queue) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(url, queue));
        Notifier { events: Some(events) }
    }

    pub fn state_changed(&self, job: &str, previous: Option<State>, new: State, error: Option<&str>) {
        let Some(events) = &self.events else { return };
        let event = serde_json::json!({
            "event": "job.state_changed",
            "job": job,
            "previous_state": previous.map(State::as_str),
            "new_state": new.as_str(),
            "error": error,
            "timestamp": crate::change::time::format_rfc3339(crate::change::time::unix_micros(std::time::SystemTime::now())),
        });
        if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
            tracing::warn!(job = %event["job"], new_state = %event["new_state"],
                "dropped a state change for WALPIPE_WEBHOOK_URL: {QUEUE} are waiting already (the receiver is slow or down)");
        }
    }
}

async fn deliver(url: String, mut queue: mpsc::Receiver<serde_json::Value>) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!("job state changes will not be sent to WALPIPE_WEBHOOK_URL: {error}");
            return;
        }
    };
    while let Some(event) = queue.recv().await {
        let mut delays = crate::backoff::delays(Duration::from_millis(400), Duration::from_secs(10));
        for attempt in 1..=ATTEMPTS {
            let outcome = client.post(&url).json(&event).send().await;
            let failure = match outcome {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => format!("it answered {}", response.status()),
                Err(error) => format!("{}", error.without_url()),
            };
            if attempt == ATTEMPTS {
                tracing::warn!(job = %event["job"], "dropped a state change for WALPIPE_WEBHOOK_URL after {ATTEMPTS} attempts: {failure}");
            } else {
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
            }
        }
    }
}
