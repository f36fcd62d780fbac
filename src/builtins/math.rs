//! Mathematics (spec 6.10, D26, D60): constants, float functions, rounding, `gcd`,
//! `frexp`/`ldexp`. All are globals; `5.floor()` reaches them by dispatch fallback.

use crate::ext::{Args, Registry, RuntimeError, Value};

/// Registers a one-argument float function.
fn unary(r: &Registry, name: &'static str, f: fn(f64) -> f64) {
    r.define_fn(name, move |_cx, vals| {
        let a = Args::new(name, vals);
        a.arity(1, 1)?;
        Ok(Value::Float(f(a.num(0)?)))
    });
}

/// Registers a two-argument float function.
fn binary(r: &Registry, name: &'static str, f: fn(f64, f64) -> f64) {
    r.define_fn(name, move |_cx, vals| {
        let a = Args::new(name, vals);
        a.arity(2, 2)?;
        Ok(Value::Float(f(a.num(0)?, a.num(1)?)))
    });
}

/// Exact powers of ten that doubles represent exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

fn pow10(n: u32) -> f64 {
    match POW10.get(n as usize) {
        Some(p) => *p,
        None => 10f64.powi(n.min(400) as i32),
    }
}

/// `op` applied at `d` decimal places: `op(x * 10^d) / 10^d` (6.10).
fn at_places(x: f64, d: i64, op: fn(f64) -> f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    if d >= 0 {
        let p = pow10(d.min(400) as u32);
        let y = x * p;
        if !y.is_finite() {
            // |x| is so large that it has no digits at `d` places: already exact.
            return x;
        }
        op(y) / p
    } else {
        let p = pow10(d.unsigned_abs().min(400) as u32);
        let q = op(x / p);
        if q == 0.0 {
            q
        } else {
            q * p
        }
    }
}

/// The one-argument result of a rounding function (D60): an integer unless `x` is not
/// finite or the rounded value is outside the 64-bit range.
fn rounded_to_value(r: f64) -> Value {
    // -2^63 <= r < 2^63 (both bounds are exact doubles).
    if r.is_finite() && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
        Value::Int(r as i64)
    } else {
        Value::Float(r)
    }
}

fn rounding(r: &Registry, name: &'static str, op: fn(f64) -> f64) {
    r.define_fn(name, move |_cx, vals| {
        let a = Args::new(name, vals);
        a.arity(1, 2)?;
        let x = a.number(0)?;
        if vals.len() == 2 {
            let d = a.int(1)?;
            return Ok(Value::Float(at_places(x.as_f64().unwrap_or(0.0), d, op)));
        }
        Ok(match x {
            Value::Int(i) => Value::Int(*i),
            _ => rounded_to_value(op(x.as_f64().unwrap_or(0.0))),
        })
    });
}

/// Euclid's algorithm on magnitudes (D60: non-negative).
fn gcd(a: i64, b: i64) -> u64 {
    let (mut x, mut y) = (a.unsigned_abs(), b.unsigned_abs());
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

fn gcd_fn(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("gcd", vals);
    a.arity(2, 2)?;
    let g = gcd(a.int(0)?, a.int(1)?);
    Ok(match i64::try_from(g) {
        Ok(g) => Value::Int(g),
        Err(_) => Value::Float(g as f64),
    })
}

fn frexp_fn(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("frexp", vals);
    a.arity(1, 2)?;
    let x = a.num(0)?;
    // The second argument is accepted for compatibility with the original documentation
    // and ignored (D60), but it must still be a number.
    if vals.len() == 2 {
        a.num(1)?;
    }
    let (m, e) = if x.is_finite() {
        libm::frexp(x)
    } else {
        (x, 0)
    };
    Ok(Value::array(vec![Value::Float(m), Value::Int(e as i64)]))
}

fn ldexp_fn(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("ldexp", vals);
    a.arity(2, 2)?;
    let x = a.num(0)?;
    let e = a.int(1)?.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    Ok(Value::Float(libm::ldexp(x, e)))
}

pub fn register(r: &Registry) {
    r.define_global("PI", Value::Float(std::f64::consts::PI));
    r.define_global("E", Value::Float(std::f64::consts::E));

    unary(r, "sqrt", f64::sqrt);
    unary(r, "cbrt", f64::cbrt);
    unary(r, "exp", f64::exp);
    unary(r, "log", f64::ln);
    unary(r, "log2", f64::log2);
    unary(r, "log10", f64::log10);
    unary(r, "sin", f64::sin);
    unary(r, "cos", f64::cos);
    unary(r, "tan", f64::tan);
    unary(r, "asin", f64::asin);
    unary(r, "acos", f64::acos);
    unary(r, "atan", f64::atan);
    unary(r, "sinh", f64::sinh);
    unary(r, "cosh", f64::cosh);
    unary(r, "tanh", f64::tanh);
    unary(r, "asinh", libm::asinh);
    unary(r, "acosh", libm::acosh);
    unary(r, "atanh", libm::atanh);
    unary(r, "erfc", libm::erfc);
    unary(r, "fabs", f64::abs);

    binary(r, "pow", f64::powf);
    binary(r, "hypot", f64::hypot);

    rounding(r, "round", f64::round);
    rounding(r, "ceil", f64::ceil);
    rounding(r, "floor", f64::floor);
    rounding(r, "trunc", f64::trunc);
    rounding(r, "int", f64::trunc);

    r.define_fn("gcd", |_cx, vals| gcd_fn(vals));
    r.define_fn("frexp", |_cx, vals| frexp_fn(vals));
    r.define_fn("ldexp", |_cx, vals| ldexp_fn(vals));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places() {
        assert_eq!(at_places(1.23456, 2, f64::round), 1.23);
        assert_eq!(at_places(1234.0, -2, f64::round), 1200.0);
        assert_eq!(at_places(2.567, 1, f64::floor), 2.5);
        assert_eq!(at_places(-2.5, 0, f64::round), -3.0);
        assert_eq!(at_places(1e300, 20, f64::round), 1e300);
        assert_eq!(at_places(5.0, -400, f64::round), 0.0);
        assert_eq!(at_places(1.5, 1000, f64::floor), 1.5);
    }

    #[test]
    fn round_range() {
        assert!(matches!(rounded_to_value(3.0), Value::Int(3)));
        assert!(matches!(
            rounded_to_value(-9.223_372_036_854_776e18),
            Value::Int(i64::MIN)
        ));
        assert!(matches!(
            rounded_to_value(9.223_372_036_854_776e18),
            Value::Float(_)
        ));
        assert!(matches!(rounded_to_value(f64::INFINITY), Value::Float(_)));
        assert!(matches!(rounded_to_value(f64::NAN), Value::Float(_)));
    }

    #[test]
    fn gcd_values() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(-4, 6), 2);
        assert_eq!(gcd(0, 0), 0);
        assert_eq!(gcd(0, -5), 5);
        assert_eq!(gcd(i64::MIN, 0), 1u64 << 63);
    }
}
