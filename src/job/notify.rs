//! Job state changes POSTed to `WALPIPE_WEBHOOK_URL` (SPEC section 4):
//! `{"event":"job.state_changed","job":...,"previous_state":...,"new_state":...,"error":...,"timestamp":...}`.
//!
//! Invariants: announcing never blocks or fails the caller (a queue feeds
//! one sender task); each event is delivered in order and retried with
//! exponential backoff (5 attempts) on network errors and non-2xx answers;
//! then it is dropped with a warning. The URL may hold a secret, so it is
//! never logged.

use std::time::Duration;

use tokio::sync::mpsc;

use super::lifecycle::State;

const ATTEMPTS: u32 = 5;

/// Where state changes go; a no-op without a webhook URL.
#[derive(Clone)]
pub struct Notifier {
    events: Option<mpsc::UnboundedSender<serde_json::Value>>,
}

impl Notifier {
    /// Starts the sender task when `url` is set.
    pub fn new(url: Option<String>) -> Notifier {
        let Some(url) = url else { return Notifier { events: None } };
        let (events, queue) = mpsc::unbounded_channel();
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
            "timestamp": crate::protocol::time::format_rfc3339(crate::protocol::time::to_pg_micros(std::time::SystemTime::now())),
        });
        let _ = events.send(event);
    }
}

async fn deliver(url: String, mut queue: mpsc::UnboundedReceiver<serde_json::Value>) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!("job state changes will not be sent to WALPIPE_WEBHOOK_URL: {error}");
            return;
        }
    };
    while let Some(event) = queue.recv().await {
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
                tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt)).await;
            }
        }
    }
}
