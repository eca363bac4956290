//! Secrets, kept from being shown: the [`Secret`] type for passwords and
//! signing keys, and URLs made safe to show. Pure.
//!
//! Invariants: a [`Secret`] prints as `REDACTED` in debug output and is read
//! only through [`Secret::expose`]. What [`redact_url`] returns holds no password and no query
//! parameter that looks like a credential, however the URL was written
//! (`user:password@host`, `?password=`, `?token=` on a webhook URL), so it
//! may go to a log line, an error or the API.

/// Query parameter names taken for credentials (matched in lower case, as parts).
const CREDENTIAL_PARAMETERS: [&str; 7] = ["pass", "token", "secret", "key", "sig", "auth", "cred"];

pub const REDACTED: &str = "REDACTED";

/// A password or key: never in logs, errors or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, for the one place that needs it (authentication, signing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

fn is_credential(parameter: &str) -> bool {
    let parameter = parameter.to_ascii_lowercase();
    CREDENTIAL_PARAMETERS.iter().any(|part| parameter.contains(part))
}

/// `url` with its password and credential-like query values replaced by
/// `REDACTED`. Text that is not a URL is redacted whole unless it holds no
/// `@`, `=` or `:` (a name like `stdout:` is kept).
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return if text.contains(['@', '=']) { REDACTED.to_string() } else { text.to_string() };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_credential(&name) { REDACTED.to_string() } else { value.into_owned() };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_the_url_holds_them() {
        let shown = redact_url("postgres://app:s3cret@db:5432/shop?sslmode=require&password=hunter2");
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=require") && shown.contains("app:REDACTED@db"), "{shown}");
        let shown = redact_url("https://hooks.example/in?token=abc123&team=ops&X-Api-Key=k9");
        assert!(!shown.contains("abc123") && !shown.contains("k9") && shown.contains("team=ops"), "{shown}");
    }

    #[test]
    fn what_is_not_a_url_is_kept_only_when_it_cannot_hold_a_secret() {
        assert_eq!(redact_url("stdout:"), "stdout:");
        assert_eq!(redact_url("host=db password=x"), REDACTED);
        assert_eq!(redact_url("postgres://app@db/shop"), "postgres://app@db/shop");
    }
}
