//! W3C Trace Context: the `traceparent` every record carries, the request's own when it
//! sent a valid one, else a new one (<https://www.w3.org/TR/trace-context/>).

use std::fmt;

use http::HeaderMap;

/// The header's name, in requests and on records.
pub const TRACEPARENT: &str = "traceparent";

/// A valid `traceparent` value, version `00`: `00-<trace-id>-<parent-id>-<flags>`, lower-case
/// hex, neither id all zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// `value` if it is a valid `traceparent`. A later version is read as the spec says
    /// (its first four fields) and written back as version `00`; anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let bytes = value.as_bytes();
        let version = value.get(..2)?;
        if !is_hex(version) || version == "ff" {
            return None;
        }
        let exact = version == "00";
        if bytes.len() < 55
            || (exact && bytes.len() != 55)
            || (bytes.len() > 55 && bytes[55] != b'-')
        {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let (trace, parent, flags) = (&value[3..35], &value[36..52], &value[53..55]);
        let valid =
            [trace, parent, flags].iter().all(|f| is_hex(f)) && !is_zero(trace) && !is_zero(parent);
        valid.then(|| Self(format!("00-{trace}-{parent}-{flags}")))
    }

    /// The request's `traceparent` when it holds exactly one valid value, else a new one.
    pub fn of_request(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().and_then(Self::parse),
            _ => None,
        }
        .unwrap_or_else(Self::new)
    }

    /// A new trace: random trace and parent ids, sampled.
    pub fn new() -> Self {
        let trace = loop {
            let id = fastrand::u128(..);
            if id != 0 {
                break id;
            }
        };
        let parent = fastrand::u64(1..);
        Self(format!("00-{trace:032x}-{parent:016x}-01"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TraceParent {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lower-case hex digits only (the spec forbids upper case).
fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_values_are_kept_and_invalid_ones_refused() {
        assert_eq!(TraceParent::parse(VALID).unwrap().as_str(), VALID);
        assert_eq!(
            TraceParent::parse(&format!(" {VALID}\t")).unwrap().as_str(),
            VALID
        );
        // A later version: its first four fields, written as version 00.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(TraceParent::parse(later).unwrap().as_str(), VALID);
        for invalid in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn a_request_keeps_its_one_valid_traceparent_and_gets_a_new_one_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, VALID.parse().unwrap());
        assert_eq!(TraceParent::of_request(&headers).as_str(), VALID);
        headers.append(TRACEPARENT, VALID.parse().unwrap());
        assert_ne!(
            TraceParent::of_request(&headers).as_str(),
            VALID,
            "two values"
        );
        headers.insert(TRACEPARENT, "garbage".parse().unwrap());
        let replaced = TraceParent::of_request(&headers);
        assert_ne!(replaced.as_str(), "garbage");
        assert_eq!(TraceParent::parse(replaced.as_str()), Some(replaced));
    }

    #[test]
    fn new_trace_parents_are_valid_sampled_and_distinct() {
        let a = TraceParent::new();
        let b = TraceParent::new();
        assert_eq!(TraceParent::parse(a.as_str()).as_ref(), Some(&a));
        assert!(a.as_str().ends_with("-01"));
        assert_ne!(a, b);
    }
}
