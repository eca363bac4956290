//! One table's copy as the user sees it: a progress line every
//! [`PROGRESS_EVERY`] and at the end, and the snapshot metrics.

use std::time::{Duration, Instant};

use super::JobMetrics;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One table's copy; see the module.
pub struct TableProgress<'a> {
    name: String,
    metrics: &'a JobMetrics,
    estimate: i64,
    rows: u64,
    started: Instant,
    last_report: Instant,
}

impl<'a> TableProgress<'a> {
    /// The copy of table `name` (`schema.name`), of about `estimate` rows, begins.
    pub fn new(metrics: &'a JobMetrics, name: String, estimate: i64) -> TableProgress<'a> {
        metrics.snapshot_started(&name, estimate);
        let now = Instant::now();
        TableProgress { name, metrics, estimate, rows: 0, started: now, last_report: now }
    }

    /// A chunk of COPY text (a line per row) was read.
    pub fn advance(&mut self, chunk: &[u8]) {
        let rows = crate::lines::count(b'\n', chunk) as u64;
        self.rows += rows;
        self.metrics.snapshot_rows(&self.name, rows);
        if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            self.log();
        }
    }

    /// The table is committed in the sink: the last line. Returns the rows copied.
    pub fn finish(mut self) -> u64 {
        self.estimate = self.rows as i64;
        self.log();
        self.rows
    }

    /// `snapshot public.orders: 120000/1000000 rows (12%), 60000 rows/s, ETA 15 s`
    fn log(&self) {
        let rows = self.rows;
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let total = (self.estimate.max(0) as u64).max(rows);
        let percent = if total == 0 { 100.0 } else { rows as f64 * 100.0 / total as f64 };
        let eta = if rate > 0.0 { (total - rows) as f64 / rate } else { 0.0 };
        tracing::info!(
            "snapshot {}: {rows}/{total} rows ({percent:.0}%), {rate:.0} rows/s, ETA {eta:.0} s",
            self.name
        );
    }
}
