//! Time (spec 2.10, 4.8, 6.11; D8, D61): `now`, `time`, the time-string parser shared
//! with CSV/LTSV inference, time-zone strings, and the `time` namespace (operators,
//! `string`, `number` and the calendar fields).
//!
//! A [`Time`] is an instant (`secs` since the epoch plus `nanos`) with a display
//! offset. Calendar fields and the text form are computed in the display offset; a
//! date-only value uses UTC (D61). Local times use the offset in effect at that instant
//! in the process's zone (the `TZ` environment variable, through `jiff`; D8).

use std::cmp::Ordering;

use crate::eval::print::{civil_from_days, days_from_civil, write_time};
use crate::ext::{Args, Registry, RuntimeError, Time, TimeOffset, Value};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Whether an instant lies in the range a time value may hold: jiff's (years -9999 to
/// 9999, less a day at each end), so that local offsets and printing are always defined.
fn in_range(secs: i64) -> bool {
    (jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second()).contains(&secs)
}

/// Converts a local civil time, given as seconds since the epoch as if it were UTC,
/// to `(instant, display offset)` in the process's zone (D8: the offset in effect at
/// that instant). A civil time skipped by a DST transition, or repeated by one, is
/// resolved the "compatible" way (RFC 5545, Temporal): in a gap the offset before the
/// gap places the instant, which then shows with the offset after it (02:30 on a
/// spring-forward day in New York is 03:30-04:00); in a fold the earlier instant wins.
pub fn local_to_instant(civil_secs: i64) -> Option<(i64, i32)> {
    use jiff::civil::DateTime;
    use jiff::tz::TimeZone;
    let days = civil_secs.div_euclid(86_400);
    let sod = civil_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let dt = DateTime::new(
        i16::try_from(y).ok()?,
        m as i8,
        d as i8,
        (sod / 3600) as i8,
        (sod / 60 % 60) as i8,
        (sod % 60) as i8,
        0,
    )
    .ok()?;
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    let zoned = tz.to_ambiguous_zoned(dt).compatible().ok()?;
    Some((zoned.timestamp().as_second(), zoned.offset().seconds()))
}

/// The UTC offset (seconds) that places a local civil time (seconds since the epoch as
/// if it were UTC) at its instant: `instant = civil - offset` (see [`local_to_instant`];
/// outside DST gaps this is also the display offset).
pub fn local_offset_for_civil(civil_secs: i64) -> Option<i32> {
    let (secs, _) = local_to_instant(civil_secs)?;
    i32::try_from(civil_secs - secs).ok()
}

/// The local UTC offset (seconds) at an instant.
pub fn local_offset_at(secs: i64) -> i32 {
    use jiff::tz::TimeZone;
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => tz.to_offset(ts).seconds(),
        Err(_) => 0,
    }
}

// ----- time-zone strings and the parser ---------------------------------------------

/// Parses a time-zone string (6.11): `Z` (UTC), `+HH:MM`, `+H:MM`, `+HHMM`, `+H`, `+HH`
/// and the same with `-`; hours at most 14, minutes at most 59. Returns the offset in
/// seconds east of UTC.
pub fn parse_zone(s: &[u8]) -> Option<i32> {
    let (&sign, rest) = s.split_first()?;
    let neg = match sign {
        b'Z' if rest.is_empty() => return Some(0),
        b'+' => false,
        b'-' => true,
        _ => return None,
    };
    let ndig = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let num = |d: &[u8]| d.iter().fold(0i32, |n, b| n * 10 + (b - b'0') as i32);
    let (h, m) = match (ndig, &rest[ndig..]) {
        (1 | 2, []) => (num(&rest[..ndig]), 0),
        (4, []) => (num(&rest[..2]), num(&rest[2..4])),
        (1 | 2, [b':', m1, m2]) if m1.is_ascii_digit() && m2.is_ascii_digit() => {
            (num(&rest[..ndig]), num(&[*m1, *m2]))
        }
        _ => return None,
    };
    if h > 14 || m > 59 {
        return None;
    }
    let secs = (h * 60 + m) * 60;
    Some(if neg { -secs } else { secs })
}

/// A byte cursor for the time-string parser.
struct Cur<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Reads between `min` and `max` digits (greedily); returns value and count.
    fn digits(&mut self, min: usize, max: usize) -> Option<(u32, usize)> {
        let mut n = 0u32;
        let mut k = 0;
        while k < max {
            match self.s.get(self.i + k) {
                Some(b) if b.is_ascii_digit() => {
                    n = n * 10 + (b - b'0') as u32;
                    k += 1;
                }
                _ => break,
            }
        }
        if k < min {
            return None;
        }
        self.i += k;
        Some((n, k))
    }

    fn spaces(&mut self) -> usize {
        let start = self.i;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        self.i - start
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn month_abbrev(c: &mut Cur) -> Option<u32> {
    let w = c.s.get(c.i..c.i + 3)?;
    let m = MONTHS
        .iter()
        .position(|name| w.eq_ignore_ascii_case(&name[..]))?;
    // An abbreviation is a whole word: "Augx 1" is not a date.
    if c.s.get(c.i + 3).is_some_and(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    c.i += 3;
    Some(m as u32 + 1)
}

/// The number of days in a month of the proleptic Gregorian calendar.
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn valid_date(y: i64, m: u32, d: u32) -> bool {
    (-9999..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

/// The current year in the local zone (for the `Mon DD` form).
fn current_local_year() -> i64 {
    jiff::Zoned::now().year() as i64
}

/// The date part: `(year, month, day)`.
fn parse_date(c: &mut Cur, strict: bool) -> Option<(i64, u32, u32)> {
    let start = c.i;
    let year_digits = |k: usize| !strict || k == 4;
    // YYYY.MM.DD, YYYY-MM-DD, YYYY/MM/DD (one separator throughout).
    if let Some((y, k)) = c.digits(1, 4) {
        if let Some(sep) = c.peek().filter(|b| matches!(b, b'.' | b'-' | b'/')) {
            c.i += 1;
            if year_digits(k) {
                if let Some((m, _)) = c.digits(1, 2) {
                    if c.eat(sep) {
                        if let Some((d, _)) = c.digits(1, 2) {
                            return Some((y as i64, m, d));
                        }
                    }
                }
            }
            return None;
        }
        // YYYYMMDD, only when a time part follows.
        c.i = start;
        let (y, _) = c.digits(4, 4)?;
        let (m, _) = c.digits(2, 2)?;
        let (d, _) = c.digits(2, 2)?;
        if matches!(c.peek(), Some(b'T' | b' ')) {
            return Some((y as i64, m, d));
        }
        return None;
    }
    // Mon DD YYYY, then (lenient only) Mon DD in the current year.
    let m = month_abbrev(c)?;
    if c.spaces() == 0 {
        return None;
    }
    let (d, _) = c.digits(1, 2)?;
    let after_day = c.i;
    if c.spaces() > 0 {
        if let Some((y, k)) = c.digits(1, 4) {
            if c.peek() != Some(b':') && year_digits(k) {
                return Some((y as i64, m, d));
            }
        }
    }
    if strict {
        return None;
    }
    c.i = after_day;
    Some((current_local_year(), m, d))
}

/// The time part: `(hour, minute, second, nanos)`.
fn parse_clock(c: &mut Cur) -> Option<(u32, u32, u32, u32)> {
    let start = c.i;
    let (h, hk) = c.digits(1, 2)?;
    let (mi, s) = if c.eat(b':') {
        let (mi, _) = c.digits(1, 2)?;
        let s = if c.eat(b':') { c.digits(1, 2)?.0 } else { 0 };
        (mi, s)
    } else {
        // HHMMSS
        if hk != 2 {
            return None;
        }
        c.i = start;
        let (h2, _) = c.digits(2, 2)?;
        debug_assert_eq!(h2, h);
        let (mi, _) = c.digits(2, 2)?;
        let (s, _) = c.digits(2, 2)?;
        (mi, s)
    };
    let mut nanos = 0u32;
    if c.eat(b'.') {
        let first = c.i;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            let k = c.i - first;
            if k < 9 {
                nanos += (c.s[c.i] - b'0') as u32 * 10u32.pow(8 - k as u32);
            }
            c.i += 1;
        }
        if c.i == first {
            return None;
        }
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some((h, mi, s, nanos))
}

fn parse_time_impl(s: &[u8], strict: bool) -> Option<Time> {
    let mut c = Cur { s, i: 0 };
    let (y, m, d) = parse_date(&mut c, strict)?;
    if !valid_date(y, m, d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if c.at_end() {
        return Some(Time {
            secs: days * 86_400,
            nanos: 0,
            offset: TimeOffset::DateOnly,
        });
    }
    if !c.eat(b'T') && c.spaces() == 0 {
        return None;
    }
    let (h, mi, sec, nanos) = parse_clock(&mut c)?;
    let civil = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64;
    let (secs, offset) = if c.at_end() {
        local_to_instant(civil)?
    } else {
        let offset = parse_zone(&s[c.i..])?;
        (civil - offset as i64, offset)
    };
    Some(Time {
        secs,
        nanos,
        offset: TimeOffset::Seconds(offset),
    })
}

/// Parses a time string the way `time(s)` does (6.11). The whole input must match
/// (no surrounding whitespace): a date part, optionally followed by `T` or one or more
/// spaces and a time part.
///
/// * Date part: `Y.M.D`, `Y-M-D`, `Y/M/D` (the same separator twice; year of 1-4
///   digits, month and day of 1-2 digits); `YYYYMMDD` (exactly 8 digits, only when a
///   time part follows); `Mon D Y` (an English month abbreviation, any case, then
///   spaces, a 1-2 digit day, spaces and a 1-4 digit year, which must not be followed
///   by `:` so that `Apr 14 20:00` is not year 20); `Mon D` (the current local year).
/// * Time part: `H:M:S`, `HHMMSS` or `H:M` (1-2 digits each in the colon forms),
///   optionally followed by `.` and one or more fraction digits (a decimal fraction of
///   a second; digits after the ninth are dropped), then optionally `Z` or a numeric
///   offset as accepted by [`parse_zone`].
///
/// Without a time part the result is a date-only value (midnight UTC). With a time
/// part but no zone the time is local, with the offset in effect at that instant (D8).
/// Impossible dates (February 30), hours above 23, minutes or seconds above 59 and bad
/// zones give `None`.
pub fn parse_time(s: &[u8]) -> Option<Time> {
    parse_time_impl(s, false)
}

/// The CSV/LTSV time inference rule (D63): like [`parse_time`], but every year must
/// have exactly four digits, so the `Mon D` form (which has no year) is not accepted.
/// The whole field must match (no surrounding whitespace).
pub fn parse_time_strict_year4(s: &[u8]) -> Option<Time> {
    parse_time_impl(s, true)
}

// ----- calendar helpers ---------------------------------------------------------------

/// The offset in which fields are computed: the display offset, UTC for date-only.
fn display_offset(t: &Time) -> i32 {
    match t.offset {
        TimeOffset::DateOnly => 0,
        TimeOffset::Seconds(o) => o,
    }
}

/// Calendar fields of `t` in its display offset.
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    sod: i64,
    days: i64,
}

fn fields(t: &Time) -> Fields {
    let local = t.secs + display_offset(t) as i64;
    let days = local.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Fields {
        year,
        month,
        day,
        sod: local.rem_euclid(86_400),
        days,
    }
}

/// Builds a time from total nanoseconds since the epoch, checking the range.
fn from_nanos(total: i128, offset: TimeOffset) -> Option<Time> {
    let secs = total.div_euclid(NANOS_PER_SEC);
    let nanos = total.rem_euclid(NANOS_PER_SEC) as u32;
    let secs = i64::try_from(secs).ok()?;
    if !in_range(secs) {
        return None;
    }
    Some(Time {
        secs,
        nanos,
        offset,
    })
}

/// The instant `n` seconds after the epoch (`n` may be fractional), rounded to the
/// nearest nanosecond.
fn nanos_of_number(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128 * NANOS_PER_SEC),
        Value::Float(f) if f.is_finite() => {
            let whole = f.floor();
            // Keep the whole seconds exact and round only the fraction.
            if whole.abs() > 1e15 {
                return None;
            }
            let frac = ((f - whole) * 1e9).round() as i128;
            Some(whole as i128 * NANOS_PER_SEC + frac)
        }
        _ => None,
    }
}

fn time_arg<'a>(a: &Args<'a>, i: usize) -> Result<&'a Time, RuntimeError> {
    match a.value(i)? {
        Value::Time(t) => Ok(t),
        _ => Err(a.error(i, "time required")),
    }
}

fn zone_arg(a: &Args, i: usize) -> Result<i32, RuntimeError> {
    let s = a.bytes(i)?;
    parse_zone(s).ok_or_else(|| {
        a.error(
            i,
            &format!("invalid time zone {:?}", String::from_utf8_lossy(s)),
        )
    })
}

fn out_of_range(name: &str) -> RuntimeError {
    RuntimeError::new(format!("{name}: time out of range"))
}

// ----- now and time() -----------------------------------------------------------------

fn now(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("now", vals);
    a.arity(0, 1)?;
    let total = jiff::Timestamp::now().as_nanosecond();
    let t = from_nanos(total, TimeOffset::Seconds(0)).ok_or_else(|| out_of_range("now"))?;
    let offset = if a.is_empty() {
        local_offset_at(t.secs)
    } else {
        zone_arg(&a, 0)?
    };
    Ok(Value::time(Time {
        offset: TimeOffset::Seconds(offset),
        ..t
    }))
}

fn time(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("time", vals);
    if vals.is_empty() || vals.len() == 2 || vals.len() > 8 {
        return Err(RuntimeError::new(format!(
            "time: wrong number of arguments (given {}, expected 1 or 3..8)",
            vals.len()
        )));
    }
    if vals.len() == 1 {
        return match &vals[0] {
            Value::Str(s) => match parse_time(s.as_bytes()) {
                Some(t) => Ok(Value::time(t)),
                None => Err(a.error(
                    0,
                    &format!(
                        "bad time format {:?}",
                        String::from_utf8_lossy(s.as_bytes())
                    ),
                )),
            },
            v @ (Value::Int(_) | Value::Float(_)) => {
                let t = nanos_of_number(v)
                    .and_then(|n| from_nanos(n, TimeOffset::Seconds(0)))
                    .ok_or_else(|| a.error(0, "time out of range"))?;
                Ok(Value::time(Time {
                    offset: TimeOffset::Seconds(local_offset_at(t.secs)),
                    ..t
                }))
            }
            Value::Time(t) => Ok(Value::Time(t.clone())),
            _ => Err(a.error(0, "string or number required")),
        };
    }
    let mut f = [0i64; 7];
    for (i, slot) in f.iter_mut().enumerate().take(vals.len().min(7)) {
        *slot = a.int(i)?;
    }
    let invalid = |i: usize| a.error(i, "invalid date/time");
    let [y, m, d, h, mi, s, ns] = f;
    if !(-9999..=9999).contains(&y) {
        return Err(invalid(0));
    }
    if !(1..=12).contains(&m) {
        return Err(invalid(1));
    }
    if d < 1 || d > days_in_month(y, m as u32) as i64 {
        return Err(invalid(2));
    }
    let days = days_from_civil(y, m as u32, d as u32);
    if vals.len() == 3 {
        return Ok(Value::time(Time {
            secs: days * 86_400,
            nanos: 0,
            offset: TimeOffset::DateOnly,
        }));
    }
    for (i, v, max) in [(3, h, 23), (4, mi, 59), (5, s, 59), (6, ns, 999_999_999)] {
        if !(0..=max).contains(&v) {
            return Err(invalid(i));
        }
    }
    let civil = days * 86_400 + h * 3600 + mi * 60 + s;
    let (secs, offset) = if vals.len() == 8 {
        let offset = zone_arg(&a, 7)?;
        (civil - offset as i64, offset)
    } else {
        local_to_instant(civil).ok_or_else(|| invalid(0))?
    };
    if !in_range(secs) {
        return Err(invalid(0));
    }
    Ok(Value::time(Time {
        secs,
        nanos: ns as u32,
        offset: TimeOffset::Seconds(offset),
    }))
}

// ----- the time namespace -------------------------------------------------------------

fn plus(name: &str, vals: &[Value], negate: bool) -> Result<Value, RuntimeError> {
    let a = Args::method(name, vals);
    a.arity(2, 2)?;
    let t = time_arg(&a, 0)?;
    let rhs = a.value(1)?;
    if let (true, Value::Time(u)) = (negate, rhs) {
        // time - time: exact nanosecond difference, converted to float once.
        let diff = t.total_nanos() - u.total_nanos();
        let secs = if diff % NANOS_PER_SEC == 0 {
            (diff / NANOS_PER_SEC) as f64
        } else {
            diff as f64 / 1e9
        };
        return Ok(Value::Float(secs));
    }
    let n = match rhs {
        Value::Int(_) | Value::Float(_) => nanos_of_number(rhs).ok_or_else(|| {
            if rhs.as_f64().is_some_and(f64::is_finite) {
                out_of_range(name)
            } else {
                a.error(1, "finite number required")
            }
        })?,
        _ if negate => return Err(a.error(1, "number or time required")),
        _ => return Err(a.error(1, "number required")),
    };
    let total = if negate {
        t.total_nanos() - n
    } else {
        t.total_nanos() + n
    };
    from_nanos(total, t.offset)
        .map(Value::time)
        .ok_or_else(|| out_of_range(name))
}

fn compare_op(
    name: &'static str,
    test: fn(Ordering) -> bool,
) -> impl Fn(&mut crate::ext::CallContext<'_>, &[Value]) -> Result<Value, RuntimeError> {
    move |_cx, vals| {
        let a = Args::method(name, vals);
        a.arity(2, 2)?;
        let (t, u) = (time_arg(&a, 0)?, time_arg(&a, 1)?);
        Ok(Value::Bool(test(t.total_nanos().cmp(&u.total_nanos()))))
    }
}

fn field_method(r: &Registry, name: &'static str, get: fn(&Time) -> i64) {
    r.namespace("time").define_method(name, move |_cx, vals| {
        let a = Args::method(name, vals);
        a.arity(1, 1)?;
        Ok(Value::Int(get(time_arg(&a, 0)?)))
    });
}

pub fn register(r: &Registry) {
    r.define_fn("now", |_cx, vals| now(vals));
    r.define_fn("time", |_cx, vals| time(vals));

    let ns = r.namespace("time");
    ns.define_method("+", |_cx, vals| plus("+", vals, false));
    ns.define_method("-", |_cx, vals| plus("-", vals, true));
    ns.define_method("<", compare_op("<", Ordering::is_lt));
    ns.define_method("<=", compare_op("<=", Ordering::is_le));
    ns.define_method(">", compare_op(">", Ordering::is_gt));
    ns.define_method(">=", compare_op(">=", Ordering::is_ge));
    ns.define_method("string", |_cx, vals| {
        let a = Args::method("string", vals);
        a.arity(1, 2)?;
        let t = time_arg(&a, 0)?;
        let tz = if vals.len() == 2 {
            Some(zone_arg(&a, 1)?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(32);
        write_time(&mut out, t, tz);
        Ok(Value::bytes(&out))
    });
    ns.define_method("number", |_cx, vals| {
        let a = Args::method("number", vals);
        a.arity(1, 1)?;
        let t = time_arg(&a, 0)?;
        Ok(if t.nanos == 0 {
            Value::Int(t.secs)
        } else {
            Value::Float(t.secs as f64 + t.nanos as f64 / 1e9)
        })
    });
    field_method(r, "year", |t| fields(t).year);
    field_method(r, "month", |t| fields(t).month as i64);
    field_method(r, "day", |t| fields(t).day as i64);
    field_method(r, "hour", |t| fields(t).sod / 3600);
    field_method(r, "minute", |t| fields(t).sod / 60 % 60);
    field_method(r, "second", |t| fields(t).sod % 60);
    field_method(r, "nanosecond", |t| t.nanos as i64);
    // 1970-01-01 was a Thursday (4).
    field_method(r, "weekday", |t| (fields(t).days + 4).rem_euclid(7));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Option<(i64, u32, TimeOffset)> {
        parse_time(s.as_bytes()).map(|t| (t.secs, t.nanos, t.offset))
    }

    fn text(t: &Time) -> String {
        let mut out = Vec::new();
        write_time(&mut out, t, None);
        String::from_utf8(out).unwrap()
    }

    fn show(s: &str) -> Option<String> {
        parse_time(s.as_bytes()).map(|t| text(&t))
    }

    #[test]
    fn zones() {
        assert_eq!(parse_zone(b"Z"), Some(0));
        assert_eq!(parse_zone(b"+09:00"), Some(32_400));
        assert_eq!(parse_zone(b"-0530"), Some(-19_800));
        assert_eq!(parse_zone(b"+9"), Some(32_400));
        assert_eq!(parse_zone(b"-14"), Some(-50_400));
        assert_eq!(parse_zone(b"+3:30"), Some(12_600));
        assert_eq!(parse_zone(b"+15"), None);
        assert_eq!(parse_zone(b"+01:60"), None);
        assert_eq!(parse_zone(b"+123"), None);
        assert_eq!(parse_zone(b"Zulu"), None);
        assert_eq!(parse_zone(b""), None);
        assert_eq!(parse_zone(b"+"), None);
        assert_eq!(parse_zone(b"+09:0"), None);
    }

    #[test]
    fn date_forms() {
        let aug1 = Some((1_438_387_200, 0, TimeOffset::DateOnly));
        assert_eq!(utc("2015.08.01"), aug1);
        assert_eq!(utc("2015.8.1"), aug1);
        assert_eq!(utc("2015-08-01"), aug1);
        assert_eq!(utc("2015/08/01"), aug1);
        assert_eq!(utc("Aug 1 2015"), aug1);
        assert_eq!(utc("aug  01  2015"), aug1);
        assert_eq!(utc("20150801"), None);
        assert_eq!(utc("2015.08-01"), None);
        assert_eq!(utc("2015.02.29"), None);
        assert_eq!(utc("2016.02.29").map(|t| t.2), Some(TimeOffset::DateOnly));
        assert_eq!(utc("2015.13.01"), None);
        assert_eq!(utc("2015.00.01"), None);
        assert_eq!(utc("2015.01.00"), None);
        assert_eq!(utc(" 2015.08.01"), None);
        assert_eq!(utc("2015.08.01 "), None);
        assert_eq!(utc(""), None);
        assert_eq!(utc("Augx 1 2015"), None);
    }

    #[test]
    fn time_forms() {
        assert_eq!(
            show("2015-08-01T12:00:00Z").as_deref(),
            Some("2015.08.01T12:00:00Z")
        );
        assert_eq!(
            show("2015/08/01 10:30Z").as_deref(),
            Some("2015.08.01T10:30:00Z")
        );
        assert_eq!(
            show("2015/08/01   10:30Z").as_deref(),
            Some("2015.08.01T10:30:00Z")
        );
        assert_eq!(
            show("20150801T103000Z").as_deref(),
            Some("2015.08.01T10:30:00Z")
        );
        assert_eq!(
            show("20150801 103000+09").as_deref(),
            Some("2015.08.01T10:30:00+09:00")
        );
        assert_eq!(
            show("2015.8.1T1:2:3.5-0130").as_deref(),
            Some("2015.08.01T01:02:03.500-01:30")
        );
        assert_eq!(
            show("Aug 1 2015 12:00Z").as_deref(),
            Some("2015.08.01T12:00:00Z")
        );
        assert_eq!(
            show("2015.08.01T00:00:00.1234567899Z").as_deref(),
            Some("2015.08.01T00:00:00.123456789Z")
        );
        assert_eq!(
            show("2015.08.01T00:00:00.000500Z").as_deref(),
            Some("2015.08.01T00:00:00.000500Z")
        );
        assert_eq!(show("2015.08.01T24:00Z"), None);
        assert_eq!(show("2015.08.01T23:60Z"), None);
        assert_eq!(show("2015.08.01T23:59:60Z"), None);
        assert_eq!(show("2015.08.01T10Z"), None);
        assert_eq!(show("2015.08.01T1030Z"), None);
        assert_eq!(show("2015.08.01T10:30:Z"), None);
        assert_eq!(show("2015.08.01T10:30.Z"), None);
        assert_eq!(show("2015.08.01T10:30+15:00"), None);
        assert_eq!(show("2015.08.01T10:30Zjunk"), None);
        assert_eq!(show("2015.08.01X10:30Z"), None);
        assert_eq!(show("2015.08.01T"), None);
    }

    #[test]
    fn month_day_forms() {
        // "Apr 14 20:00" is April 14 of the current year at 20:00, not year 20.
        let t = parse_time(b"Apr 14 20:00Z").unwrap();
        let f = fields(&t);
        assert_eq!(
            (f.year, f.month, f.day, f.sod),
            (current_local_year(), 4, 14, 72_000)
        );
        assert_eq!(show("Apr 14 20").as_deref(), Some("0020.04.14"));
        // The strict (CSV) rule wants a four-digit year.
        assert!(parse_time_strict_year4(b"Apr 14 20:00Z").is_none());
        assert!(parse_time_strict_year4(b"Apr 14 20").is_none());
        assert!(parse_time_strict_year4(b"Apr 14 2015").is_some());
        assert!(parse_time_strict_year4(b"15.8.1").is_none());
        assert!(parse_time(b"15.8.1").is_some());
        assert!(parse_time_strict_year4(b"2015-08-01 10:00:00Z").is_some());
        assert!(parse_time_strict_year4(b"127.0.0.1").is_none());
        assert!(parse_time_strict_year4(b"1.2.3").is_none());
    }

    #[test]
    fn weekday_and_fields() {
        let t = parse_time(b"2015.08.01T12:00:00+09:00").unwrap();
        let f = fields(&t);
        assert_eq!((f.year, f.month, f.day, f.sod / 3600), (2015, 8, 1, 12));
        assert_eq!((f.days + 4).rem_euclid(7), 6);
        let before_epoch = Time {
            secs: -1,
            nanos: 0,
            offset: TimeOffset::Seconds(0),
        };
        let f = fields(&before_epoch);
        assert_eq!((f.year, f.month, f.day, f.sod), (1969, 12, 31, 86_399));
        assert_eq!((f.days + 4).rem_euclid(7), 3);
    }

    #[test]
    fn numbers_to_nanos() {
        assert_eq!(nanos_of_number(&Value::Float(1.25)), Some(1_250_000_000));
        assert_eq!(nanos_of_number(&Value::Float(-0.5)), Some(-500_000_000));
        assert_eq!(nanos_of_number(&Value::Int(-3)), Some(-3_000_000_000));
        assert_eq!(nanos_of_number(&Value::Float(f64::NAN)), None);
        assert!(from_nanos(i128::from(i64::MAX) * NANOS_PER_SEC, TimeOffset::DateOnly).is_none());
    }
}
