//! `number()` and the conversion of strings and times to numbers (spec 6.8, D58).
//!
//! The arithmetic and comparison operators of the `number` namespace live in
//! `core.rs`; the spec lists no other `number` methods.

use crate::eval::print;
use crate::ext::{Args, Registry, RuntimeError, Time, Value};

/// ASCII whitespace as the library understands it (D57): space, tab, newline,
/// carriage return, vertical tab, form feed.
#[inline]
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Parses the text of a number (D58): optional surrounding whitespace, an optional sign,
/// then either decimal digits with an optional fraction (either side of the `.` may be
/// empty, not both) and an optional exponent, or a `0x`/`0o` integer. The result is an
/// integer when there is neither fraction nor exponent and the value fits 64 bits,
/// otherwise a float. `None` if the text is not a number (`inf` and `nan` are not).
pub fn parse_number(s: &[u8]) -> Option<Value> {
    let mut start = 0;
    let mut end = s.len();
    while start < end && is_space(s[start]) {
        start += 1;
    }
    while end > start && is_space(s[end - 1]) {
        end -= 1;
    }
    let t = &s[start..end];
    let (neg, body) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if body.len() > 2 && body[0] == b'0' && matches!(body[1], b'x' | b'o') {
        let radix = if body[1] == b'x' { 16 } else { 8 };
        return parse_radix(&body[2..], radix, neg);
    }
    // Validate the decimal syntax; Rust's parser is lenient (`inf`, `nan`).
    let digits = |from: usize| {
        body[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let int_len = digits(0);
    let mut i = int_len;
    let mut frac_len = 0;
    let mut is_float = false;
    if body.get(i) == Some(&b'.') {
        is_float = true;
        frac_len = digits(i + 1);
        i += 1 + frac_len;
    }
    if int_len == 0 && frac_len == 0 {
        return None;
    }
    if matches!(body.get(i), Some(b'e' | b'E')) {
        is_float = true;
        let mut j = i + 1;
        if matches!(body.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_len = digits(j);
        if exp_len == 0 {
            return None;
        }
        i = j + exp_len;
    }
    if i != body.len() {
        return None;
    }
    // The whole of `t` is ASCII now.
    let text = std::str::from_utf8(t).ok()?;
    if !is_float {
        if let Ok(n) = text.parse::<i64>() {
            return Some(Value::Int(n));
        }
    }
    text.parse::<f64>().ok().map(Value::Float)
}

/// A `0x`/`0o` body: an integer, or a float when it does not fit 64 bits.
fn parse_radix(d: &[u8], radix: u32, neg: bool) -> Option<Value> {
    if d.is_empty() {
        return None;
    }
    let mut acc: u128 = 0;
    let mut big = false;
    let mut f = 0.0f64;
    for &b in d {
        let v = (b as char).to_digit(radix)?;
        if !big {
            acc = acc * radix as u128 + v as u128;
            if acc > u64::MAX as u128 {
                big = true;
                f = acc as f64;
            }
        } else {
            f = f * radix as f64 + v as f64;
        }
    }
    if !big {
        if neg {
            if acc <= i64::MAX as u128 + 1 {
                return Some(Value::Int((acc as i128).wrapping_neg() as i64));
            }
        } else if acc <= i64::MAX as u128 {
            return Some(Value::Int(acc as i64));
        }
        f = acc as f64;
    }
    Some(Value::Float(if neg { -f } else { f }))
}

/// A time's epoch seconds: an integer without a sub-second part, else a float.
pub fn time_number(t: &Time) -> Value {
    if t.nanos == 0 {
        Value::Int(t.secs)
    } else {
        Value::Float(t.secs as f64 + t.nanos as f64 / 1e9)
    }
}

/// `number(v)` for function `name` (the global and `s.number()`): always converts or
/// fails (D58).
pub fn to_number(name: &str, vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new(name, vals);
    a.arity(1, 1)?;
    match &vals[0] {
        v @ (Value::Int(_) | Value::Float(_)) => Ok(v.clone()),
        Value::Str(s) => parse_number(s.as_bytes()).ok_or_else(|| {
            let mut q = Vec::new();
            print::write_quoted(&mut q, s.as_bytes());
            RuntimeError::new(format!(
                "{name}: invalid string for number: {}",
                String::from_utf8_lossy(&q)
            ))
        }),
        Value::Time(t) => Ok(time_number(t)),
        _ => Err(a.error(0, "number required")),
    }
}

pub fn register(r: &Registry) {
    r.define_fn("number", |_cx, vals| to_number("number", vals));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<String> {
        parse_number(s.as_bytes()).map(|v| match v {
            Value::Int(i) => format!("i{i}"),
            Value::Float(f) => format!("f{f}"),
            _ => unreachable!(),
        })
    }

    #[test]
    fn decimal_forms() {
        assert_eq!(p("12").as_deref(), Some("i12"));
        assert_eq!(p(" -3 ").as_deref(), Some("i-3"));
        assert_eq!(p("+4").as_deref(), Some("i4"));
        assert_eq!(p("1.5").as_deref(), Some("f1.5"));
        assert_eq!(p("3.").as_deref(), Some("f3"));
        assert_eq!(p(".5").as_deref(), Some("f0.5"));
        assert_eq!(p("1e3").as_deref(), Some("f1000"));
        assert_eq!(p("2.5E-4").as_deref(), Some("f0.00025"));
        assert_eq!(p("\t7\n").as_deref(), Some("i7"));
        assert_eq!(
            p("9223372036854775807").as_deref(),
            Some("i9223372036854775807")
        );
        assert_eq!(
            p("-9223372036854775808").as_deref(),
            Some("i-9223372036854775808")
        );
        assert_eq!(
            p("9223372036854775808").as_deref(),
            Some("f9223372036854776000")
        );
        assert_eq!(p("007").as_deref(), Some("i7"));
    }

    #[test]
    fn radix_forms() {
        assert_eq!(p("0x1f").as_deref(), Some("i31"));
        assert_eq!(p("0xFF").as_deref(), Some("i255"));
        assert_eq!(p("0o17").as_deref(), Some("i15"));
        assert_eq!(p("-0x10").as_deref(), Some("i-16"));
        assert_eq!(
            p("-0x8000000000000000").as_deref(),
            Some("i-9223372036854775808")
        );
        assert_eq!(
            p("0x8000000000000000").as_deref(),
            Some("f9223372036854776000")
        );
        assert_eq!(p("0x").as_deref(), None);
        assert_eq!(p("0o8").as_deref(), None);
        assert_eq!(p("0x1g").as_deref(), None);
    }

    #[test]
    fn rejects() {
        for s in [
            "", " ", ".", "-", "+", "1e", "1e+", "e3", "inf", "nan", "-inf", "1 2", "12a", "1..2",
            "--1", "0b1", "1_000", "١",
        ] {
            assert_eq!(p(s), None, "{s:?}");
        }
    }
}
