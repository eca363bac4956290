//! Small inline SVG pictures: a sparkline of a series, and the gauge of a
//! slot's retained WAL against the server's cap.
//!
//! Invariants: pure (no I/O); drawn with SVG attributes only, never `style`,
//! so the console's Content-Security-Policy can forbid inline styles; any
//! input, empty or non-finite included, draws something valid.

use maud::{Markup, html};

const SPARK_WIDTH: f64 = 160.0;
const SPARK_HEIGHT: f64 = 32.0;

/// A line through `values`, scaled to its own range (a flat line for a constant series).
pub fn sparkline(values: &[f64]) -> Markup {
    let finite: Vec<f64> = values.iter().map(|v| if v.is_finite() { *v } else { 0.0 }).collect();
    let (low, high) = finite.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = if high > low { high - low } else { 1.0 };
    let step = if finite.len() > 1 { SPARK_WIDTH / (finite.len() - 1) as f64 } else { 0.0 };
    let points: Vec<String> = finite
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = SPARK_HEIGHT - 2.0 - (v - low.min(*v)) / span * (SPARK_HEIGHT - 4.0);
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect();
    html! {
        @if points.len() > 1 {
            // As wide as its card: stretched, with a stroke that is not.
            svg.spark width="100%" height=(SPARK_HEIGHT) viewBox={"0 0 " (SPARK_WIDTH) " " (SPARK_HEIGHT)}
                preserveAspectRatio="none" role="img" aria-label="the last hour" {
                polyline fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" points=(points.join(" ")) {}
            }
        } @else {
            span.collecting { "collecting the last hour…" }
        }
    }
}

const GAUGE_WIDTH: f64 = 480.0;
const GAUGE_HEIGHT: f64 = 44.0;

/// Retained WAL on a bar as wide as `max_slot_wal_keep_size`, with the
/// point where the slot would be lost (`retained + safe_wal_size`).
/// `cap_bytes` of -1 means no cap: the bar then spans the retained WAL and
/// says so.
pub fn wal_gauge(retained_bytes: f64, safe_bytes: Option<f64>, cap_bytes: Option<f64>) -> Markup {
    let capped = cap_bytes.filter(|cap| *cap > 0.0);
    let full = capped.unwrap_or(retained_bytes.max(1.0)).max(1.0);
    let x = |bytes: f64| (bytes / full).clamp(0.0, 1.0) * GAUGE_WIDTH;
    let used = x(retained_bytes);
    let class = match (capped, safe_bytes) {
        (Some(_), Some(safe)) if safe <= 0.0 => "gauge-lost",
        (Some(cap), _) if retained_bytes > cap * 0.8 => "gauge-high",
        (Some(_), _) => "gauge-ok",
        // Nothing bounds what the slot keeps: the risk the alert
        // WalpipeNoRetentionCap names.
        (None, _) => "gauge-high",
    };
    html! {
        svg.gauge width=(GAUGE_WIDTH) height=(GAUGE_HEIGHT) viewBox={"0 0 " (GAUGE_WIDTH) " " (GAUGE_HEIGHT)} role="img"
            aria-label="retained WAL against max_slot_wal_keep_size" {
            rect.gauge-track x="0" y="8" width=(GAUGE_WIDTH) height="16" rx="3" {}
            rect class=(class) x="0" y="8" width={(format!("{used:.1}"))} height="16" rx="3" {}
            @if let (Some(_), Some(safe)) = (capped, safe_bytes) {
                @let mark = x(retained_bytes + safe.max(0.0));
                line.gauge-safe x1=(format!("{mark:.1}")) x2=(format!("{mark:.1}")) y1="4" y2="28" stroke-width="2" {}
            }
            text x="0" y="38" font-size="11" fill="currentColor" {
                @match capped {
                    Some(cap) => { (bytes_text(retained_bytes)) " of " (bytes_text(cap)) " (max_slot_wal_keep_size)" }
                    None => { (bytes_text(retained_bytes)) " retained; no cap: set max_slot_wal_keep_size" }
                }
            }
        }
    }
}

/// Bytes in the nearest binary unit: `1.5 MiB`.
pub fn bytes_text(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = if bytes.is_finite() { bytes.max(0.0) } else { 0.0 };
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{value:.0} B") } else { format!("{value:.1} {}", units[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_draws_any_series() {
        let drawn = sparkline(&[1.0, 3.0, 2.0]).into_string();
        assert!(drawn.contains("points=\"0.0,30.0 80.0,2.0 160.0,16.0\""), "{drawn}");
        assert!(sparkline(&[]).into_string().contains("collecting"));
        assert!(sparkline(&[f64::NAN, f64::INFINITY, 5.0]).into_string().contains("polyline"));
        assert!(!sparkline(&[2.0, 2.0]).into_string().contains("NaN"));
    }

    #[test]
    fn the_gauge_marks_the_cap_and_the_safe_size() {
        let mib = 1024.0 * 1024.0;
        let drawn = wal_gauge(64.0 * mib, Some(32.0 * mib), Some(128.0 * mib)).into_string();
        assert!(drawn.contains("width=\"240.0\""), "half the cap: {drawn}");
        assert!(drawn.contains("x1=\"360.0\""), "lost at retained + safe: {drawn}");
        assert!(drawn.contains("64.0 MiB of 128.0 MiB"), "{drawn}");
        let uncapped = wal_gauge(3.0 * mib, None, Some(-1.0)).into_string();
        assert!(uncapped.contains("no cap"), "{uncapped}");
        assert!(wal_gauge(200.0 * mib, Some(-1.0), Some(128.0 * mib)).into_string().contains("gauge-lost"));
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(bytes_text(512.0), "512 B");
        assert_eq!(bytes_text(1536.0), "1.5 KiB");
        assert_eq!(bytes_text(f64::NAN), "0 B");
    }
}
