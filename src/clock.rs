//! Wall-clock time as records, logs and answers carry it: RFC 3339 UTC with milliseconds,
//! and Unix milliseconds. A leaf: it uses nothing else from the crate.

use time::OffsetDateTime;

/// The current UTC time as RFC 3339 with milliseconds, and as Unix milliseconds.
pub(crate) fn now() -> (String, u64) {
    format_time(OffsetDateTime::now_utc())
}

/// Formats a time the way records carry it.
pub(crate) fn format_time(t: OffsetDateTime) -> (String, u64) {
    let ms = (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    // Every audit record carries one: digits written in place, not through `format!`
    // (README, "Performance: where the time goes").
    if let Ok(year @ 0..=9999) = u32::try_from(t.year()) {
        let mut text = *b"0000-00-00T00:00:00.000Z";
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, u32::from(u8::from(t.month()))),
            (8, 2, u32::from(t.day())),
            (11, 2, u32::from(t.hour())),
            (14, 2, u32::from(t.minute())),
            (17, 2, u32::from(t.second())),
            (20, 3, u32::from(t.millisecond())),
        ] {
            let mut value = value;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        // Only ASCII digits and separators were written.
        return (text.iter().map(|&b| char::from(b)).collect(), ms);
    }
    (formatted(t), ms)
}

/// The same text through `format!`, for years outside 0..=9999.
fn formatted(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 time (CLI filters, stored records) into Unix milliseconds.
pub(crate) fn parse_time(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_and_round_trip() {
        let (text, ms) = now();
        assert_eq!(text.len(), "2026-11-23T09:00:00.000Z".len(), "{text}");
        assert_eq!(parse_time(&text), Some(ms));
    }

    #[test]
    fn digits_in_place_read_as_format_writes_them() {
        let mut checked = 0;
        // Every field through its range, across leap days and the years' ends.
        let mut ms: i128 = -62_135_596_800_000; // 0001-01-01
        while ms < 253_402_300_800_000 + 86_400_000 {
            let t = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap();
            assert_eq!(format_time(t).0, formatted(t), "{ms}");
            // About 13 days, plus an odd number of hours, minutes, seconds and ms.
            ms += 86_400_000 * 13 + 3_661_007;
            checked += 1;
        }
        assert!(checked > 250_000, "{checked}");
        // Before year 0: the fallback.
        let early = OffsetDateTime::from_unix_timestamp(-62_198_755_200 - 86_400).unwrap();
        assert_eq!(format_time(early).0, formatted(early));
        assert!(format_time(early).0.starts_with('-'));
    }
}
