//! The webhook sink (docs/src/sinks/webhook.md): `POST` of a JSON array of changes
//! (or outbox events) per batch.
//!
//! Headers of every request:
//! - `Idempotency-Key`: the batch's key; the same changes always carry the
//!   same key, across retries and restarts (see `sink::delivery::batch`).
//! - `X-Walpipe-Batch`: `<first change id>..<last change id>`, for people.
//! - `X-Walpipe-Job`: the job's name.
//! - `X-Walpipe-Signature: sha256=<hex>` when a signing secret is set: the
//!   HMAC-SHA256 of the body with the secret, as GitHub signs its webhooks.
//!
//! 2xx is delivered; network errors, 408, 429 (honouring `Retry-After`) and
//! 5xx are tried again with backoff; any other answer fails the job with
//! the answer's body in the error.

use std::fmt;

use bytes::Bytes;
use url::Url;

use crate::secret::Secret;
use crate::sink::delivery::Transport;
use crate::sink::delivery::batch::{Batch, hex};
use crate::sink::http::{
    network_error, retry_after, send_with_retries, verdict_for_status, without_credentials,
};
use crate::sink::{Opening, SinkError};

pub const SIGNATURE_HEADER: &str = "X-Walpipe-Signature";

pub struct Webhook {
    client: reqwest::Client,
    url: Url,
    /// The URL without credentials, for messages.
    shown: String,
    job: String,
    signing_key: Option<ring::hmac::Key>,
}

/// The webhook's URL; shown without its credentials.
#[derive(Clone)]
pub struct WebhookUrl(pub Url);

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&without_credentials(&self.0))
    }
}

impl Webhook {
    pub fn new(url: Url, job: &str, signing_secret: Option<&str>) -> Result<Webhook, SinkError> {
        Ok(Webhook {
            client: crate::sink::http::client()?,
            shown: format!("the webhook {}", without_credentials(&url)),
            url,
            job: job.to_string(),
            signing_key: signing_secret
                .map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())),
        })
    }
}

/// `[line,line,...]`
pub fn json_array(lines: &[Bytes]) -> Bytes {
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(line);
    }
    body.push(b']');
    Bytes::from(body)
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body`.
pub fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    format!("sha256={}", hex(ring::hmac::sign(key, body).as_ref()))
}

impl Transport for Webhook {
    type Target = WebhookUrl;
    const SCHEMES: &'static [&'static str] = &["http", "https"];
    const URL_FORM: &'static str = "http(s)://... (a webhook)";

    fn parse(text: &str) -> Result<WebhookUrl, String> {
        let url = Url::parse(text).map_err(|e| {
            format!(
                "{e}: write the webhook as http(s)://host:port/path, e.g. https://hooks.example.com/walpipe"
            )
        })?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the webhook URL has no host: write it as http(s)://host:port/path".into());
        }
        Ok(WebhookUrl(url))
    }

    fn connect(target: &WebhookUrl, opening: &Opening<'_>) -> Result<Webhook, SinkError> {
        let secret = opening.settings.signing_secret.as_ref().map(Secret::expose);
        Webhook::new(target.0.clone(), &opening.settings.name, secret)
    }

    async fn send(&mut self, key: &str, batch: &Batch) -> Result<u64, SinkError> {
        let body = json_array(&batch.lines);
        let signed = self.signing_key.as_ref().map(|signing| signature(signing, &body));
        let range = format!("{}..{}", batch.first_id, batch.last_id);
        send_with_retries(&self.shown, || {
            let mut request = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::USER_AGENT, concat!("walpipe/", env!("CARGO_PKG_VERSION")))
                .header("Idempotency-Key", key)
                .header("X-Walpipe-Batch", &range)
                .header("X-Walpipe-Job", &self.job)
                .body(body.clone());
            if let Some(signed) = &signed {
                request = request.header(SIGNATURE_HEADER, signed);
            }
            async move {
                match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        let after = retry_after(response.headers());
                        let text = if status.is_success() { String::new() } else { response.text().await.unwrap_or_default() };
                        verdict_for_status(status, after, &text)
                    }
                    Err(error) => network_error(error),
                }
            }
        })
        .await
        .map(|()| body.len() as u64)
        .map_err(|error| match error {
            SinkError::Rejected { target, status, body } if status.starts_with("HTTP 3") => SinkError::Rejected {
                target,
                status,
                body: format!("{body} (walpipe does not follow a webhook's redirects: point WALPIPE_SINK_URL at the final URL)"),
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_a_json_array_of_the_lines_and_its_signature_is_the_hmac() {
        let body = json_array(&[Bytes::from_static(br#"{"id":"a"}"#), Bytes::from_static(br#"{"id":"b"}"#)]);
        assert_eq!(&body[..], br#"[{"id":"a"},{"id":"b"}]"#);
        assert_eq!(&json_array(&[])[..], b"[]");
        // RFC 4231, test case 2.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
