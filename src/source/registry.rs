//! The registered sources: one line each in the `registry!` call below.
//! From it comes [`SourceTarget`] (what `WALPIPE_SOURCE_URL` names, by
//! scheme), which opens its source for the generic job code ([`WithSource`]).
//!
//! Invariant: a target's `Display` never shows a password (each source's
//! `Target` keeps that), so it may go into logs and errors.

use std::fmt;
use std::future::Future;

use std::sync::Arc;

use super::setup::{Background, SetupError, Source, SourceSettings};
use super::table::OfferedTable;
use crate::metrics::JobMetrics;
use crate::pg::ConnInfo;

/// Code that runs with an opened source of any kind: the registry hands it
/// the source, so the code is compiled for each kind (no dynamic dispatch).
pub trait WithSource: Send {
    type Output;
    fn with<S: Source>(self, source: S) -> impl Future<Output = Self::Output> + Send;
    /// The outcome when the source could not be opened.
    fn fail(self, error: SetupError) -> Self::Output;
}

macro_rules! registry {
    ($($variant:ident => $source:ty),+ $(,)?) => {
        /// What a source URL names: the source and its parsed URL.
        #[derive(Clone)]
        pub enum SourceTarget {
            $($variant(<$source as Source>::Target)),+
        }

        impl SourceTarget {
            /// Reads a source URL by its scheme; the error says what to write instead.
            pub fn parse(url: &str) -> Result<SourceTarget, String> {
                let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
                $(if <$source as Source>::SCHEMES.contains(&scheme.as_str()) {
                    return <$source as Source>::parse(url).map(SourceTarget::$variant);
                })+
                let forms = [$(<$source as Source>::URL_FORM),+].join(" or ");
                Err(if url.contains("://") {
                    format!("the URL has scheme {scheme:?}, expected {forms}")
                } else {
                    format!("the URL is not a valid URL: write it as {forms}")
                })
            }

            /// Opens the source and runs `with` on it.
            pub async fn open<W: WithSource>(&self, settings: &SourceSettings, with: W) -> W::Output {
                match self {
                    $(SourceTarget::$variant(target) => match <$source as Source>::open(target, settings).await {
                        Ok(source) => with.with(source).await,
                        Err(error) => with.fail(error),
                    }),+
                }
            }

            /// Watches the job's stream into `metrics` ([`Source::monitor`]).
            pub fn monitor(&self, metrics: &Arc<JobMetrics>) -> Background {
                match self {
                    $(SourceTarget::$variant(target) => <$source as Source>::monitor(target, metrics)),+
                }
            }

            /// Where the state store is when no `WALPIPE_STATE_URL` is given ([`Source::state_store`]).
            pub fn state_store(&self) -> Option<ConnInfo> {
                match self {
                    $(SourceTarget::$variant(target) => <$source as Source>::state_store(target)),+
                }
            }

            /// Every table a job could capture ([`Source::offered_tables`]).
            pub async fn offered_tables(&self) -> Result<Vec<OfferedTable>, SetupError> {
                match self {
                    $(SourceTarget::$variant(target) => <$source as Source>::offered_tables(target).await),+
                }
            }

            /// Removes what the job made on the source.
            pub async fn remove(&self, settings: &SourceSettings) -> Result<(), SetupError> {
                match self {
                    $(SourceTarget::$variant(target) => <$source as Source>::remove(target, settings).await),+
                }
            }
        }

        impl fmt::Display for SourceTarget {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(SourceTarget::$variant(target) => target.fmt(f)),+
                }
            }
        }

        impl fmt::Debug for SourceTarget {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

registry! {
    Postgres => super::postgres::setup::PostgresSource,
    Mysql => super::mysql::setup::MysqlSource,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_read_by_its_scheme_and_a_wrong_one_says_what_to_write() {
        let target = SourceTarget::parse("postgres://u:secret@h:5432/db").expect("a Postgres source");
        assert!(!target.to_string().contains("secret"), "no password in {target}");
        assert!(SourceTarget::parse("POSTGRESQL://u@h/db").is_ok(), "schemes are case-insensitive");
        let wrong = SourceTarget::parse("oracle://u@h/db").expect_err("no such source");
        assert_eq!(
            wrong,
            "the URL has scheme \"oracle\", expected postgres://user:password@host:5432/db or mysql://user:password@host:3306/db"
        );
        let not_a_url = SourceTarget::parse("h:5432").expect_err("not a URL");
        assert_eq!(
            not_a_url,
            "the URL is not a valid URL: write it as postgres://user:password@host:5432/db or mysql://user:password@host:3306/db"
        );
    }
}
