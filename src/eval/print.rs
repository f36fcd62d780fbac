//! How values are printed (spec 4.12). On the hot path of every `| stdout`: all
//! functions write into a caller's reusable buffer.

use super::error::RuntimeError;
use super::func::Func;
use super::symbol::Sym;
use super::value::{Time, TimeOffset, Value};
use crate::ext::CallContext;

/// Appends a float in C's `%.14g` format.
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"nan");
        return;
    }
    if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"inf" } else { b"-inf" });
        return;
    }
    if f == 0.0 {
        out.extend_from_slice(if f.is_sign_negative() { b"-0" } else { b"0" });
        return;
    }
    // Round to 14 significant digits once; lay the digits out from that.
    let sci = format!("{:.13e}", f);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: Vec<u8> = mant.bytes().filter(|b| b.is_ascii_digit()).collect();
    if neg {
        out.push(b'-');
    }
    if !(-4..14).contains(&exp) {
        out.push(digits[0]);
        let frac = trim_zeros(&digits[1..]);
        if !frac.is_empty() {
            out.push(b'.');
            out.extend_from_slice(frac);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(itoa::Buffer::new().format(e).as_bytes());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        out.extend_from_slice(&digits[..int_len]);
        let frac = trim_zeros(&digits[int_len..]);
        if !frac.is_empty() {
            out.push(b'.');
            out.extend_from_slice(frac);
        }
    } else {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exp - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(trim_zeros(&digits));
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let mut end = d.len();
    while end > 0 && d[end - 1] == b'0' {
        end -= 1;
    }
    &d[..end]
}

pub fn write_int(out: &mut Vec<u8>, i: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Appends a string in its inspected (quoted, escaped) form (4.12 item 7, D29).
pub fn write_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            27 => out.extend_from_slice(b"\\e"),
            0 => out.extend_from_slice(b"\\0"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 32 || b == 127 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

fn is_bare_name(s: &[u8]) -> bool {
    !s.is_empty()
        && (s[0].is_ascii_alphabetic() || s[0] == b'_')
        && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Appends the text form of a time (6.11, D61).
pub fn write_time(out: &mut Vec<u8>, t: &Time, tz: Option<i32>) {
    use std::io::Write;
    let (offset, date_only) = match (tz, t.offset) {
        (Some(o), _) => (o, false),
        (None, TimeOffset::DateOnly) => (0, true),
        (None, TimeOffset::Seconds(o)) => (o, false),
    };
    let local = t.secs + offset as i64;
    let days = local.div_euclid(86_400);
    let sod = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if date_only && sod == 0 && t.nanos == 0 {
        let _ = write!(out, "{y:04}.{m:02}.{d:02}");
        return;
    }
    let _ = write!(
        out,
        "{y:04}.{m:02}.{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if t.nanos != 0 {
        if t.nanos.is_multiple_of(1_000_000) {
            let _ = write!(out, ".{:03}", t.nanos / 1_000_000);
        } else if t.nanos.is_multiple_of(1_000) {
            let _ = write!(out, ".{:06}", t.nanos / 1_000);
        } else {
            let _ = write!(out, ".{:09}", t.nanos);
        }
    }
    if offset == 0 {
        out.push(b'Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let a = offset.unsigned_abs();
        let _ = write!(out, "{sign}{:02}:{:02}", a / 3600, a / 60 % 60);
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Printed form of values that need no callbacks (no user `string` methods): used
/// in messages and `Debug`.
pub fn inspect_plain(v: &Value) -> String {
    let mut out = Vec::new();
    write_plain(&mut out, v, true, 0);
    String::from_utf8_lossy(&out).into_owned()
}

fn write_plain(out: &mut Vec<u8>, v: &Value, quoted: bool, depth: usize) {
    match v {
        Value::Str(s) if quoted => write_quoted(out, s.as_bytes()),
        Value::Array(a) if depth < 64 => {
            out.push(b'[');
            if let Some(c) = &a.class {
                out.push(b'@');
                out.extend_from_slice(c.name.as_bytes());
                if !a.items.is_empty() {
                    out.push(b' ');
                }
            }
            for (i, item) in a.items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_label(out, a, i);
                write_plain(out, item, true, depth + 1);
            }
            out.push(b']');
        }
        Value::Array(_) => out.extend_from_slice(b"[...]"),
        other => write_scalar(out, other),
    }
}

fn write_label(out: &mut Vec<u8>, a: &super::value::Array, i: usize) {
    if let Some(Some(name)) = a.fields.as_ref().and_then(|f| f.get(i)) {
        if is_bare_name(name.as_bytes()) {
            out.extend_from_slice(name.as_bytes());
        } else {
            write_quoted(out, name.as_bytes());
        }
        out.push(b':');
    }
}

/// Values whose printed form never involves a user method.
fn write_scalar(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        Value::Time(t) => write_time(out, t, None),
        Value::Func(f) => match &**f {
            Func::Closure { .. } => out.extend_from_slice(b"<lambda>"),
            Func::Native(n) => {
                out.extend_from_slice(b"<cfunc:");
                out.extend_from_slice(n.name.as_bytes());
                out.push(b'>');
            }
            Func::Generic { name, .. } => {
                out.extend_from_slice(b"<genfunc:&");
                out.extend_from_slice(name.name().as_bytes());
                out.push(b'>');
            }
        },
        Value::Stream(_) => out.extend_from_slice(b"<stream>"),
        Value::Io(io) => out.extend_from_slice(io.describe().as_bytes()),
        Value::Native(n) => out.extend_from_slice(n.0.display().as_bytes()),
        Value::Array(_) => write_plain(out, v, false, 0),
    }
}

impl CallContext<'_> {
    /// Appends the printed form of `v` (4.12), calling `string` methods of
    /// namespaces that define one.
    pub fn write_display(&mut self, out: &mut Vec<u8>, v: &Value) -> Result<(), RuntimeError> {
        match v {
            Value::Str(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            Value::Nil | Value::Bool(_) | Value::Func(_) | Value::Stream(_) | Value::Io(_) => {
                write_scalar(out, v);
                Ok(())
            }
            _ => {
                if self.custom_string(out, v)? {
                    return Ok(());
                }
                match v {
                    Value::Array(_) => self.write_array(out, v),
                    _ => {
                        write_scalar(out, v);
                        Ok(())
                    }
                }
            }
        }
    }

    /// 4.12 step 1: a `string` binding in the value's own namespace.
    fn custom_string(&mut self, out: &mut Vec<u8>, v: &Value) -> Result<bool, RuntimeError> {
        // The builtin namespaces are asked without cloning their `Arc` (a reference
        // count every worker would write for every number printed).
        let g = self.globals();
        let builtin = match v {
            Value::Int(_) | Value::Float(_) => Some(&g.ns_number),
            Value::Str(_) => Some(&g.ns_string),
            Value::Time(_) => Some(&g.ns_time),
            _ => None,
        };
        if builtin.is_some_and(|ns| !ns.has_string()) {
            return Ok(false);
        }
        let Some(ns) = self.namespace_of(v) else {
            return Ok(false);
        };
        if !ns.has_string() {
            return Ok(false);
        }
        let Some(f) = ns.get(Sym::new("string")) else {
            return Ok(false);
        };
        match self.call_value(&f, std::slice::from_ref(v)) {
            Ok(Value::Str(s)) => {
                out.extend_from_slice(s.as_bytes());
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.message() == "stack level too deep" || e.is_impure() => Err(e),
            Err(_) => Ok(false),
        }
    }

    fn write_array(&mut self, out: &mut Vec<u8>, v: &Value) -> Result<(), RuntimeError> {
        let Value::Array(a) = v else { return Ok(()) };
        self.enter_print()?;
        out.push(b'[');
        if let Some(c) = &a.class {
            out.push(b'@');
            out.extend_from_slice(c.name.as_bytes());
            if !a.items.is_empty() {
                out.push(b' ');
            }
        }
        let mut r = Ok(());
        for (i, item) in a.items.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            write_label(out, a, i);
            r = self.write_inspect(out, item);
            if r.is_err() {
                break;
            }
        }
        out.push(b']');
        self.depth -= 1;
        r
    }

    /// The inspected form of an element (strings quoted).
    pub fn write_inspect(&mut self, out: &mut Vec<u8>, v: &Value) -> Result<(), RuntimeError> {
        match v {
            Value::Str(s) => {
                write_quoted(out, s.as_bytes());
                Ok(())
            }
            _ => self.write_display(out, v),
        }
    }

    fn enter_print(&mut self) -> Result<(), RuntimeError> {
        self.depth += 1;
        if self.depth > super::exec::MAX_CALL_DEPTH
            || stacker::remaining_stack().is_some_and(|r| r < 128 * 1024)
        {
            self.depth -= 1;
            return Err(RuntimeError::new("stack level too deep"));
        }
        Ok(())
    }

    /// The printed form as a new string value.
    pub fn to_display_string(&mut self, v: &Value) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::new();
        self.write_display(&mut out, v)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(f: f64) -> String {
        let mut v = Vec::new();
        write_float(&mut v, f);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn float_format_matches_printf_g14() {
        assert_eq!(g(3.0), "3");
        assert_eq!(g(0.1 + 0.2), "0.3");
        assert_eq!(g(1.0 / 3.0), "0.33333333333333");
        assert_eq!(g(123456789012345.0), "1.2345678901234e+14");
        assert_eq!(g(12345678901234.0), "12345678901234");
        assert_eq!(g(1e20), "1e+20");
        assert_eq!(g(0.000001), "1e-06");
        assert_eq!(g(0.0001), "0.0001");
        assert_eq!(g(-0.0), "-0");
        assert_eq!(g(std::f64::consts::PI), "3.1415926535898");
        assert_eq!(g(std::f64::consts::E), "2.718281828459");
        assert_eq!(g(1e100), "1e+100");
        assert_eq!(g(2.5e-300), "2.5e-300");
        assert_eq!(g(1.5e-5), "1.5e-05");
        assert_eq!(g(100.0), "100");
        assert_eq!(g(f64::NAN), "nan");
        assert_eq!(g(f64::NEG_INFINITY), "-inf");
        assert_eq!(g(0.30000000000000004), "0.3");
        assert_eq!(g(99999999999999.9), "1e+14");
    }

    #[test]
    fn civil_round_trip() {
        for d in [-1000000, -1, 0, 1, 16648, 20000, 1000000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(civil_from_days(16648), (2015, 8, 1));
    }
}
