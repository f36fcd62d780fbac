//! Arithmetic, equality and ordering of values (spec 4.3, 4.9, 4.10).

use std::cmp::Ordering;

use super::error::RuntimeError;
use super::ir::Arith;
use super::print::inspect_plain;
use super::value::Value;

/// A number as arithmetic sees it, for code that computes without making values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    /// The number a value is.
    pub fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    pub fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::Int(i),
            Num::Float(f) => Value::Float(f),
        }
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// [`arith`] of two numbers when the result is a number: exactly what `arith` gives,
/// without values. `None` for an error or a comparison (use `arith`).
#[inline]
pub fn num_arith(op: Arith, a: Num, b: Num) -> Option<Num> {
    use Num::{Float, Int};
    Some(match (op, a, b) {
        (Arith::Add, Int(x), Int(y)) => x.checked_add(y).map_or(Float(x as f64 + y as f64), Int),
        (Arith::Sub, Int(x), Int(y)) => x.checked_sub(y).map_or(Float(x as f64 - y as f64), Int),
        (Arith::Mul, Int(x), Int(y)) => x.checked_mul(y).map_or(Float(x as f64 * y as f64), Int),
        (Arith::Mod, Int(_), Int(0)) => return None,
        (Arith::Mod, Int(x), Int(y)) => Int(x.wrapping_rem(y)),
        (Arith::Pipe, Int(x), Int(y)) => Int(x | y),
        (Arith::Add, x, y) => Float(x.f64() + y.f64()),
        (Arith::Sub, x, y) => Float(x.f64() - y.f64()),
        (Arith::Mul, x, y) => Float(x.f64() * y.f64()),
        (Arith::Div, x, y) => Float(x.f64() / y.f64()),
        (Arith::Mod, x, y) => Float(x.f64() % y.f64()),
        _ => return None,
    })
}

/// `a OP b` for two numbers (D23: integer results, float on overflow).
#[inline]
pub fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, RuntimeError> {
    use Value::{Float, Int};
    Ok(match (op, a, b) {
        (Arith::Add, Int(x), Int(y)) => match x.checked_add(*y) {
            Some(r) => Int(r),
            None => Float(*x as f64 + *y as f64),
        },
        (Arith::Sub, Int(x), Int(y)) => match x.checked_sub(*y) {
            Some(r) => Int(r),
            None => Float(*x as f64 - *y as f64),
        },
        (Arith::Mul, Int(x), Int(y)) => match x.checked_mul(*y) {
            Some(r) => Int(r),
            None => Float(*x as f64 * *y as f64),
        },
        (Arith::Mod, Int(x), Int(y)) => {
            if *y == 0 {
                return Err(RuntimeError::new("divided by 0"));
            }
            // wrapping_rem: i64::MIN % -1 is 0, not an overflow.
            Int(x.wrapping_rem(*y))
        }
        (Arith::Pipe, Int(x), Int(y)) => Int(x | y),
        (Arith::Pipe, _, _) => return Err(type_error(op, a, b)),
        _ => {
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Err(type_error(op, a, b));
            };
            match op {
                Arith::Add => Float(x + y),
                Arith::Sub => Float(x - y),
                Arith::Mul => Float(x * y),
                Arith::Div => Float(x / y),
                Arith::Mod => Float(x % y),
                Arith::Lt => Value::Bool(num_cmp(a, b) == Some(Ordering::Less)),
                Arith::Le => Value::Bool(matches!(
                    num_cmp(a, b),
                    Some(Ordering::Less | Ordering::Equal)
                )),
                Arith::Gt => Value::Bool(num_cmp(a, b) == Some(Ordering::Greater)),
                Arith::Ge => Value::Bool(matches!(
                    num_cmp(a, b),
                    Some(Ordering::Greater | Ordering::Equal)
                )),
                Arith::Pipe => unreachable!(),
            }
        }
    })
}

/// Exact comparison of two numbers (integers compared as integers, so that large
/// values do not collide after conversion to float). `None` if either is NaN.
pub fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Float(y)) => int_float_cmp(*x, *y),
        (Value::Float(x), Value::Int(y)) => int_float_cmp(*y, *x).map(Ordering::reverse),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        _ => None,
    }
}

fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // 2^63: every i64 is below it; below -2^63 every i64 is above.
    if f >= 9_223_372_036_854_775_808.0 {
        return Some(Ordering::Less);
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Some(Ordering::Greater);
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)),
        o => Some(o),
    }
}

pub fn negate(a: &Value) -> Value {
    match a {
        Value::Int(i) => match i.checked_neg() {
            Some(r) => Value::Int(r),
            None => Value::Float(-(*i as f64)),
        },
        Value::Float(f) => Value::Float(-f),
        _ => Value::Nil,
    }
}

/// The error for an operator applied to unsuitable operands.
pub fn type_error(op: Arith, a: &Value, b: &Value) -> RuntimeError {
    let (ta, tb) = (a.type_name(), b.type_name());
    let bad = if a.is_number() || (matches!(a, Value::Str(_)) && !matches!(op, Arith::Mul)) {
        b
    } else {
        a
    };
    let what = match op {
        Arith::Add => format!("cannot add {ta} and {tb}"),
        Arith::Sub => format!("cannot subtract {tb} from {ta}"),
        Arith::Mul => format!("cannot multiply {ta} by {tb}"),
        Arith::Div => format!("cannot divide {ta} by {tb}"),
        Arith::Mod => format!("cannot take the remainder of {ta} by {tb}"),
        Arith::Lt | Arith::Le | Arith::Gt | Arith::Ge => {
            format!("cannot compare {ta} with {tb}")
        }
        Arith::Pipe => format!("cannot apply | to {ta} and {tb}"),
    };
    RuntimeError::new(format!("{what} (value: {})", inspect_plain(bad)))
}

/// `==` (4.9, D26).
pub fn equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            num_cmp(a, b) == Some(Ordering::Equal)
        }
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Time(x), Value::Time(y)) => x.total_nanos() == y.total_nanos(),
        (Value::Array(x), Value::Array(y)) => {
            if std::sync::Arc::ptr_eq(x, y) {
                return true;
            }
            if x.items.len() != y.items.len() {
                return false;
            }
            match (&x.class, &y.class) {
                (None, None) => {}
                (Some(c), Some(d)) if std::sync::Arc::ptr_eq(c, d) => {}
                _ => return false,
            }
            let names_equal = match (&x.fields, &y.fields) {
                (None, None) => true,
                (Some(f), Some(g)) => f == g,
                (Some(f), None) | (None, Some(f)) => f.iter().all(|n| n.is_none()),
            };
            names_equal && x.items.iter().zip(&y.items).all(|(p, q)| equals(p, q))
        }
        (Value::Native(x), Value::Native(y)) => {
            std::sync::Arc::ptr_eq(x, y) || x.0.equals(&*y.0).unwrap_or(false)
        }
        _ => a.same_object(b),
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Int(_) | Value::Float(_) => 0,
        Value::Str(_) => 1,
        Value::Time(_) => 2,
        Value::Array(_) => 3,
        _ => 4,
    }
}

/// The total order of D27.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => match num_cmp(a, b) {
            Some(o) => o,
            None => {
                let an = a.as_f64().is_some_and(f64::is_nan);
                let bn = b.as_f64().is_some_and(f64::is_nan);
                an.cmp(&bn)
            }
        },
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Time(x), Value::Time(y)) => x.total_nanos().cmp(&y.total_nanos()),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.items.iter().zip(&y.items) {
                match compare(p, q) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            x.items.len().cmp(&y.items.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}
