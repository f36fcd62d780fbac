//! The pipe operator `|` (5.1): converting operands to streams and connecting them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::eval::exec::{
    arith_lambda, array_lambda_parts, int_lambda, int_lambda_runs, run_num_prog_nums,
};
use crate::eval::ops::Num;
use crate::eval::print::inspect_plain;
use crate::eval::symbol::Sym;
use crate::ext::{
    Args, Array, CallContext, Func, Lent, Lines, Produce, Records, Registry, Role, RuntimeError,
    Stage, StageContext, Stream, Value,
};
use crate::runtime::assist::{self, Results};
use crate::runtime::stream::connect;
use smallvec::SmallVec;

/// How many array elements a source emits per turn.
const ARRAY_BATCH: usize = 1024;

/// The D31 error for a value that cannot be a pipe source.
pub fn bad_source(v: &Value) -> RuntimeError {
    match v {
        Value::Func(_) => RuntimeError::new(format!(
            "cannot pipe from {}: a function has no output until something is piped into it",
            inspect_plain(v)
        )),
        _ => RuntimeError::new(format!(
            "cannot pipe from {} {}: not a stream; wrap a single value in an array: [v] | ...",
            v.type_name(),
            inspect_plain(v)
        )),
    }
}

/// Converts a pipe source (5.1).
pub fn to_source(v: &Value) -> Result<Arc<Stream>, RuntimeError> {
    match v {
        Value::Stream(s) => {
            if s.role == Role::Consumer {
                return Err(RuntimeError::new(
                    "cannot pipe from a consumer stream (it has no output)",
                ));
            }
            Ok(s.clone())
        }
        Value::Io(io) => io.read_stream().ok_or_else(|| {
            RuntimeError::new(format!(
                "cannot pipe from {}: it is not readable",
                io.describe()
            ))
        }),
        Value::Array(a) => Ok(Stream::new(
            Role::Producer,
            ArraySource {
                array: a.clone(),
                next: 0,
            },
        )),
        _ => Err(bad_source(v)),
    }
}

/// Converts a pipe destination (5.1, D31, D32, D34).
pub fn to_dest(cx: &mut CallContext, v: &Value) -> Result<Arc<Stream>, RuntimeError> {
    match v {
        Value::Stream(s) => {
            if s.role == Role::Producer {
                return Err(RuntimeError::new(
                    "cannot pipe into a producer stream (it takes no input)",
                ));
            }
            Ok(s.clone())
        }
        Value::Io(io) => io.write_stream().ok_or_else(|| {
            RuntimeError::new(format!(
                "cannot pipe into {}: it is not writable",
                io.describe()
            ))
        }),
        Value::Func(f) => match &**f {
            Func::Closure { code, .. } => {
                if !code.parameterless && !code.case_accepts(1) {
                    return Err(RuntimeError::new("a pipeline function takes one argument"));
                }
                Ok(Stream::new(Role::Filter, MapStage::new(v.clone())))
            }
            Func::Native(n) if n.stage_constructor => {
                let s = cx.call(v, &[]).map_err(|e| {
                    RuntimeError::new(format!(
                        "{} needs arguments: write {}(...) ({})",
                        n.name,
                        n.name,
                        e.message()
                    ))
                })?;
                to_dest(cx, &s)
            }
            _ => Ok(Stream::new(Role::Filter, MapStage::new(v.clone()))),
        },
        Value::Array(_) => Err(RuntimeError::new(format!(
            "cannot pipe into an array {}",
            inspect_plain(v)
        ))),
        _ => Err(RuntimeError::new(format!(
            "cannot pipe into {} {}: not a stream, io or function",
            v.type_name(),
            inspect_plain(v)
        ))),
    }
}

/// Emits an array's elements, then closes.
struct ArraySource {
    array: Arc<Array>,
    next: usize,
}

impl Stage for ArraySource {
    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        let end = (self.next + ARRAY_BATCH).min(self.array.items.len());
        while self.next < end {
            let v = self.array.items[self.next].clone();
            self.next += 1;
            cx.emit(v)?;
            if cx.destinations_gone() {
                return Ok(Produce::Done);
            }
        }
        Ok(if self.next < self.array.items.len() {
            Produce::More
        } else {
            Produce::Done
        })
    }
}

/// A function used as a stage (5.3, 5.4): called once per value, its non-nil result
/// emitted. Also `map(f)`.
pub struct MapStage {
    pub f: Value,
    sharing: Sharing,
}

impl MapStage {
    /// The stage calling `f`.
    pub fn new(f: Value) -> MapStage {
        MapStage {
            f,
            sharing: Sharing::default(),
        }
    }
}

/// A batch costing at least this much (estimated) is shared out among cores when the
/// stage's function is pure.
const SHARE_MIN: Duration = Duration::from_micros(200);

/// Whether a `map` or `filter` shares its batches out among cores
/// (`runtime::assist`): only a script function, only while it has never reached a
/// side effect, and only when a batch costs enough to pay for waking a helper.
#[derive(Default)]
pub struct Sharing {
    /// The function reached a side effect: never again.
    off: bool,
    /// Measured cost of one value (zero: not measured yet).
    per_value: Duration,
    /// A batch was shared out (for `STRM_TRACE_SHARE`).
    traced: bool,
    /// Batches run so far.
    batches: u32,
    /// Batches shared so far.
    shared: u32,
    /// Shared batches in a row that were not faster than one by one.
    misses: u32,
}

/// Values timed one by one to estimate a function's cost.
const PROBES: usize = 3;
/// One batch in this many runs in the stage's thread, to measure the cost again.
const REMEASURE: u32 = 16;

/// `STRM_TRACE_SHARE=1`: report on stderr when a stage first shares a batch out
/// and when its function turns out to have side effects.
fn trace_share() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("STRM_TRACE_SHARE").is_some())
}

impl Sharing {
    /// Runs a batch: `one_by_one` calls the function per value in this thread;
    /// `take` receives the values with their results when they were shared out.
    pub fn run(
        &mut self,
        f: &Value,
        vals: &mut Vec<Value>,
        cx: &mut StageContext,
        mut one_by_one: impl FnMut(&mut StageContext, &mut Vec<Value>),
        mut take: impl FnMut(&mut StageContext, Vec<Value>, Results),
    ) {
        let can_share = !self.off
            && assist::available()
            && matches!(f, Value::Func(func) if matches!(**func, Func::Closure { .. }));
        if !can_share || vals.len() < 2 {
            // Nothing to share (or never): no timing either.
            one_by_one(cx, vals);
            return;
        }
        if self.per_value.is_zero() {
            // Cost unknown: the first few values, timed. (The first call also
            // prepares the function: an estimate too high is corrected below when a
            // shared batch does not pay.)
            let k = PROBES.min(vals.len() - 1);
            let mut probe: Vec<Value> = vals.drain(..k).collect();
            let start = Instant::now();
            one_by_one(cx, &mut probe);
            self.per_value = (start.elapsed() / k as u32).max(Duration::from_nanos(1));
        }
        self.batches = self.batches.wrapping_add(1);
        // Every `REMEASURE`th batch runs here, so the estimate follows the function's
        // real cost (a shared batch's time includes waking the helpers).
        let remeasure = self.batches.is_multiple_of(REMEASURE);
        let sequential = self.per_value * vals.len() as u32;
        if !remeasure && vals.len() >= 2 && sequential >= SHARE_MIN {
            let start = Instant::now();
            match cx.call_shared(f, vals) {
                Some(results) => {
                    let n = vals.len();
                    take(cx, std::mem::take(vals), results);
                    let took = start.elapsed();
                    if trace_share() && !self.traced {
                        self.traced = true;
                        eprintln!("shared a batch of {n} values");
                    }
                    self.shared += 1;
                    // The first shared batch also starts the helpers: not judged. A
                    // single slow batch (a helper descheduled) is not enough either.
                    if self.shared > 1 && took * 10 > sequential * 9 {
                        self.misses += 1;
                    } else {
                        self.misses = 0;
                    }
                    if self.misses >= 3 {
                        // No gain (the values are cheaper than waking a helper).
                        if trace_share() {
                            eprintln!("sharing did not pay ({took:?} for {n} values, {sequential:?} estimated one by one): values run one at a time");
                        }
                        self.off = true;
                    }
                    return;
                }
                None => {
                    if trace_share() {
                        eprintln!("side effect: values run one at a time");
                    }
                    self.off = true
                }
            }
        }
        if vals.is_empty() {
            return;
        }
        let n = vals.len() as u32;
        let start = Instant::now();
        one_by_one(cx, vals);
        if !self.off {
            self.per_value = (start.elapsed() / n).max(Duration::from_nanos(1));
        }
    }
}

impl Stage for MapStage {
    fn on_lines(&mut self, lines: &Lines<'_>, cx: &mut StageContext) -> bool {
        let Some(k) = cx.call_context().bytes_lambda(&self.f) else {
            return false;
        };
        for line in lines.iter() {
            match k.call(line) {
                Ok(v) => {
                    let _ = cx.emit(v);
                }
                Err(e) => cx.report(e),
            }
        }
        true
    }

    /// `map{w -> [w, 1]}` over lent strings: the pairs are lent on as records (the
    /// string and the constants), made arrays only if the next stage refuses them.
    fn on_lent(
        &mut self,
        lent: Lent<'_>,
        cx: &mut StageContext,
        pass: &mut dyn FnMut(Lent<'_>) -> bool,
    ) -> bool {
        let lines = match lent {
            Lent::Lines(lines) => lines,
            Lent::Records(records) => return self.on_records(records, cx),
        };
        let Some(parts) = array_lambda_parts(&self.f) else {
            return self.on_lines(lines, cx);
        };
        let strings: Vec<&[u8]> = lines.iter().collect();
        let width = parts.len();
        let mut numbers = Vec::with_capacity(strings.len() * width);
        for _ in 0..strings.len() {
            numbers.extend(parts.iter().map(|p| p.as_ref().and_then(Num::of)));
        }
        let string_fields = parts
            .iter()
            .enumerate()
            .filter(|(i, p)| p.is_none() && *i < 64)
            .fold(0u64, |m, (i, _)| m | 1 << i);
        let row = |r: usize| {
            let items = parts
                .iter()
                .map(|p| match p {
                    None => Value::bytes(strings[r]),
                    Some(c) => c.clone(),
                })
                .collect();
            Value::array(items)
        };
        let records = Records::new(None, width, &numbers, (&strings, string_fields), &row);
        if !pass(Lent::Records(&records)) {
            for r in 0..records.len() {
                let _ = cx.emit(records.row(r));
            }
        }
        true
    }

    /// `{row -> row.price * row.qty}` over lent records: computed from the numbers
    /// the parser found; a record whose fields are not numbers is made a row and goes
    /// the general way.
    fn on_records(&mut self, records: &Records<'_>, cx: &mut StageContext) -> bool {
        let f = &self.f;
        let Some(p) = arith_lambda(f) else {
            return false;
        };
        let mut positions: SmallVec<[(Sym, Option<usize>); 4]> = SmallVec::new();
        for r in 0..records.len() {
            let v = run_num_prog_nums(p, &mut |name| {
                let i = match positions.iter().find(|(s, _)| *s == name) {
                    Some(&(_, i)) => i,
                    None => {
                        let i = records.position(name.name().as_bytes());
                        positions.push((name, i));
                        i
                    }
                };
                records.num(r, i?)
            });
            let v = match v {
                Some(v) => Ok(v),
                None => cx.call_context().call_with_element(f, records.row(r)),
            };
            match v {
                Ok(v) => {
                    let _ = cx.emit(v);
                }
                Err(e) => cx.report(e),
            }
        }
        true
    }

    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        let Self { f, sharing } = self;
        let f = &*f;
        if let Some(p) = int_lambda(f) {
            // `{x -> x * 2}` over integers: transformed in place, the batch passed on
            // whole; from the first value it cannot take, the general path goes on.
            let mut results = Vec::new();
            let done = int_lambda_runs(p, vals, |_, r| results.extend_from_slice(r));
            // The integers replaced own nothing: dropping them is free.
            vals.splice(..done, results);
            if cx.emit_prefix(vals, done) {
                return;
            }
        }
        sharing.run(
            f,
            vals,
            cx,
            |cx, vals| {
                cx.each_value(vals, |call, v| {
                    let r = call.call_with_element(f, v)?;
                    call.emit(r)
                })
            },
            |cx, _vals, results| {
                for r in results {
                    match r {
                        Ok(v) => {
                            let _ = cx.emit(v);
                        }
                        Err(e) => cx.report(e),
                    }
                }
            },
        );
    }
}

pub fn register(r: &Registry) {
    r.define_fn("|", |cx, vals| {
        Args::new("|", vals).arity(2, 2)?;
        let src = to_source(&vals[0])?;
        let dst = to_dest(cx, &vals[1])?;
        connect(cx.globals(), &src, &dst);
        Ok(Value::Stream(dst))
    });
}
