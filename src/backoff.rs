//! The one backoff of every retry loop (a job's retries, an HTTP sink's
//! tries, opening the state store): exponential, capped, with jitter.
//!
//! Invariant: the n-th delay lies in `[first * 2^n / 2, first * 2^n)`,
//! capped to `[cap / 2, cap)`: random in the upper half, so that workers
//! that failed together do not retry in step (backon's jitter, from fastrand).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Endless delays, the first below `first`, none above `cap`.
pub fn delays(first: Duration, cap: Duration) -> impl Iterator<Item = Duration> {
    // backon adds a random part of up to the delay itself: start from half.
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(cap / 2)
        .without_max_times()
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (first, cap) = (Duration::from_millis(500), Duration::from_secs(30));
        let taken: Vec<Duration> = delays(first, cap).take(12).collect();
        for (n, delay) in taken.iter().enumerate() {
            let full = first.saturating_mul(1 << n).min(cap);
            assert!(
                *delay >= full / 2 && *delay <= full,
                "delay {n}: {delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        let jittered: std::collections::HashSet<Duration> =
            (0..20).filter_map(|_| delays(first, cap).next()).collect();
        assert!(jittered.len() > 1, "no jitter: {jittered:?}");
    }
}
