//! How many rows a chunk reads: scaled after every chunk towards its time
//! budget, within bounds. Pure: no I/O.

use std::time::Duration;

/// Rows per chunk: scaled after every chunk towards the time budget,
/// between a floor and a ceiling, and kept under a byte cap (what a chunk
/// holds in memory until the stream reaches it).
#[derive(Debug, Clone)]
pub struct ChunkSizer {
    rows: usize,
    budget: Duration,
    floor: usize,
    ceiling: usize,
    max_bytes: usize,
}

impl ChunkSizer {
    pub fn new(budget: Duration, floor: usize, ceiling: usize, max_bytes: usize) -> ChunkSizer {
        ChunkSizer { rows: floor.max(1), budget, floor: floor.max(1), ceiling: ceiling.max(floor), max_bytes }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// A chunk of `rows` rows and `bytes` bytes took `took`.
    pub fn observe(&mut self, rows: usize, bytes: usize, took: Duration) {
        if rows < self.rows {
            return; // the table's last chunk says nothing about the rate
        }
        let by_time = self.budget.as_secs_f64() / took.as_secs_f64().max(0.001);
        let by_bytes = self.max_bytes as f64 / bytes.max(1) as f64;
        // At most 4x up at once, so one fast chunk cannot overshoot by much.
        let factor = by_time.min(by_bytes).min(4.0);
        self.rows = ((self.rows as f64 * factor) as usize).clamp(self.floor, self.ceiling);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_follows_the_time_budget_within_its_bounds() {
        let mut sizer = ChunkSizer::new(Duration::from_secs(1), 1_000, 100_000, 1 << 30);
        sizer.observe(1_000, 100_000, Duration::from_millis(100));
        assert_eq!(sizer.rows(), 4_000, "at most 4x at once");
        sizer.observe(4_000, 400_000, Duration::from_millis(500));
        assert_eq!(sizer.rows(), 8_000);
        sizer.observe(8_000, 800_000, Duration::from_secs(4));
        assert_eq!(sizer.rows(), 2_000);
        sizer.observe(2_000, 200_000, Duration::from_secs(100));
        assert_eq!(sizer.rows(), 1_000, "floor");
        for _ in 0..10 {
            let rows = sizer.rows();
            sizer.observe(rows, rows * 100, Duration::from_millis(1));
        }
        assert_eq!(sizer.rows(), 100_000, "ceiling");
        sizer.observe(10, 1000, Duration::from_millis(1));
        assert_eq!(sizer.rows(), 100_000, "a short last chunk changes nothing");
    }

    #[test]
    fn the_size_stays_under_the_byte_cap() {
        let mut sizer = ChunkSizer::new(Duration::from_secs(1), 100, 1_000_000, 1_000_000);
        sizer.observe(100, 100_000, Duration::from_millis(10));
        assert_eq!(sizer.rows(), 400);
        sizer.observe(400, 4_000_000, Duration::from_millis(10));
        assert_eq!(sizer.rows(), 100);
    }
}
