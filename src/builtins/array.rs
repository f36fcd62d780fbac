//! Array methods (6.9, D46, D59): namespace `array`, which also serves structs and
//! objects. Every method returns a new plain array; the receiver is never modified.
//! The statistics and sorting are the ones of the stream versions (`stat`, `sort`).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::builtins::sort::{median_of, sort_keyed, sort_values, sort_with};
use crate::builtins::stat::{correl_pair, Correl, NumAcc, Spread, SpreadAcc, Sum};
use crate::eval::ops::compare;
use crate::eval::print::inspect_plain;
use crate::ext::{Args, Array, CallContext, Registry, RuntimeError, Value};

/// The receiver and the optional function `[f]` (argument 1) of a method.
fn receiver_and_func<'v>(
    a: &Args<'v>,
) -> Result<(&'v Arc<Array>, Option<&'v Value>), RuntimeError> {
    a.arity(1, 2)?;
    let arr = a.array(0)?;
    let f = if a.len() > 1 { Some(a.func(1)?) } else { None };
    Ok((arr, f))
}

/// Applies the optional key function to one element.
#[inline]
fn key_of(cx: &mut CallContext, f: Option<&Value>, e: &Value) -> Result<Value, RuntimeError> {
    match f {
        Some(f) => cx.call_with_element(f, e.clone()),
        None => Ok(e.clone()),
    }
}

/// Feeds every element (or `f(e)`) to a statistic, failing on a non-number with its
/// index.
fn accumulate(
    cx: &mut CallContext,
    name: &str,
    items: &[Value],
    f: Option<&Value>,
    acc: &mut impl NumAcc,
) -> Result<(), RuntimeError> {
    for (i, e) in items.iter().enumerate() {
        let v = match f {
            Some(f) => cx.call_with_element(f, e.clone())?,
            None => e.clone(),
        };
        if !v.is_number() {
            return Err(RuntimeError::new(format!(
                "{name}: element at index {i}: number required (value: {})",
                inspect_plain(&v)
            )));
        }
        acc.push(&v);
    }
    Ok(())
}

/// `min`/`max`: the element whose key is least/greatest; ties keep the earliest.
fn extreme(
    cx: &mut CallContext,
    vals: &[Value],
    name: &str,
    want: Ordering,
) -> Result<Value, RuntimeError> {
    let a = Args::method(name, vals);
    let (arr, f) = receiver_and_func(&a)?;
    let mut best: Option<(Value, &Value)> = None;
    for e in &arr.items {
        let k = key_of(cx, f, e)?;
        match &best {
            Some((bk, _)) if compare(&k, bk) != want => {}
            _ => best = Some((k, e)),
        }
    }
    Ok(best.map_or(Value::Nil, |(_, e)| e.clone()))
}

fn spread(
    cx: &mut CallContext,
    vals: &[Value],
    name: &str,
    kind: Spread,
) -> Result<Value, RuntimeError> {
    let a = Args::method(name, vals);
    let (arr, f) = receiver_and_func(&a)?;
    let mut acc = SpreadAcc::new(kind);
    accumulate(cx, name, &arr.items, f, &mut acc)?;
    Ok(acc.result().unwrap_or(Value::Nil))
}

pub fn register(r: &Registry) {
    let ns = r.namespace("array");
    ns.define_method("length", |_cx, vals| {
        let a = Args::method("length", vals);
        a.arity(1, 1)?;
        Ok(Value::Int(a.array(0)?.items.len() as i64))
    });
    ns.define_method("reverse", |_cx, vals| {
        let a = Args::method("reverse", vals);
        a.arity(1, 1)?;
        Ok(Value::array(
            a.array(0)?.items.iter().rev().cloned().collect(),
        ))
    });
    ns.define_method("each", |cx, vals| {
        let a = Args::method("each", vals);
        a.arity(2, 2)?;
        let arr = a.array(0)?;
        let f = a.func(1)?;
        for e in &arr.items {
            cx.call_with_element(f, e.clone())?;
        }
        Ok(vals[0].clone())
    });
    ns.define_method("map", |cx, vals| {
        let a = Args::method("map", vals);
        a.arity(2, 2)?;
        let arr = a.array(0)?;
        let f = a.func(1)?;
        let mut out = Vec::with_capacity(arr.items.len());
        for e in &arr.items {
            out.push(cx.call_with_element(f, e.clone())?);
        }
        Ok(Value::array(out))
    });
    ns.define_method("flatmap", |cx, vals| {
        let a = Args::method("flatmap", vals);
        a.arity(2, 2)?;
        let arr = a.array(0)?;
        let f = a.func(1)?;
        let mut out = Vec::with_capacity(arr.items.len());
        for e in &arr.items {
            // D46: arrays spliced one level, nil dropped, other values kept singly.
            match cx.call_with_element(f, e.clone())? {
                Value::Nil => {}
                Value::Array(r) => out.extend(r.items.iter().cloned()),
                v => out.push(v),
            }
        }
        Ok(Value::array(out))
    });
    ns.define_method("min", |cx, vals| extreme(cx, vals, "min", Ordering::Less));
    ns.define_method("max", |cx, vals| {
        extreme(cx, vals, "max", Ordering::Greater)
    });
    ns.define_method("sum", |cx, vals| {
        let a = Args::method("sum", vals);
        let (arr, f) = receiver_and_func(&a)?;
        let mut acc = Sum::new();
        accumulate(cx, "sum", &arr.items, f, &mut acc)?;
        Ok(acc.value())
    });
    ns.define_method("average", |cx, vals| {
        let a = Args::method("average", vals);
        let (arr, f) = receiver_and_func(&a)?;
        let mut acc = Sum::new();
        accumulate(cx, "average", &arr.items, f, &mut acc)?;
        Ok(acc.mean().map_or(Value::Nil, Value::Float))
    });
    ns.define_method("variance", |cx, vals| {
        spread(cx, vals, "variance", Spread::Variance)
    });
    ns.define_method("stdev", |cx, vals| spread(cx, vals, "stdev", Spread::Stdev));
    ns.define_method("correl", |_cx, vals| {
        let a = Args::method("correl", vals);
        a.arity(1, 1)?;
        let mut acc = Correl::default();
        for (i, e) in a.array(0)?.items.iter().enumerate() {
            let (x, y) = correl_pair(e)
                .map_err(|m| RuntimeError::new(format!("correl: element at index {i}: {m}")))?;
            acc.add(x, y);
        }
        Ok(acc.result().map_or(Value::Nil, Value::Float))
    });
    ns.define_method("sort", |cx, vals| {
        let a = Args::method("sort", vals);
        let (arr, f) = receiver_and_func(&a)?;
        let mut items = arr.items.clone();
        match f {
            None => sort_values(&mut items),
            Some(f) => items = sort_with(cx, "sort", f, items).map_err(|(e, _)| e)?,
        }
        Ok(Value::array(items))
    });
    ns.define_method("sort_by", |cx, vals| {
        let a = Args::method("sort_by", vals);
        a.arity(2, 2)?;
        let arr = a.array(0)?;
        let f = a.func(1)?;
        let mut keys = Vec::with_capacity(arr.items.len());
        for e in &arr.items {
            keys.push(cx.call_with_element(f, e.clone())?);
        }
        Ok(Value::array(sort_keyed(keys, arr.items.clone())))
    });
    ns.define_method("median", |cx, vals| {
        let a = Args::method("median", vals);
        let (arr, f) = receiver_and_func(&a)?;
        let keys = match f {
            None => arr.items.clone(),
            Some(_) => {
                let mut keys = Vec::with_capacity(arr.items.len());
                for e in &arr.items {
                    keys.push(key_of(cx, f, e)?);
                }
                keys
            }
        };
        Ok(median_of(keys))
    });
}
