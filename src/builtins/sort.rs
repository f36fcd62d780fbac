//! Sorting and comparison (6.6, 4.10; D27, D55, D56): `cmp`, and the stream
//! aggregators `sort`, `sort_by` and `median`. The sorting and median helpers here
//! are shared with the array methods (6.9).

use std::cmp::Ordering;

use crate::eval::exec::int_call;
use crate::eval::ops::compare;
use crate::eval::print::inspect_plain;
use crate::ext::{Args, Registry, Role, RuntimeError, Stage, StageContext, Stream, Value};

/// D27 order on floats alone: numeric, NaN after every other number, NaNs equal.
#[inline]
fn float_order(a: &f64, b: &f64) -> Ordering {
    match a.partial_cmp(b) {
        Some(o) => o,
        None => a.is_nan().cmp(&b.is_nan()),
    }
}

/// Maps a non-NaN float to an unsigned integer with the same order.
#[inline]
fn float_key(f: f64) -> u64 {
    let b = f.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

#[inline]
fn float_from_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Sorts values in place by the total order of D27, stably. Arrays of only integers
/// or only floats take a specialised path that never looks at `Value` tags again.
pub fn sort_values(v: &mut [Value]) {
    if v.len() < 2 {
        return;
    }
    let (mut ints, mut floats) = (true, true);
    for x in v.iter() {
        match x {
            Value::Int(_) => floats = false,
            Value::Float(_) => ints = false,
            _ => {
                ints = false;
                floats = false;
            }
        }
        if !ints && !floats {
            break;
        }
    }
    if ints {
        // Equal integers are indistinguishable, so an unstable sort is stable here.
        let mut k: Vec<i64> = v
            .iter()
            .map(|x| if let Value::Int(i) = x { *i } else { 0 })
            .collect();
        k.sort_unstable();
        for (slot, i) in v.iter_mut().zip(k) {
            *slot = Value::Int(i);
        }
    } else if floats {
        let mut k: Vec<f64> = v
            .iter()
            .map(|x| if let Value::Float(f) = x { *f } else { 0.0 })
            .collect();
        let (mut nan, mut neg_zero, mut pos_zero) = (false, false, false);
        for f in &k {
            nan |= f.is_nan();
            neg_zero |= *f == 0.0 && f.is_sign_negative();
            pos_zero |= *f == 0.0 && f.is_sign_positive();
        }
        if nan || (neg_zero && pos_zero) {
            // Stable: -0.0 and 0.0 (and NaNs) are equal in the order but distinct.
            k.sort_by(float_order);
            for (slot, f) in v.iter_mut().zip(k) {
                *slot = Value::Float(f);
            }
        } else {
            // Every pair of equal keys is bit-identical, so sorting the bit patterns
            // (mapped to an unsigned order) unstably is exact and much faster.
            let mut bits: Vec<u64> = k.into_iter().map(float_key).collect();
            bits.sort_unstable();
            for (slot, b) in v.iter_mut().zip(bits) {
                *slot = Value::Float(float_from_key(b));
            }
        }
    } else {
        v.sort_by(compare);
    }
}

/// `vals` ordered stably by `keys` (same length) under the total order (`sort_by`).
pub fn sort_keyed(keys: Vec<Value>, vals: Vec<Value>) -> Vec<Value> {
    debug_assert_eq!(keys.len(), vals.len());
    if keys.iter().all(|k| matches!(k, Value::Int(_))) {
        let mut pairs: Vec<(i64, Value)> = keys
            .into_iter()
            .zip(vals)
            .map(|(k, v)| (if let Value::Int(i) = k { i } else { 0 }, v))
            .collect();
        pairs.sort_by_key(|p| p.0);
        return pairs.into_iter().map(|p| p.1).collect();
    }
    let mut pairs: Vec<(Value, Value)> = keys.into_iter().zip(vals).collect();
    pairs.sort_by(|a, b| compare(&a.0, &b.0));
    pairs.into_iter().map(|p| p.1).collect()
}

/// A stable merge sort of the indices `0..n` under a fallible predicate
/// `after(i, j)`: true when element `j` must come before element `i`. It makes no
/// assumption about the consistency of the predicate (a script comparator may be
/// anything), always yields a permutation, and stops at the first error.
pub fn merge_sort_indices<E>(
    n: usize,
    mut after: impl FnMut(usize, usize) -> Result<bool, E>,
) -> Result<Vec<usize>, E> {
    const RUN: usize = 12;
    let mut a: Vec<usize> = (0..n).collect();
    let mut lo = 0;
    while lo < n {
        let hi = (lo + RUN).min(n);
        for i in lo + 1..hi {
            let mut j = i;
            while j > lo && after(a[j - 1], a[j])? {
                a.swap(j - 1, j);
                j -= 1;
            }
        }
        lo = hi;
    }
    let mut buf = vec![0usize; n];
    let mut width = RUN;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            if mid >= hi || !after(a[mid - 1], a[mid])? {
                // One run, or the two runs are already in order.
                buf[lo..hi].copy_from_slice(&a[lo..hi]);
            } else {
                let (mut i, mut j, mut k) = (lo, mid, lo);
                while i < mid && j < hi {
                    if after(a[i], a[j])? {
                        buf[k] = a[j];
                        j += 1;
                    } else {
                        buf[k] = a[i];
                        i += 1;
                    }
                    k += 1;
                }
                buf[k..k + (mid - i)].copy_from_slice(&a[i..mid]);
                k += mid - i;
                buf[k..hi].copy_from_slice(&a[j..hi]);
            }
            lo = hi;
        }
        std::mem::swap(&mut a, &mut buf);
        width *= 2;
    }
    Ok(a)
}

/// Reorders `vals` by a permutation of its indices.
pub fn permute(mut vals: Vec<Value>, order: &[usize]) -> Vec<Value> {
    order
        .iter()
        .map(|&i| std::mem::take(&mut vals[i]))
        .collect()
}

/// Interprets a comparator result `f(a, b)` (D55): true when `b` goes first.
pub fn comparator_after(name: &str, r: &Value) -> Result<bool, RuntimeError> {
    match r {
        Value::Int(i) => Ok(*i > 0),
        Value::Float(f) => Ok(*f > 0.0),
        _ => Err(RuntimeError::new(format!(
            "{name}: the comparator must return a number (returned: {})",
            inspect_plain(r)
        ))),
    }
}

/// Sorts `vals` with the script comparator `f` (6.6). On an error (a non-numeric
/// result, or an error raised by `f`) returns it together with the values in their
/// original order.
pub fn sort_with(
    cx: &mut crate::ext::CallContext,
    name: &str,
    f: &Value,
    vals: Vec<Value>,
) -> Result<Vec<Value>, (RuntimeError, Vec<Value>)> {
    let res = merge_sort_indices(vals.len(), |i, j| {
        let r = match int_call(f, &[&vals[i], &vals[j]]) {
            Some(r) => r,
            None => cx.call(f, &[vals[i].clone(), vals[j].clone()])?,
        };
        comparator_after(name, &r)
    });
    match res {
        Ok(order) => Ok(permute(vals, &order)),
        Err(e) => Err((e, vals)),
    }
}

/// The mean of two numbers as a float, without overflow in the intermediate sum.
fn midpoint(a: &Value, b: &Value) -> f64 {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        return (*x as i128 + *y as i128) as f64 / 2.0;
    }
    let (x, y) = (
        a.as_f64().unwrap_or(f64::NAN),
        b.as_f64().unwrap_or(f64::NAN),
    );
    let s = x + y;
    if s.is_infinite() && x.is_finite() && y.is_finite() {
        x / 2.0 + y / 2.0
    } else {
        s / 2.0
    }
}

/// The median of `keys` (D56) in the order of D27: the middle key; for an even count
/// the mean of the two middle keys if both are numbers, else the lower one; `nil` for
/// no keys.
pub fn median_of(mut keys: Vec<Value>) -> Value {
    let n = keys.len();
    if n == 0 {
        return Value::Nil;
    }
    sort_values(&mut keys);
    if n % 2 == 1 {
        return std::mem::take(&mut keys[n / 2]);
    }
    let (a, b) = (&keys[n / 2 - 1], &keys[n / 2]);
    if a.is_number() && b.is_number() {
        Value::Float(midpoint(a, b))
    } else {
        std::mem::take(&mut keys[n / 2 - 1])
    }
}

/// Emits `vals` in order (stops early when every destination has gone).
fn emit_all(cx: &mut StageContext, vals: Vec<Value>) -> Result<(), RuntimeError> {
    for v in vals {
        cx.emit(v)?;
        if cx.destinations_gone() {
            break;
        }
    }
    Ok(())
}

/// `sort([f])`.
struct Sort {
    f: Option<Value>,
    vals: Vec<Value>,
}

impl Stage for Sort {
    fn on_value(&mut self, v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.vals.push(v);
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let mut vals = std::mem::take(&mut self.vals);
        match &self.f {
            None => sort_values(&mut vals),
            Some(f) => {
                let res = sort_with(&mut cx.call_context(), "sort", f, vals);
                vals = match res {
                    Ok(sorted) => sorted,
                    Err((e, original)) => {
                        // D55: reported once; the values keep their original order.
                        cx.report(e);
                        original
                    }
                };
            }
        }
        emit_all(cx, vals)
    }
}

/// `sort_by(f)`: keys are computed as values arrive, so an error in `f` is a stage
/// error for that element only (and `skip` ignores it).
struct SortBy {
    f: Value,
    keys: Vec<Value>,
    vals: Vec<Value>,
}

impl Stage for SortBy {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let k = cx.call_context().call_with_element(&self.f, v.clone())?;
        self.keys.push(k);
        self.vals.push(v);
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let keys = std::mem::take(&mut self.keys);
        let vals = std::mem::take(&mut self.vals);
        emit_all(cx, sort_keyed(keys, vals))
    }
}

/// `median([f])`: emits the median key.
struct Median {
    f: Option<Value>,
    keys: Vec<Value>,
}

impl Stage for Median {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let k = match &self.f {
            Some(f) => cx.call_context().call_with_element(f, v)?,
            None => v,
        };
        self.keys.push(k);
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        cx.emit(median_of(std::mem::take(&mut self.keys)))
    }
}

fn opt_func(a: &Args, i: usize) -> Result<Option<Value>, RuntimeError> {
    match a.get(i) {
        None => Ok(None),
        Some(_) => Ok(Some(a.func(i)?.clone())),
    }
}

pub fn register(r: &Registry) {
    r.define_fn("cmp", |_cx, vals| {
        Args::new("cmp", vals).arity(2, 2)?;
        Ok(Value::Int(match compare(&vals[0], &vals[1]) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }))
    });
    r.define_stage_fn("sort", |_cx, vals| {
        let a = Args::new("sort", vals);
        a.arity(0, 1)?;
        let f = opt_func(&a, 0)?;
        Ok(Stream::value(
            Role::Filter,
            Sort {
                f,
                vals: Vec::new(),
            },
        ))
    });
    r.define_stage_fn("sort_by", |_cx, vals| {
        let a = Args::new("sort_by", vals);
        a.arity(1, 1)?;
        let f = a.func(0)?.clone();
        Ok(Stream::value(
            Role::Filter,
            SortBy {
                f,
                keys: Vec::new(),
                vals: Vec::new(),
            },
        ))
    });
    r.define_stage_fn("median", |_cx, vals| {
        let a = Args::new("median", vals);
        a.arity(0, 1)?;
        let f = opt_func(&a, 0)?;
        Ok(Stream::value(
            Role::Filter,
            Median {
                f,
                keys: Vec::new(),
            },
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[Value]) -> Vec<i64> {
        v.iter().map(|x| x.as_int().unwrap()).collect()
    }

    #[test]
    fn fast_and_general_paths() {
        let mut v: Vec<Value> = [3, 1, 2].iter().map(|&i| Value::Int(i)).collect();
        sort_values(&mut v);
        assert_eq!(ints(&v), vec![1, 2, 3]);
        let mut v = vec![
            Value::Float(f64::NAN),
            Value::Float(0.0),
            Value::Float(-0.0),
            Value::Float(-1.0),
        ];
        sort_values(&mut v);
        let f: Vec<f64> = v.iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(f[0], -1.0);
        assert!(f[1] == 0.0 && f[1].is_sign_positive()); // stable: 0.0 came first
        assert!(f[2] == 0.0 && f[2].is_sign_negative());
        assert!(f[3].is_nan());
        let mut v = vec![
            Value::str("b"),
            Value::Int(2),
            Value::Float(1.5),
            Value::Nil,
        ];
        sort_values(&mut v);
        assert!(matches!(v[0], Value::Float(_)));
        assert!(matches!(v[1], Value::Int(2)));
        assert!(matches!(v[3], Value::Nil));
    }

    #[test]
    fn float_keys_preserve_order() {
        let fs = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -f64::MIN_POSITIVE,
            -0.0,
            5e-324,
            1.0,
            2.5,
            f64::INFINITY,
        ];
        for w in fs.windows(2) {
            assert!(float_key(w[0]) < float_key(w[1]));
        }
        for f in fs {
            assert_eq!(float_from_key(float_key(f)).to_bits(), f.to_bits());
        }
        let mut v: Vec<Value> = [2.5, -1.0, 0.0, 1e-9, -0.5]
            .iter()
            .map(|&f| Value::Float(f))
            .collect();
        sort_values(&mut v);
        let f: Vec<f64> = v.iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(f, vec![-1.0, -0.5, 0.0, 1e-9, 2.5]);
    }

    #[test]
    fn merge_sort_is_stable_and_tolerates_nonsense() {
        let keys: Vec<i32> = (0..1000).map(|i| (i * 7919) % 13).collect();
        let order = merge_sort_indices::<()>(keys.len(), |i, j| Ok(keys[i] > keys[j])).unwrap();
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(keys[a] < keys[b] || (keys[a] == keys[b] && a < b));
        }
        let mut state = 12345u64;
        let order = merge_sort_indices::<()>(500, |_, _| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            Ok(state >> 63 == 1)
        })
        .unwrap();
        let mut seen = order.clone();
        seen.sort();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        assert!(merge_sort_indices(10, |_, _| Err::<bool, _>("x")).is_err());
    }

    #[test]
    fn medians() {
        let m = |v: Vec<Value>| median_of(v);
        assert!(m(vec![]).is_nil());
        assert!(matches!(
            m([5, 3, 9, 1].iter().map(|&i| Value::Int(i)).collect()),
            Value::Float(f) if f == 4.0
        ));
        assert!(
            matches!(m(vec![Value::Int(i64::MAX), Value::Int(i64::MAX)]),
            Value::Float(f) if f == i64::MAX as f64)
        );
        assert!(matches!(
            m(vec![Value::Int(2), Value::str("a")]),
            Value::Int(2)
        ));
        let v = m(vec![
            Value::str("b"),
            Value::str("a"),
            Value::str("c"),
            Value::str("d"),
        ]);
        assert_eq!(v.as_bytes(), Some(&b"b"[..]));
    }
}
