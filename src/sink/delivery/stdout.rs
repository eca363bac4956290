//! `stdout:`: each batch's change lines on standard output, one per line,
//! flushed before the batch counts as delivered (logs go to stderr).

use tokio::io::AsyncWriteExt;

use super::Transport;
use super::batch::Batch;
use crate::sink::SinkError;

pub struct Stdout {
    out: tokio::io::Stdout,
}

impl Default for Stdout {
    fn default() -> Stdout {
        Stdout { out: tokio::io::stdout() }
    }
}

impl Transport for Stdout {
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
