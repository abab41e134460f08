//! One clock for every thread: microseconds since a process-wide monotonic base, and the
//! wall-clock time of that base (records carry wall-clock microseconds so that a consumer in
//! another process on the same host could read them too).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Base {
    mono: Instant,
    wall_us: u64,
}

static BASE: OnceLock<Base> = OnceLock::new();

fn base() -> &'static Base {
    BASE.get_or_init(|| Base {
        mono: Instant::now(),
        wall_us: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
    })
}

/// Monotonic microseconds since the process base.
pub fn now_us() -> u64 {
    base().mono.elapsed().as_micros() as u64
}

/// Wall-clock microseconds since the Unix epoch for a monotonic `now_us` value.
pub fn wall_us(mono_us: u64) -> u64 {
    base().wall_us + mono_us
}

/// Monotonic microseconds for a wall-clock microsecond value (saturating at the base).
pub fn mono_from_wall_us(wall: u64) -> u64 {
    wall.saturating_sub(base().wall_us)
}

/// Wall-clock milliseconds since the epoch (record timestamps) for a monotonic value.
pub fn wall_ms(mono_us: u64) -> i64 {
    (wall_us(mono_us) / 1000) as i64
}

/// `YYYYMMDDTHHMMSS` in UTC for seconds since the epoch (results directory names).
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// ISO 8601 UTC (`2026-11-21T10:15:00Z`) for seconds since the epoch.
pub fn utc_iso(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000");
        // 2026-11-21 10:15:00 UTC
        assert_eq!(utc_stamp(1_795_256_100), "20261121T101500");
        assert_eq!(utc_iso(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn clock_is_monotonic_and_wall_is_consistent() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
        assert_eq!(mono_from_wall_us(wall_us(b)), b);
    }
}
