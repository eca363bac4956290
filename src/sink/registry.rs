//! The registered sinks: one line each in the `registry!` call below. From
//! it come [`SinkTarget`] (what `WALPIPE_SINK_URL` names, by scheme) and
//! [`AnySink`] (one opened sink of any kind, for the runner).
//!
//! Invariant: a target's `Display` never shows a password (each sink's
//! `Target` keeps that), so it may go into logs and errors.

use std::fmt;

use super::delivery::BatchSink;
use super::{Driving, Opening, Sink, SinkError};
use crate::source::copy::{Snapshot, SnapshotError};

macro_rules! registry {
    ($($variant:ident => $sink:ty),+ $(,)?) => {
        /// What a sink URL names: the sink and its parsed URL.
        #[derive(Clone)]
        pub enum SinkTarget {
            $($variant(<$sink as Sink>::Target)),+
        }

        impl SinkTarget {
            /// Reads a sink URL by its scheme; the error says what to write instead.
            pub fn parse(url: &str) -> Result<SinkTarget, String> {
                let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
                $(if <$sink as Sink>::SCHEMES.contains(&scheme.as_str()) {
                    return <$sink as Sink>::parse(url).map(SinkTarget::$variant);
                })+
                Err(not_a_sink(&scheme, &[$(<$sink as Sink>::URL_FORM),+]))
            }

            /// Whether every table needs a key to be written ([`Sink::NEEDS_KEYS`]).
            pub fn needs_keys(&self) -> bool {
                match self {
                    $(SinkTarget::$variant(_) => <$sink as Sink>::NEEDS_KEYS),+
                }
            }

            /// Whether the checkpoint lives in the sink (else in the state store).
            pub fn holds_checkpoint(&self) -> bool {
                match self {
                    $(SinkTarget::$variant(_) => <$sink as Sink>::HOLDS_CHECKPOINT),+
                }
            }
        }

        impl fmt::Display for SinkTarget {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(SinkTarget::$variant(target) => target.fmt(f)),+
                }
            }
        }

        /// An opened sink, of whichever kind the target names.
        pub enum AnySink {
            $($variant($sink)),+
        }

        impl AnySink {
            pub async fn open(target: &SinkTarget, opening: &Opening<'_>) -> Result<AnySink, SinkError> {
                Ok(match target {
                    $(SinkTarget::$variant(target) => AnySink::$variant(<$sink>::open(target, opening).await?)),+
                })
            }

            pub async fn copy(&mut self, snapshot: &Snapshot<'_>) -> Result<u64, SnapshotError> {
                match self {
                    $(AnySink::$variant(sink) => sink.copy(snapshot).await),+
                }
            }

            pub async fn start_over(&mut self) -> Result<(), SinkError> {
                match self {
                    $(AnySink::$variant(sink) => sink.start_over().await),+
                }
            }

            pub async fn stream<D: Driving>(self, driving: D) -> D::Outcome {
                match self {
                    $(AnySink::$variant(sink) => sink.stream(driving).await),+
                }
            }
        }
    };
}

registry! {
    Postgres => super::postgres::Postgres,
    Webhook => BatchSink<super::webhook::Webhook>,
    StarRocks => BatchSink<super::starrocks::StarRocks>,
    Stdout => BatchSink<super::stdout::Stdout>,
}

/// `"kafka" is not a sink: use postgres://..., ... or stdout:`
fn not_a_sink(scheme: &str, forms: &[&str]) -> String {
    let (last, others) = forms.split_last().map_or(("", &[][..]), |(last, others)| (*last, others));
    format!("{scheme:?} is not a sink: use {} or {last}", others.join(", "))
}

/// As `Display`: without passwords, so that a debug print cannot leak one.
impl fmt::Debug for SinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkTarget({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_names_its_sink_and_no_password_is_shown() {
        assert!(SinkTarget::parse("postgres://a:b@h/db").expect("pg").holds_checkpoint());
        let hook = SinkTarget::parse("https://u:secret@hooks.example.com/x").expect("hook");
        assert_eq!(hook.to_string(), "https://hooks.example.com/x");
        assert!(!format!("{hook:?}").contains("secret"));
        assert!(matches!(SinkTarget::parse("starrocks://root:pw@fe:8030/db"), Ok(SinkTarget::StarRocks(_))));
        assert!(matches!(SinkTarget::parse("stdout:"), Ok(SinkTarget::Stdout(_))));
        assert!(!SinkTarget::parse("stdout:").expect("stdout").holds_checkpoint());
    }

    #[test]
    fn an_unknown_scheme_lists_every_sink() {
        let error = SinkTarget::parse("kafka://broker/topic").expect_err("kafka");
        assert_eq!(
            error,
            "\"kafka\" is not a sink: use postgres://..., http(s)://... (a webhook), starrocks://user:password@fe-host:8030/db or stdout:"
        );
        assert!(SinkTarget::parse("http://").expect_err("no host").contains("host"));
    }
}
