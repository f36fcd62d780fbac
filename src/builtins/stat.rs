//! Statistics (6.5, D50, D54): the stream aggregators `sum`, `average`/`mean`,
//! `moving_average`/`rolling_mean`, `variance`, `stdev`, `mean_variance`, `mean_stdev`
//! and `correl`, and the accumulators they share with the array methods (6.9).

use std::collections::VecDeque;

use crate::eval::print::inspect_plain;
use crate::ext::{Args, Registry, Role, RuntimeError, Stage, StageContext, Stream, Value};

/// Compensated (Kahan–Babuška, a.k.a. Neumaier) summation of floats.
#[derive(Clone, Copy, Default, Debug)]
pub struct KbSum {
    s: f64,
    c: f64,
}

impl KbSum {
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.s + x;
        if self.s.abs() >= x.abs() {
            self.c += (self.s - t) + x;
        } else {
            self.c += (x - t) + self.s;
        }
        self.s = t;
    }

    /// Adds an exact integer with as little rounding as possible.
    #[inline]
    pub fn add_i128(&mut self, i: i128) {
        let hi = i as f64;
        self.add(hi);
        // The rounding error of `hi`, exact for any sum that can occur in practice.
        let lo = i.wrapping_sub(hi as i128);
        if lo != 0 {
            self.add(lo as f64);
        }
    }

    /// The compensated total. Once an infinity or NaN has been added the plain sum
    /// is the answer (the correction term would be NaN).
    pub fn total(&self) -> f64 {
        if self.s.is_finite() {
            self.s + self.c
        } else {
            self.s
        }
    }
}

/// The sum of numbers (D54): exact while every addend is an integer, compensated
/// float summation otherwise.
#[derive(Clone, Default, Debug)]
pub struct Sum {
    /// Exact sum of the integer addends (cannot overflow in practice: 2^64 addends).
    ints: i128,
    floats: KbSum,
    has_float: bool,
    n: u64,
}

impl Sum {
    pub fn new() -> Sum {
        Sum::default()
    }

    /// Adds a number; false (and nothing added) for any other value.
    #[inline]
    pub fn add(&mut self, v: &Value) -> bool {
        match v {
            Value::Int(i) => self.ints = self.ints.wrapping_add(*i as i128),
            Value::Float(f) => {
                self.floats.add(*f);
                self.has_float = true;
            }
            _ => return false,
        }
        self.n += 1;
        true
    }

    #[allow(dead_code)]
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The sum as a float.
    pub fn total(&self) -> f64 {
        if !self.has_float {
            return self.ints as f64;
        }
        let mut k = self.floats;
        if self.ints != 0 {
            k.add_i128(self.ints);
        }
        k.total()
    }

    /// D54: an integer when every addend was an integer and the exact sum fits in 64
    /// bits (else its float approximation, D23); otherwise a float. Empty: `0`.
    pub fn value(&self) -> Value {
        if !self.has_float {
            return match i64::try_from(self.ints) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(self.ints as f64),
            };
        }
        Value::Float(self.total())
    }

    /// The arithmetic mean (compensated sum / count); `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.total() / self.n as f64)
    }
}

/// Welford's online mean and sample variance.
#[derive(Clone, Copy, Default, Debug)]
pub struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Sample variance (divisor n - 1); `None` for fewer than two values (D54).
    pub fn variance(&self) -> Option<f64> {
        (self.n >= 2).then(|| self.m2 / (self.n - 1) as f64)
    }
}

/// Sample Pearson correlation, computed online (co-moments, Welford style).
#[derive(Clone, Copy, Default, Debug)]
pub struct Correl {
    n: u64,
    mx: f64,
    my: f64,
    m2x: f64,
    m2y: f64,
    cxy: f64,
}

impl Correl {
    #[inline]
    pub fn add(&mut self, x: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mx;
        let dy = y - self.my;
        self.mx += dx / n;
        self.my += dy / n;
        self.m2x += dx * (x - self.mx);
        self.m2y += dy * (y - self.my);
        self.cxy += dx * (y - self.my);
    }

    /// The coefficient; `None` for fewer than two pairs (D54), `nan` for zero variance.
    pub fn result(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let r = self.cxy / (self.m2x.sqrt() * self.m2y.sqrt());
        // Rounding may push a perfect correlation just beyond ±1.
        Some(if r.is_finite() { r.clamp(-1.0, 1.0) } else { r })
    }
}

/// A `correl` element as a pair of numbers, or why it is unusable (6.5).
pub fn correl_pair(v: &Value) -> Result<(f64, f64), String> {
    if let Value::Array(a) = v {
        if let [x, y] = &a.items[..] {
            if let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) {
                return Ok((x, y));
            }
        }
    }
    Err(format!(
        "invalid data: correl() requires [num, num] pairs (value: {})",
        inspect_plain(v)
    ))
}

/// The stage error for a non-number fed to a statistic (6.5).
pub fn not_a_number(name: &str, v: &Value) -> RuntimeError {
    RuntimeError::new(format!(
        "{name}: number required (value: {})",
        inspect_plain(v)
    ))
}

/// What a variance-family aggregator emits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    Variance,
    Stdev,
    MeanVariance,
    MeanStdev,
}

/// Accumulates numbers for one statistic.
pub trait NumAcc: Send + 'static {
    /// `v` is a number.
    fn push(&mut self, v: &Value);
    /// The result at the end; `None` emits nothing.
    fn result(&self) -> Option<Value>;
}

impl NumAcc for Sum {
    #[inline]
    fn push(&mut self, v: &Value) {
        self.add(v);
    }
    fn result(&self) -> Option<Value> {
        Some(self.value())
    }
}

/// `average`/`mean`.
#[derive(Default)]
pub struct Average(pub Sum);

impl NumAcc for Average {
    #[inline]
    fn push(&mut self, v: &Value) {
        self.0.add(v);
    }
    fn result(&self) -> Option<Value> {
        self.0.mean().map(Value::Float)
    }
}

/// `variance`, `stdev`, `mean_variance`, `mean_stdev`: Welford for the spread; the
/// mean is the compensated one, as for `average`.
pub struct SpreadAcc {
    pub kind: Spread,
    pub w: Welford,
    pub sum: Sum,
}

impl SpreadAcc {
    pub fn new(kind: Spread) -> SpreadAcc {
        SpreadAcc {
            kind,
            w: Welford::default(),
            sum: Sum::new(),
        }
    }
}

impl NumAcc for SpreadAcc {
    #[inline]
    fn push(&mut self, v: &Value) {
        if let Some(x) = v.as_f64() {
            self.w.add(x);
        }
        if matches!(self.kind, Spread::MeanVariance | Spread::MeanStdev) {
            self.sum.add(v);
        }
    }
    fn result(&self) -> Option<Value> {
        let var = self.w.variance()?;
        let mean = || Value::Float(self.sum.mean().unwrap_or(f64::NAN));
        Some(match self.kind {
            Spread::Variance => Value::Float(var),
            Spread::Stdev => Value::Float(var.sqrt()),
            Spread::MeanVariance => Value::array(vec![mean(), Value::Float(var)]),
            Spread::MeanStdev => Value::array(vec![mean(), Value::Float(var.sqrt())]),
        })
    }
}

/// A statistic over a stream, with an optional function applied to each value first.
struct NumStage<A: NumAcc> {
    name: &'static str,
    f: Option<Value>,
    acc: A,
}

impl<A: NumAcc> Stage for NumStage<A> {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let v = match &self.f {
            // `skip` in `f` ignores the element (5.5): the error is not reported.
            Some(f) => cx.call_context().call_with_element(f, v)?,
            None => v,
        };
        if !v.is_number() {
            return Err(not_a_number(self.name, &v));
        }
        self.acc.push(&v);
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        match self.acc.result() {
            Some(r) => cx.emit(r),
            None => Ok(()),
        }
    }
}

/// The optional function argument `[f]` at position `i`.
fn opt_func(a: &Args, i: usize) -> Result<Option<Value>, RuntimeError> {
    match a.get(i) {
        None => Ok(None),
        Some(_) => Ok(Some(a.func(i)?.clone())),
    }
}

fn num_stage<A: NumAcc>(name: &'static str, vals: &[Value], acc: A) -> Result<Value, RuntimeError> {
    let a = Args::new(name, vals);
    a.arity(0, 1)?;
    let f = opt_func(&a, 0)?;
    Ok(Stream::value(Role::Filter, NumStage { name, f, acc }))
}

/// `moving_average(n [, f])`: the mean of the last `n` values, for every value from
/// the `n`-th on. Integers are summed exactly; floats with a compensated running sum
/// that is recomputed from the window every `n` steps so that rounding cannot drift.
struct MovingAverage {
    name: &'static str,
    n: usize,
    f: Option<Value>,
    window: VecDeque<Value>,
    ints: i128,
    floats: KbSum,
    /// Infinities and NaNs in the window (not in `floats`).
    non_finite: usize,
    removed: usize,
}

impl MovingAverage {
    fn new(name: &'static str, n: usize, f: Option<Value>) -> MovingAverage {
        MovingAverage {
            name,
            n,
            f,
            window: VecDeque::with_capacity(n.min(1 << 16)),
            ints: 0,
            floats: KbSum::default(),
            non_finite: 0,
            removed: 0,
        }
    }

    fn account(&mut self, v: &Value, sign: f64) {
        match v {
            Value::Int(i) => {
                if sign > 0.0 {
                    self.ints += *i as i128;
                } else {
                    self.ints -= *i as i128;
                }
            }
            Value::Float(x) if x.is_finite() => self.floats.add(sign * x),
            Value::Float(_) => {
                if sign > 0.0 {
                    self.non_finite += 1;
                } else {
                    self.non_finite -= 1;
                }
            }
            _ => {}
        }
    }

    fn push(&mut self, v: Value) -> Option<f64> {
        self.account(&v, 1.0);
        self.window.push_back(v);
        if self.window.len() > self.n {
            if let Some(old) = self.window.pop_front() {
                self.account(&old, -1.0);
            }
            self.removed += 1;
            if self.removed >= self.n {
                self.removed = 0;
                let mut k = KbSum::default();
                for x in &self.window {
                    if let Value::Float(x) = x {
                        if x.is_finite() {
                            k.add(*x);
                        }
                    }
                }
                self.floats = k;
            }
        }
        if self.window.len() < self.n {
            return None;
        }
        let total = if self.non_finite > 0 {
            // inf + finite = inf, so only the non-finite values matter.
            self.window
                .iter()
                .filter_map(|x| match x {
                    Value::Float(x) if !x.is_finite() => Some(*x),
                    _ => None,
                })
                .sum()
        } else {
            let mut k = self.floats;
            k.add_i128(self.ints);
            k.total()
        };
        Some(total / self.n as f64)
    }
}

impl Stage for MovingAverage {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let v = match &self.f {
            Some(f) => cx.call_context().call_with_element(f, v)?,
            None => v,
        };
        if !v.is_number() {
            return Err(not_a_number(self.name, &v));
        }
        if let Some(m) = self.push(v) {
            cx.emit(Value::Float(m))?;
        }
        Ok(())
    }
}

/// Parses a count argument (D50: "count must be positive").
pub fn positive_count(a: &Args, i: usize) -> Result<usize, RuntimeError> {
    let n = a.int(i)?;
    if n < 1 {
        return Err(a.error(i, "count must be positive"));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn moving_average(name: &'static str, vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new(name, vals);
    a.arity(1, 2)?;
    let n = positive_count(&a, 0)?;
    let f = opt_func(&a, 1)?;
    Ok(Stream::value(Role::Filter, MovingAverage::new(name, n, f)))
}

/// `correl()`: each value a `[x, y]` pair of numbers.
struct CorrelStage {
    acc: Correl,
}

impl Stage for CorrelStage {
    fn on_value(&mut self, v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        let (x, y) = correl_pair(&v).map_err(|m| RuntimeError::new(format!("correl: {m}")))?;
        self.acc.add(x, y);
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        match self.acc.result() {
            Some(r) => cx.emit(Value::Float(r)),
            None => Ok(()),
        }
    }
}

pub fn register(r: &Registry) {
    r.define_stage_fn("sum", |_cx, vals| num_stage("sum", vals, Sum::new()));
    r.define_stage_fn("average", |_cx, vals| {
        num_stage("average", vals, Average::default())
    });
    r.define_stage_fn("mean", |_cx, vals| {
        num_stage("mean", vals, Average::default())
    });
    for (name, kind) in [
        ("variance", Spread::Variance),
        ("stdev", Spread::Stdev),
        ("mean_variance", Spread::MeanVariance),
        ("mean_stdev", Spread::MeanStdev),
    ] {
        r.define_stage_fn(name, move |_cx, vals| {
            num_stage(name, vals, SpreadAcc::new(kind))
        });
    }
    r.define_stage_fn("moving_average", |_cx, vals| {
        moving_average("moving_average", vals)
    });
    r.define_stage_fn("rolling_mean", |_cx, vals| {
        moving_average("rolling_mean", vals)
    });
    r.define_stage_fn("correl", |_cx, vals| {
        Args::new("correl", vals).arity(0, 0)?;
        Ok(Stream::value(
            Role::Filter,
            CorrelStage {
                acc: Correl::default(),
            },
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_sum_is_exact_and_overflows_to_float() {
        let mut s = Sum::new();
        assert!(matches!(s.value(), Value::Int(0)));
        s.add(&Value::Int(i64::MAX));
        s.add(&Value::Int(1));
        assert!(matches!(s.value(), Value::Float(f) if f == 9_223_372_036_854_775_808.0));
        s.add(&Value::Int(-1));
        assert!(matches!(s.value(), Value::Int(i64::MAX)));
        assert!(!s.add(&Value::str("a")));
    }

    #[test]
    fn compensated_sum() {
        let mut s = Sum::new();
        for v in [1.0, 1e100, 1.0, -1e100] {
            s.add(&Value::Float(v));
        }
        assert_eq!(s.total(), 2.0);
        let mut s = Sum::new();
        for _ in 0..10 {
            s.add(&Value::Float(0.1));
        }
        assert_eq!(s.total(), 1.0);
        let mut s = Sum::new();
        s.add(&Value::Float(f64::INFINITY));
        s.add(&Value::Float(1.0));
        assert_eq!(s.total(), f64::INFINITY);
    }

    #[test]
    fn welford_and_correl() {
        let mut w = Welford::default();
        assert_eq!(w.variance(), None);
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            w.add(x);
        }
        assert!((w.variance().unwrap() - 32.0 / 7.0).abs() < 1e-12);
        let mut c = Correl::default();
        c.add(1.0, 2.0);
        assert_eq!(c.result(), None);
        c.add(2.0, 4.0);
        c.add(3.0, 6.0);
        assert!((c.result().unwrap() - 1.0).abs() < 1e-12);
        let mut c = Correl::default();
        c.add(1.0, 2.0);
        c.add(1.0, 3.0);
        assert!(c.result().unwrap().is_nan());
    }

    #[test]
    fn moving_average_window() {
        let mut m = MovingAverage::new("moving_average", 3, None);
        let out: Vec<Option<f64>> = (1..=5).map(|i| m.push(Value::Int(i))).collect();
        assert_eq!(out, vec![None, None, Some(2.0), Some(3.0), Some(4.0)]);
        let mut m = MovingAverage::new("moving_average", 2, None);
        assert_eq!(m.push(Value::Float(1e100)), None);
        assert_eq!(m.push(Value::Float(1.0)), Some(5e99));
        assert_eq!(m.push(Value::Float(3.0)), Some(2.0));
        assert!(m.push(Value::Float(f64::NAN)).unwrap().is_nan());
        assert!(m.push(Value::Float(1.0)).unwrap().is_nan());
        assert_eq!(m.push(Value::Float(5.0)), Some(3.0));
    }
}
