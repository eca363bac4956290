//! What the HTTP sinks share: the client, and sending one request again
//! and again with backoff until it is accepted, refused, or out of attempts.
//!
//! Invariants: a request is sent again with exactly the same body and
//! headers (its idempotency key or label included), so the receiver can
//! recognise it; only answers that say "try again" (network errors, 5xx,
//! 408, 429, and the sink-specific ones) are retried; after
//! [`ATTEMPTS`] the error is transient ([`SinkError::Unavailable`]) and the
//! job retries from its checkpoint, resending the same batch.

use std::future::Future;
use std::time::Duration;

use url::Url;

use super::SinkError;

/// Tries per request before the job's own retry takes over.
pub const ATTEMPTS: u32 = 8;
/// The first wait; it doubles up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How much of a refusal's body goes into the error.
const BODY_SHOWN: usize = 500;

/// How one try went.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Try again, after `after` when the receiver said so (Retry-After).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// No answer in time (connect or request timeout): try again.
    TimedOut {
        reason: String,
    },
    /// The receiver refuses this request; sending it again will not help.
    Refused {
        status: String,
        body: String,
    },
}

/// The client for every HTTP sink: rustls, no automatic redirects (the
/// StarRocks sink follows its FE's redirect itself, keeping the credentials).
/// A try gives up after 60 s, so that [`ATTEMPTS`] tries of a receiver that
/// hangs end in minutes, and the job's own retry (or a stop) can take over.
pub fn client() -> Result<reqwest::Client, SinkError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(8)
        .build()
        .map_err(|e| SinkError::Unavailable {
            target: "the HTTP client".into(),
            attempts: 0,
            reason: e.to_string(),
            timed_out: false,
        })
}

/// The verdict on a plain HTTP status: 2xx accepted; 408, 429 and 5xx retried; others refused.
pub fn verdict_for_status(status: reqwest::StatusCode, retry_after: Option<Duration>, body: &str) -> Verdict {
    if status.is_success() {
        Verdict::Accepted
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Verdict::Retry { reason: format!("HTTP {status}: {}", shorten(body)), after: retry_after }
    } else {
        Verdict::Refused { status: format!("HTTP {status}"), body: shorten(body) }
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is rare from webhooks; it is ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_WAIT * 3))
}

pub fn shorten(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(BODY_SHOWN) {
        Some((cut, _)) => format!("{}...", &body[..cut]),
        None if body.is_empty() => "(empty body)".into(),
        None => body.to_string(),
    }
}

/// Runs `attempt` until it is accepted or refused, or [`ATTEMPTS`] tries
/// failed, waiting with exponential backoff and jitter in between.
pub async fn send_with_retries<F, Fut>(target: &str, mut attempt: F) -> Result<(), SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Verdict>,
{
    let mut delays = crate::backoff::delays(FIRST_WAIT, MAX_WAIT);
    for tried in 1..=ATTEMPTS {
        let (timed_out, reason, after) = match attempt().await {
            Verdict::Accepted => return Ok(()),
            Verdict::Refused { status, body } => {
                return Err(SinkError::Rejected { target: target.to_string(), status, body });
            }
            Verdict::Retry { reason, after } => (false, reason, after),
            Verdict::TimedOut { reason } => (true, reason, None),
        };
        if tried == ATTEMPTS {
            return Err(SinkError::Unavailable {
                target: target.to_string(),
                attempts: tried,
                reason,
                timed_out,
            });
        }
        let pause = after.or_else(|| delays.next()).unwrap_or(MAX_WAIT);
        tracing::warn!(%target, attempt = tried, "delivery failed, trying again in {:.1} s: {reason}", pause.as_secs_f64());
        tokio::time::sleep(pause).await;
    }
    Err(SinkError::Unavailable {
        target: target.to_string(),
        attempts: ATTEMPTS,
        reason: "no attempt made".into(),
        timed_out: false,
    })
}

/// A network error as a verdict: always worth another try. The URL is
/// left out (it may hold credentials); the caller's target names the sink.
pub fn network_error(error: reqwest::Error) -> Verdict {
    let error = error.without_url();
    let timed_out = error.is_timeout();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    if timed_out { Verdict::TimedOut { reason } } else { Verdict::Retry { reason, after: None } }
}

/// The URL without user, password and credential-like query values, for messages.
pub fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    crate::secret::redact_url(shown.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn statuses_are_retried_or_refused_as_the_contract_says() {
        assert_eq!(verdict_for_status(StatusCode::NO_CONTENT, None, ""), Verdict::Accepted);
        for retried in [500, 502, 503, 429, 408] {
            let status = StatusCode::from_u16(retried).expect("status");
            assert!(matches!(verdict_for_status(status, None, "busy"), Verdict::Retry { .. }), "{retried}");
        }
        for refused in [400, 401, 404, 409, 422, 301] {
            let status = StatusCode::from_u16(refused).expect("status");
            assert!(matches!(verdict_for_status(status, None, "no"), Verdict::Refused { .. }), "{refused}");
        }
        let Verdict::Refused { body, .. } =
            verdict_for_status(StatusCode::BAD_REQUEST, None, &"x".repeat(900))
        else {
            panic!("refused")
        };
        assert_eq!(body.len(), BODY_SHOWN + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_tried_until_accepted_and_gives_up_after_the_attempts() {
        let mut tries = 0;
        let accepted = send_with_retries("hook", || {
            tries += 1;
            let verdict = if tries < 3 {
                Verdict::Retry { reason: "503".into(), after: None }
            } else {
                Verdict::Accepted
            };
            async move { verdict }
        })
        .await;
        assert!(accepted.is_ok() && tries == 3);
        let given_up =
            send_with_retries("hook", || async { Verdict::Retry { reason: "503".into(), after: None } })
                .await;
        assert!(matches!(given_up, Err(SinkError::Unavailable { attempts: ATTEMPTS, .. })), "{given_up:?}");
        let refused = send_with_retries("hook", || async {
            Verdict::Refused { status: "HTTP 400".into(), body: "bad".into() }
        })
        .await;
        assert!(matches!(refused, Err(ref e @ SinkError::Rejected { .. }) if !e.is_transient()));
    }
}
