//! PostgreSQL timestamps on the wire: microseconds since 2000-01-01 00:00 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch to the PostgreSQL epoch (2000-01-01).
const PG_EPOCH_UNIX_SECONDS: u64 = 946_684_800;

/// A wire timestamp for a wall-clock time.
pub fn to_pg_micros(time: SystemTime) -> i64 {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECONDS);
    match time.duration_since(pg_epoch) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// Microseconds since the Unix epoch for a wire timestamp.
pub fn pg_micros_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_UNIX_SECONDS as i64 * 1_000_000)
}

/// The wall-clock time of a wire timestamp.
pub fn to_system_time(pg_micros: i64) -> SystemTime {
    let unix_micros = pg_micros_to_unix_micros(pg_micros);
    match u64::try_from(unix_micros) {
        Ok(after) => UNIX_EPOCH + Duration::from_micros(after),
        Err(_) => UNIX_EPOCH - Duration::from_micros(unix_micros.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_system_time() {
        let now = SystemTime::now();
        let pg = to_pg_micros(now);
        let unix = now.duration_since(UNIX_EPOCH).expect("after 1970").as_micros() as i64;
        assert_eq!(pg_micros_to_unix_micros(pg), unix);
    }
}
