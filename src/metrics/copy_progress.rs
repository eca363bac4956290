//! One table's copy as the user sees it: a progress line every
//! [`PROGRESS_EVERY`] and at the end, or, when `walpipe run` draws on a
//! terminal ([`draw_bars`]), a progress bar per table; and the snapshot
//! metrics either way.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::JobMetrics;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where the bars are drawn, when they are.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// From now on, copies draw a bar each in `bars` instead of logging lines.
pub fn draw_bars(bars: MultiProgress) {
    let _ = BARS.set(bars);
}

fn bar(name: &str, estimate: i64) -> Option<ProgressBar> {
    let bars = BARS.get()?;
    let style = ProgressStyle::with_template(
        "{prefix:30!} [{bar:30}] {pos:>10}/{len:10} rows  {per_sec:>14}  ETA {eta:>4}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("#>.");
    let bar =
        bars.add(ProgressBar::new(estimate.max(0) as u64).with_style(style).with_prefix(name.to_string()));
    bar.enable_steady_tick(Duration::from_millis(500));
    Some(bar)
}

/// One table's copy; see the module.
pub struct TableProgress<'a> {
    name: String,
    metrics: &'a JobMetrics,
    estimate: i64,
    rows: u64,
    started: Instant,
    last_report: Instant,
    /// The bar on a terminal; `None`: progress lines in the log.
    bar: Option<ProgressBar>,
}

impl<'a> TableProgress<'a> {
    /// The copy of table `name` (`schema.name`), of about `estimate` rows, begins.
    pub fn new(metrics: &'a JobMetrics, name: String, estimate: i64) -> TableProgress<'a> {
        metrics.snapshot_started(&name, estimate);
        let now = Instant::now();
        let bar = bar(&name, estimate);
        TableProgress { name, metrics, estimate, rows: 0, started: now, last_report: now, bar }
    }

    /// `rows` more rows were read.
    pub fn advance(&mut self, rows: u64) {
        self.rows += rows;
        self.metrics.snapshot_rows(&self.name, rows);
        if let Some(bar) = &self.bar {
            // An estimate below the rows read grows with them.
            bar.set_length(bar.length().unwrap_or(0).max(self.rows));
            bar.set_position(self.rows);
        } else if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            self.log();
        }
    }

    /// The table is committed in the sink: the last line. Returns the rows copied.
    pub fn finish(mut self) -> u64 {
        self.estimate = self.rows as i64;
        match (&self.bar, BARS.get()) {
            (Some(bar), Some(bars)) => {
                // A finished bar is cleared by the next log line: it stays
                // on the screen as a line of its own instead.
                bar.finish_and_clear();
                let seconds = self.started.elapsed().as_secs_f64();
                let _ = bars.println(format!(
                    "{:<30} [{}] {:>10} rows copied in {seconds:.1} s",
                    self.name,
                    "#".repeat(30),
                    self.rows
                ));
            }
            _ => self.log(),
        }
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
