//! Go 1.19 `time.Time` JSON round trip, as registry 2.8.2 applies it to config history.
//!
//! The registry parses `created` with the layout `"2006-01-02T15:04:05Z07:00"` (quotes
//! included, on the raw JSON token) and writes it back as RFC 3339 with nanoseconds. Go's
//! parser is looser than RFC 3339 in places (one-digit hours, `,` fractions, unchecked
//! offset hours) and the output normalises those, so both directions are copied here.

/// A wall-clock time with its UTC offset, as Go keeps it after parsing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoTime {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    /// Offset east of UTC, in seconds.
    offset: i32,
}

impl GoTime {
    /// Go's zero `time.Time`: 0001-01-01T00:00:00Z.
    pub fn zero() -> GoTime {
        GoTime {
            year: 1,
            month: 1,
            day: 1,
            ..GoTime::default()
        }
    }

    /// Parses a raw JSON token (with its quotes) like Go 1.19's `Time.UnmarshalJSON`.
    pub fn parse_json_token(token: &[u8]) -> Option<GoTime> {
        let mut p = Cursor(token);
        p.literal(b'"')?;
        let year = p.fixed_digits(4)?;
        p.literal(b'-')?;
        let month = p.num(true)?;
        p.literal(b'-')?;
        let day = p.num(true)?;
        p.literal(b'T')?;
        let hour = p.num(false)?;
        p.literal(b':')?;
        let minute = p.num(true)?;
        p.literal(b':')?;
        let second = p.num(true)?;
        if !(1..=12).contains(&month) || hour >= 24 || minute >= 60 || second >= 60 {
            return None;
        }
        let nanos = p.fraction()?;
        let offset = p.zone()?;
        p.literal(b'"')?;
        if !p.0.is_empty() || day < 1 || day > days_in_month(year as i32, month) {
            return None;
        }
        Some(GoTime {
            year: year as i32,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
            offset,
        })
    }

    /// Go's RFC3339Nano output, as `Time.MarshalJSON` writes it (without quotes).
    pub fn to_rfc3339_nano(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        if self.offset == 0 {
            s.push('Z');
        } else {
            let minutes = self.offset.abs() / 60;
            let sign = if self.offset < 0 { '-' } else { '+' };
            s.push_str(&format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60));
        }
        s
    }

    /// The instant in UTC at seconds precision, `YYYY-MM-DDTHH:MM:SSZ` (Go's RFC3339 of
    /// `t.UTC()`), or None if the UTC year falls outside 0..=9999.
    pub fn to_utc_seconds(&self) -> Option<String> {
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        (0..=9999).contains(&y).then(|| {
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem / 60 % 60,
                rem % 60
            )
        })
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn literal(&mut self, c: u8) -> Option<()> {
        let (&first, rest) = self.0.split_first()?;
        (first == c).then(|| self.0 = rest)
    }

    fn digit(&self, i: usize) -> Option<u32> {
        self.0
            .get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    }

    fn fixed_digits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0;
        for i in 0..n {
            v = v * 10 + self.digit(i)?;
        }
        self.0 = &self.0[n..];
        Some(v)
    }

    /// Go's `getnum`: one or two digits, exactly two when `fixed`.
    fn num(&mut self, fixed: bool) -> Option<u32> {
        let first = self.digit(0)?;
        match self.digit(1) {
            Some(second) => {
                self.0 = &self.0[2..];
                Some(first * 10 + second)
            }
            None if fixed => None,
            None => {
                self.0 = &self.0[1..];
                Some(first)
            }
        }
    }

    /// An optional `.` or `,` fraction with at least one digit; digits past nine are cut.
    fn fraction(&mut self) -> Option<u32> {
        let has_fraction = matches!(self.0.first(), Some(b'.' | b','));
        if !has_fraction || self.digit(1).is_none() {
            return Some(0);
        }
        let mut n = 1;
        while self.digit(n).is_some() {
            n += 1;
        }
        let mut nanos = 0;
        for i in 1..10 {
            nanos = nanos * 10 + if i < n { self.digit(i)? } else { 0 };
        }
        self.0 = &self.0[n..];
        Some(nanos)
    }

    /// `Z` or `±hh:mm` with two digits each; the values are not range-checked in Go 1.19.
    fn zone(&mut self) -> Option<i32> {
        if self.literal(b'Z').is_some() {
            return Some(0);
        }
        let z = self.0.get(..6)?;
        if z[3] != b':' {
            return None;
        }
        let two = |a: u8, b: u8| {
            (a.is_ascii_digit() && b.is_ascii_digit())
                .then(|| i32::from(a - b'0') * 10 + i32::from(b - b'0'))
        };
        let seconds = (two(z[1], z[2])? * 60 + two(z[4], z[5])?) * 60;
        let offset = match z[0] {
            b'+' => seconds,
            b'-' => -seconds,
            _ => return None,
        };
        self.0 = &self.0[6..];
        Some(offset)
    }
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(token: &str) -> Option<String> {
        GoTime::parse_json_token(token.as_bytes()).map(|t| t.to_rfc3339_nano())
    }

    #[test]
    fn outputs_seen_on_registry_2_8_2() {
        let cases = [
            (r#""2023-05-19T09:00:00,5Z""#, "2023-05-19T09:00:00.5Z"),
            (r#""2023-05-19T9:00:00Z""#, "2023-05-19T09:00:00Z"),
            (
                r#""2023-05-19T09:00:00.1234567891Z""#,
                "2023-05-19T09:00:00.123456789Z",
            ),
            (r#""2023-05-19T09:00:00.120Z""#, "2023-05-19T09:00:00.12Z"),
            (r#""2023-05-19T09:00:00.000Z""#, "2023-05-19T09:00:00Z"),
            (
                r#""2023-05-19T09:00:00+05:30""#,
                "2023-05-19T09:00:00+05:30",
            ),
            (r#""2023-05-19T09:00:00+00:00""#, "2023-05-19T09:00:00Z"),
            (r#""2023-05-19T09:00:00-00:00""#, "2023-05-19T09:00:00Z"),
            (
                r#""2023-05-19T09:00:00+24:00""#,
                "2023-05-19T09:00:00+24:00",
            ),
            (
                r#""2023-05-19T09:00:00+05:99""#,
                "2023-05-19T09:00:00+06:39",
            ),
            (r#""2024-02-29T00:00:00Z""#, "2024-02-29T00:00:00Z"),
            (r#""0000-02-29T00:00:00Z""#, "0000-02-29T00:00:00Z"),
        ];
        for (input, want) in cases {
            assert_eq!(roundtrip(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn rejects_what_go_1_19_rejects() {
        for bad in [
            r#""""#,
            r#""2023-05-19t09:00:00Z""#,
            r#""2023-05-19T09:00:00z""#,
            r#""2023-05-19 09:00:00Z""#,
            r#""2023-05-19T09:00:00+0530""#,
            r#""2023-02-30T09:00:00Z""#,
            r#""2023-05-19T24:00:00Z""#,
            r#""2023-05-19T09:60:00Z""#,
            r#""2023-05-19T09:00:60Z""#,
            r#""2023-13-19T09:00:00Z""#,
            r#""2023-05-00T09:00:00Z""#,
            r#""2023-5-19T09:00:00Z""#,
            r#""23-05-19T09:00:00Z""#,
            r#""2023-05-19T09:00:00.Z""#,
            r#""2023-05-19T09:00:00""#,
            r#""2023-05-19T09:00:00Zx""#,
            "2023-05-19T09:00:00Z",
            "null",
            r#""2023-05-19T09:00:00\u005a""#,
        ] {
            assert_eq!(roundtrip(bad), None, "{bad}");
        }
    }

    #[test]
    fn utc_seconds_for_signing_time() {
        let t = GoTime::parse_json_token(br#""2023-05-19T01:30:59.9+05:30""#).unwrap();
        assert_eq!(t.to_utc_seconds().as_deref(), Some("2023-05-18T20:00:59Z"));
        assert_eq!(
            GoTime::zero().to_utc_seconds().as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        let early = GoTime::parse_json_token(br#""0000-01-01T00:00:00+01:00""#).unwrap();
        assert_eq!(early.to_utc_seconds(), None);
    }
}
