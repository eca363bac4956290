//! A job's preflight findings (`walpipe check`, and the console before it
//! creates a job): each one line with its fix, at a level.
//!
//! The checks themselves are the command's (`cli/check.rs`), which reaches
//! every source's settings; the HTTP layer, below the commands, is handed
//! them as a [`Preflight`] by `walpipe run`.

use std::fmt;
use std::sync::Arc;

use super::spec::JobSpec;
use crate::source::BoxFuture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok     ",
            Level::Warning => "warning",
            Level::Error => "error  ",
        })
    }
}

/// One finding: what was found, or what is wrong and how to fix it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

pub fn finding(level: Level, text: impl Into<String>) -> Finding {
    Finding { level, text: text.into() }
}

/// Runs every check of a job's source and sink.
pub type Preflight = Arc<dyn Fn(JobSpec) -> BoxFuture<'static, Vec<Finding>> + Send + Sync>;
