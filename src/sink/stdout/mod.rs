//! `stdout:`: each batch's change lines on standard output, one per line,
//! flushed before the batch counts as delivered (logs go to stderr).

use std::fmt;

use tokio::io::AsyncWriteExt;

use crate::sink::delivery::Transport;
use crate::sink::delivery::batch::Batch;
use crate::sink::{Opening, SinkError};

/// `stdout:` names nothing more.
#[derive(Clone, Copy, Debug)]
pub struct StdoutTarget;

impl fmt::Display for StdoutTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout:")
    }
}

pub struct Stdout {
    out: tokio::io::Stdout,
}

impl Transport for Stdout {
    type Target = StdoutTarget;
    const SCHEMES: &'static [&'static str] = &["stdout"];
    const URL_FORM: &'static str = "stdout:";

    fn parse(_url: &str) -> Result<StdoutTarget, String> {
        Ok(StdoutTarget)
    }

    fn connect(_target: &StdoutTarget, _opening: &Opening<'_>) -> Result<Stdout, SinkError> {
        Ok(Stdout { out: tokio::io::stdout() })
    }

    async fn send(&mut self, _key: &str, batch: &Batch) -> Result<u64, SinkError> {
        let mut text = Vec::with_capacity(batch.lines.iter().map(|l| l.len() + 1).sum());
        for line in &batch.lines {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        self.out.write_all(&text).await.map_err(SinkError::Stdout)?;
        self.out.flush().await.map_err(SinkError::Stdout)?;
        Ok(text.len() as u64)
    }
}
