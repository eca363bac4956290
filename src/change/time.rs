//! Times in the change lines: RFC 3339 in UTC, with microseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (negative before it).
pub fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-21T10:30:00.123456Z`.
pub fn format_rfc3339(unix_micros: i64) -> String {
    let seconds = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        );
    }
    // By hand: once per transaction, and `format!` cost a tenth of a small one.
    let mut text = String::with_capacity(27);
    let fields: [(i64, usize, char); 7] = [
        (year, 4, '-'),
        (i64::from(month), 2, '-'),
        (i64::from(day), 2, 'T'),
        (of_day / 3600, 2, ':'),
        (of_day / 60 % 60, 2, ':'),
        (of_day % 60, 2, '.'),
        (micros, 6, 'Z'),
    ];
    for (value, width, after) in fields {
        push_digits(&mut text, value, width);
        text.push(after);
    }
    text
}

/// `value` (not negative) in `width` digits, zero-padded.
fn push_digits(text: &mut String, value: i64, width: usize) {
    let mut divisor = 10_i64.pow(width as u32 - 1);
    while divisor > 0 {
        text.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_rfc3339(1_795_257_000 * 1_000_000 + 123_456), "2026-11-21T10:30:00.123456Z");
        assert_eq!(format_rfc3339(946_684_800 * 1_000_000), "2000-01-01T00:00:00.000000Z");
        assert_eq!(format_rfc3339((946_684_800 + 60 * 86_400) * 1_000_000), "2000-03-01T00:00:00.000000Z");
        assert_eq!(format_rfc3339(-62_135_596_800 * 1_000_000), "0001-01-01T00:00:00.000000Z");
        assert_eq!(format_rfc3339(253_402_300_799 * 1_000_000 + 999_999), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_rfc3339(253_402_300_800 * 1_000_000), "10000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn extreme_values_do_not_panic() {
        for value in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let _ = format_rfc3339(value);
        }
    }
}
