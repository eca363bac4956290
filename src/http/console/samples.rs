//! The last hour of each job's six live indicators (Idle Time, Emit Event
//! Time, records, bytes, records/s, bytes/s), kept in memory for the job
//! page's sparklines: the console needs no Prometheus.
//!
//! Invariants: at most [`KEEP`] samples per job (one hour at [`INTERVAL`]);
//! a rate is the growth between two samples over their time apart, and a
//! counter that went down (the job moved to a new worker, which counts from
//! zero) gives a rate of 0 for that step, never a negative one; a job that
//! is gone from the store is forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How often the jobs are sampled.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// One hour of samples.
pub const KEEP: usize = 720;

/// One job's figures at one moment, from its status in the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_seconds: f64,
    pub records: f64,
    pub bytes: f64,
    pub idle_seconds: f64,
    pub emit_lag_seconds: f64,
}

/// The six series of one job, oldest first.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Indicators {
    pub idle_seconds: Vec<f64>,
    pub emit_lag_seconds: Vec<f64>,
    pub records: Vec<f64>,
    pub bytes: Vec<f64>,
    pub records_per_second: Vec<f64>,
    pub bytes_per_second: Vec<f64>,
}

/// Every job's samples.
#[derive(Default)]
pub struct Samples {
    jobs: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl Samples {
    /// Adds `sample` to `job`'s series, dropping the oldest beyond [`KEEP`].
    pub fn record(&self, job: &str, sample: Sample) {
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = jobs.entry(job.to_string()).or_default();
        if series.len() == KEEP {
            series.pop_front();
        }
        series.push_back(sample);
    }

    /// Forgets every job not in `present`.
    pub fn retain(&self, present: &[&str]) {
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.retain(|job, _| present.contains(&job.as_str()));
    }

    /// `job`'s six series (empty for a job never sampled).
    pub fn indicators(&self, job: &str) -> Indicators {
        let jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(series) = jobs.get(job) else {
            return Indicators::default();
        };
        let rate = |value: fn(&Sample) -> f64| -> Vec<f64> {
            series
                .iter()
                .zip(series.iter().skip(1))
                .map(|(before, after)| {
                    let seconds = after.at_seconds - before.at_seconds;
                    let grown = value(after) - value(before);
                    if seconds > 0.0 && grown >= 0.0 { grown / seconds } else { 0.0 }
                })
                .collect()
        };
        Indicators {
            idle_seconds: series.iter().map(|s| s.idle_seconds).collect(),
            emit_lag_seconds: series.iter().map(|s| s.emit_lag_seconds).collect(),
            records: series.iter().map(|s| s.records).collect(),
            bytes: series.iter().map(|s| s.bytes).collect(),
            records_per_second: rate(|s| s.records),
            bytes_per_second: rate(|s| s.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_seconds: f64, records: f64) -> Sample {
        Sample { at_seconds, records, bytes: records * 10.0, idle_seconds: 1.0, emit_lag_seconds: 0.5 }
    }

    #[test]
    fn rates_are_growth_over_time_and_never_negative() {
        let samples = Samples::default();
        for (at, records) in [(0.0, 0.0), (5.0, 50.0), (10.0, 150.0), (15.0, 20.0)] {
            samples.record("orders", sample(at, records));
        }
        let shown = samples.indicators("orders");
        assert_eq!(shown.records_per_second, vec![10.0, 20.0, 0.0], "a reset counter is no negative rate");
        assert_eq!(shown.bytes_per_second, vec![100.0, 200.0, 0.0]);
        assert_eq!(shown.records.len(), 4);
        assert_eq!(samples.indicators("other"), Indicators::default());
    }

    #[test]
    fn an_hour_is_kept_and_gone_jobs_are_forgotten() {
        let samples = Samples::default();
        for at in 0..(KEEP + 10) {
            samples.record("orders", sample(at as f64, 0.0));
        }
        samples.record("gone", sample(0.0, 0.0));
        assert_eq!(samples.indicators("orders").records.len(), KEEP);
        samples.retain(&["orders"]);
        assert!(samples.indicators("gone").records.is_empty());
        assert_eq!(samples.indicators("orders").idle_seconds.len(), KEEP);
    }
}
