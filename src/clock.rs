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
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
    (text, ms)
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
}
