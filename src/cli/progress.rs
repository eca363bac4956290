//! `walpipe run` on a terminal: copy progress as bars (indicatif) at the
//! bottom of the screen, and log lines printed above them.
//!
//! Invariant: a log line is written while the bars are hidden
//! (`MultiProgress::suspend`), so a line and a bar never share a row of
//! the terminal. Off a terminal nothing changes: progress stays log lines.

use std::io::Write;

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing_subscriber::fmt::MakeWriter;

/// The log's writer when bars are drawn.
#[derive(Clone)]
pub struct AboveBars(MultiProgress);

/// Turns the bars on: copies draw into them from now on; log through the
/// writer returned.
pub fn draw_bars() -> AboveBars {
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    crate::metrics::copy_progress::draw_bars(bars.clone());
    AboveBars(bars)
}

/// One log event, buffered, written above the bars when dropped.
pub struct Line {
    bars: MultiProgress,
    text: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = std::mem::take(&mut self.text);
        // A log line that cannot be written has nowhere else to go.
        self.bars.suspend(|| {
            let _ = std::io::stderr().write_all(&text);
        });
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { bars: self.0.clone(), text: Vec::new() }
    }
}
