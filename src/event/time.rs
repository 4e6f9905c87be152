//! Timestamps: every date shape Comm100 sends, normalized to RFC 3339 UTC with milliseconds.

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// An instant, serialized as `"2020-03-17T05:33:23.253Z"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now())
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// The instant `ms` milliseconds after the Unix epoch, if representable.
    pub fn from_millis(ms: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(ms).map(Self)
    }

    /// Parses a JSON date value: `/Date(n)/`, `/Date(n±hhmm)/`, a bare epoch number
    /// (as a JSON number or a string of digits) or ISO-8601. Only a date of years
    /// 0001–9999 that is not one of .NET's "no date" sentinels is an instant.
    pub fn parse_value(value: &Value) -> Option<Self> {
        Date::of_value(value).instant()
    }

    /// Parses a date string; see [`Timestamp::parse_value`].
    pub fn parse_str(s: &str) -> Option<Self> {
        Date::of_str(s).instant()
    }

    /// Any instant the text forms name, before the range and sentinel checks.
    fn any_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Self::any_str(s),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Self::from_epoch(i)
                } else {
                    let f = n.as_f64()?;
                    if !f.is_finite() || f.abs() >= 1e15 {
                        return None;
                    }
                    let ms = if f.abs() < 1e10 { f * 1000.0 } else { f };
                    Self::from_millis(ms.round() as i64)
                }
            }
            _ => None,
        }
    }

    fn any_str(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(inner) = strip_dotnet(s) {
            return Self::parse_dotnet(inner);
        }
        if is_epoch_digits(s) {
            return Self::from_epoch(s.parse().ok()?);
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(Self(dt.with_timezone(&Utc)));
        }
        // ISO-8601 with a `±hhmm` offset, or with none (taken as UTC).
        const ZONED: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"];
        if let Some(dt) = ZONED
            .iter()
            .find_map(|f| DateTime::parse_from_str(s, f).ok())
        {
            return Some(Self(dt.with_timezone(&Utc)));
        }
        const NAIVE: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
        NAIVE
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .map(|n| Self(n.and_utc()))
    }

    /// The inside of `/Date(...)/`: an optionally signed integer and an optional `±hhmm`.
    fn parse_dotnet(inner: &str) -> Option<Self> {
        let (sign, rest) = match inner.as_bytes().first()? {
            b'-' => (-1, &inner[1..]),
            b'+' => (1, &inner[1..]),
            _ => (1, inner),
        };
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, zone) = rest.split_at(digits_end);
        let zone_ok = zone.is_empty()
            || (zone.len() == 5
                && matches!(zone.as_bytes()[0], b'+' | b'-')
                && zone[1..].bytes().all(|b| b.is_ascii_digit()));
        if digits.is_empty() || !zone_ok {
            return None;
        }
        let n: i64 = digits.parse().ok()?;
        Self::from_epoch(sign * n)
    }

    /// Seconds when the number has 10 digits or fewer, milliseconds otherwise.
    fn from_epoch(n: i64) -> Option<Self> {
        if n.unsigned_abs() < 10_000_000_000 {
            DateTime::from_timestamp(n, 0).map(Self)
        } else {
            Self::from_millis(n)
        }
    }
}

/// A date value as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Date {
    /// An instant of years 0001–9999.
    At(Timestamp),
    /// .NET's `DateTime.MinValue` or `DateTime.MaxValue`: the sender's "no date".
    Unset,
    /// Not a date, or one outside years 0001–9999, which RFC 3339 cannot write.
    Invalid,
}

/// `DateTime.MinValue`, 0001-01-01T00:00:00Z, in Unix milliseconds.
const MIN_VALUE_MS: i64 = -62_135_596_800_000;
/// `DateTime.MaxValue` to the millisecond, 9999-12-31T23:59:59.999Z.
const MAX_VALUE_MS: i64 = 253_402_300_799_999;

impl Date {
    pub fn of_value(value: &Value) -> Self {
        Self::of(Timestamp::any_value(value))
    }

    pub fn of_str(s: &str) -> Self {
        Self::of(Timestamp::any_str(s))
    }

    fn of(t: Option<Timestamp>) -> Self {
        let Some(t) = t else { return Self::Invalid };
        let ms = t.0.timestamp_millis();
        if ms == MIN_VALUE_MS || ms == MAX_VALUE_MS {
            Self::Unset
        } else if (1..=9999).contains(&t.0.year()) {
            Self::At(t)
        } else {
            Self::Invalid
        }
    }

    pub fn instant(self) -> Option<Timestamp> {
        match self {
            Self::At(t) => Some(t),
            _ => None,
        }
    }
}

/// The inside of `/Date(...)/`, the prefix matched case-insensitively.
fn strip_dotnet(s: &str) -> Option<&str> {
    let inner = s.strip_suffix(")/")?;
    let prefix = inner.get(..6)?;
    prefix.eq_ignore_ascii_case("/Date(").then(|| &inner[6..])
}

fn is_epoch_digits(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` without allocating, for years 0 to 9999.
    fn rfc3339(&self) -> Option<[u8; 24]> {
        let t = self.0.naive_utc();
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let millis = Some(t.nanosecond() / 1_000_000).filter(|ms| *ms < 1000)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 3, millis);
        Some(out)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rfc3339() {
            // The buffer holds ASCII digits and punctuation only.
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?),
            None => f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formatting_matches_chrono_for_every_year_range() {
        for ms in [
            0,
            1,
            999,
            1_584_416_219_000,
            1_584_416_219_007,
            -1,
            -62_167_219_200_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_001,
            300_000_000_000_000,
        ] {
            let t = Timestamp::from_millis(ms).unwrap();
            let chrono = t.0.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(t.to_string(), chrono, "{ms}");
            assert_eq!(serde_json::to_value(t).unwrap(), json!(chrono), "{ms}");
        }
    }

    fn norm(v: Value) -> Option<String> {
        Timestamp::parse_value(&v).map(|t| t.to_string())
    }

    #[test]
    fn dotnet_milliseconds() {
        assert_eq!(
            norm(json!("/Date(1584423203253)/")).unwrap(),
            "2020-03-17T05:33:23.253Z"
        );
    }

    #[test]
    fn dotnet_offset_does_not_shift_the_instant() {
        assert_eq!(
            norm(json!("/Date(1584423203253+0800)/")).unwrap(),
            "2020-03-17T05:33:23.253Z"
        );
        assert_eq!(
            norm(json!("/Date(1584423203253-0500)/")).unwrap(),
            "2020-03-17T05:33:23.253Z"
        );
    }

    #[test]
    fn dotnet_ten_digits_are_seconds() {
        assert_eq!(
            norm(json!("/Date(1358453897)/")).unwrap(),
            "2013-01-17T20:18:17.000Z"
        );
        // 11 digits are milliseconds.
        assert_eq!(
            norm(json!("/Date(13584868423)/")).unwrap(),
            "1970-06-07T05:34:28.423Z"
        );
    }

    #[test]
    fn dotnet_negative() {
        assert_eq!(
            norm(json!("/Date(-1000)/")).unwrap(),
            "1969-12-31T23:43:20.000Z"
        );
        assert_eq!(
            norm(json!("/Date(-86400000000)/")).unwrap(),
            "1967-04-07T00:00:00.000Z"
        );
    }

    /// Every date written has a four-digit year; .NET's "no date" is no date.
    #[test]
    fn dates_outside_years_1_to_9999_are_invalid_and_sentinels_are_no_date() {
        for (value, expected) in [
            (json!("/Date(1584416219000000)/"), Date::Invalid),
            (json!(1584416219000000_i64), Date::Invalid),
            (json!("1584416219000000"), Date::Invalid),
            (json!("10000-01-01T00:00:00Z"), Date::Invalid),
            (json!("/Date(-62135596800001)/"), Date::Invalid),
            (json!("/Date(-62135596800000)/"), Date::Unset),
            (json!("/Date(-62135596800000+0000)/"), Date::Unset),
            (json!("0001-01-01T00:00:00"), Date::Unset),
            (json!("0001-01-01T00:00:00Z"), Date::Unset),
            (json!("/Date(253402300799999)/"), Date::Unset),
            (json!("9999-12-31T23:59:59.9999999"), Date::Unset),
        ] {
            assert_eq!(Date::of_value(&value), expected, "{value}");
        }
        let first = Date::of_str("0001-01-01T00:00:00.001Z").instant().unwrap();
        assert_eq!(first.to_string(), "0001-01-01T00:00:00.001Z");
        let last = Date::of_str("9999-12-31T23:59:59.998Z").instant().unwrap();
        assert_eq!(last.to_string(), "9999-12-31T23:59:59.998Z");
    }

    /// `/Date(` in any case; ISO offsets `Z`, `±hh:mm` or `±hhmm`.
    #[test]
    fn lower_case_dotnet_dates_and_offsets_without_a_colon() {
        for text in [
            "/date(1584423203253)/",
            "/DATE(1584423203253-0500)/",
            "2020-03-17T05:33:23.253Z",
            "2020-03-17T05:33:23.253+0000",
            "2020-03-17T13:33:23.253+0800",
            "2020-03-17T13:33:23.253+08:00",
            "2020-03-17T00:03:23.253-0530",
            "2020-03-17 13:33:23.253+0800",
        ] {
            assert_eq!(
                norm(json!(text)).as_deref(),
                Some("2020-03-17T05:33:23.253Z"),
                "{text}"
            );
        }
    }

    #[test]
    fn escaped_slashes_decode_to_the_same_date() {
        let v: Value = serde_json::from_str(r#""\/Date(1584423203253)\/""#).unwrap();
        assert_eq!(norm(v).unwrap(), "2020-03-17T05:33:23.253Z");
    }

    #[test]
    fn bare_numbers() {
        assert_eq!(
            norm(json!(1584423203253_i64)).unwrap(),
            "2020-03-17T05:33:23.253Z"
        );
        assert_eq!(norm(json!(1584423203)).unwrap(), "2020-03-17T05:33:23.000Z");
        assert_eq!(
            norm(json!("1584423203253")).unwrap(),
            "2020-03-17T05:33:23.253Z"
        );
        assert_eq!(
            norm(json!(1584423203.5)).unwrap(),
            "2020-03-17T05:33:23.500Z"
        );
    }

    #[test]
    fn iso_8601() {
        assert_eq!(
            norm(json!("2020-03-17T05:33:23.253Z")).unwrap(),
            "2020-03-17T05:33:23.253Z"
        );
        assert_eq!(
            norm(json!("2020-03-17T13:33:23+08:00")).unwrap(),
            "2020-03-17T05:33:23.000Z"
        );
        assert_eq!(
            norm(json!("2020-03-17T05:33:23")).unwrap(),
            "2020-03-17T05:33:23.000Z"
        );
        assert_eq!(
            norm(json!("2020-03-17 05:33:23.1")).unwrap(),
            "2020-03-17T05:33:23.100Z"
        );
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        for v in [
            json!("/Date()/"),
            json!("/Date(abc)/"),
            json!("/Date(1584423203253+08)/"),
            json!("/Date(99999999999999999999)/"),
            json!("/Date(-)/"),
            json!("/Date(9223372036854775807)/"),
            json!("yesterday"),
            json!(""),
            json!(1e300),
            json!(-9223372036854775808_i64),
            json!(true),
            json!(null),
            json!([]),
        ] {
            assert_eq!(norm(v.clone()), None, "{v}");
        }
    }
}
