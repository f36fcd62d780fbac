//! Iteration and stream transformation (6.3).
//!
//! Every stage here is registered as a stage constructor (D32). Callbacks follow 5.5:
//! a `skip` raised inside `f` ignores the element (an accumulator keeps its value),
//! and any other error is a stage error for that element only (5.6).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use rustc_hash::FxHasher;

use crate::builtins::pipe::{MapStage, Sharing};
use crate::builtins::string::word_spans;
use crate::eval::exec::{int_call, int_lambda, int_lambda_runs};
use crate::eval::ops::{compare, equals};
use crate::eval::print::inspect_plain;
use crate::ext::{
    Args, Array, CallContext, Lent, Lines, Produce, Records, Registry, Role, RuntimeError, Stage,
    StageContext, Stream, Value,
};

/// Values a producer emits per `produce` turn.
const PRODUCE_BATCH: usize = 1024;

/// Largest buffer reserved up front for a `slice`/`consec` window (the window grows
/// beyond it on demand, so `slice(1e9)` does not reserve gigabytes).
const MAX_RESERVE: usize = 4096;

/// Turns the outcome of a callback on one element into the stage's result: `skip`
/// means "ignore this element" (5.5).
#[inline]
fn ignore_skip(r: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match r {
        Err(e) if e.is_skip() => Ok(()),
        r => r,
    }
}

// ---------------------------------------------------------------------------------
// Producers: seq, repeat, cycle
// ---------------------------------------------------------------------------------

/// `seq` (D44): integers when every argument is an integer, else floats computed as
/// `start + i * step`.
enum Seq {
    Int {
        next: i64,
        step: i64,
        end: Option<i64>,
        done: bool,
    },
    Float {
        start: f64,
        step: f64,
        i: u64,
        count: Option<u64>,
    },
}

impl Seq {
    /// The next value, or `None` when the sequence is exhausted.
    #[inline]
    fn next_value(&mut self) -> Option<Value> {
        match self {
            Seq::Int {
                next,
                step,
                end,
                done,
            } => {
                if *done {
                    return None;
                }
                if let Some(end) = *end {
                    if (*step > 0 && *next > end) || (*step < 0 && *next < end) {
                        return None;
                    }
                }
                let v = *next;
                match next.checked_add(*step) {
                    Some(n) => *next = n,
                    // The following value is outside the integer range, hence beyond
                    // any end (and `seq()` stops at the largest integer).
                    None => *done = true,
                }
                Some(Value::Int(v))
            }
            Seq::Float {
                start,
                step,
                i,
                count,
            } => {
                if count.is_some_and(|c| *i >= c) {
                    return None;
                }
                let v = *start + *i as f64 * *step;
                *i += 1;
                Some(Value::Float(v))
            }
        }
    }
}

impl Stage for Seq {
    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        for _ in 0..PRODUCE_BATCH {
            let Some(v) = self.next_value() else {
                return Ok(Produce::Done);
            };
            cx.emit(v)?;
            if cx.destinations_gone() {
                return Ok(Produce::Done);
            }
        }
        Ok(Produce::More)
    }
}

/// The number of values of a float `seq` (D44): `floor((end - start) / step + 1e-9) + 1`.
fn float_seq_count(start: f64, step: f64, end: f64) -> u64 {
    let n = ((end - start) / step + 1e-9).floor() + 1.0;
    if n.is_nan() || n < 1.0 {
        0
    } else {
        // Saturates for an infinite end: practically endless.
        n as u64
    }
}

fn seq(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("seq", vals);
    a.arity(0, 3)?;
    for i in 0..vals.len() {
        a.number(i)?;
    }
    let all_int = vals.iter().all(|v| matches!(v, Value::Int(_)));
    let one = Value::Int(1);
    let (start, step, end) = match vals.len() {
        0 => (&one, &one, None),
        1 => (&one, &one, Some(&vals[0])),
        2 => (&vals[0], &one, Some(&vals[1])),
        _ => (&vals[0], &vals[1], Some(&vals[2])),
    };
    if step.as_f64() == Some(0.0) {
        return Err(a.error(1, "step must not be zero"));
    }
    let stage = if all_int {
        Seq::Int {
            next: start.as_int().unwrap_or(1),
            step: step.as_int().unwrap_or(1),
            end: end.and_then(Value::as_int),
            done: false,
        }
    } else {
        let (s, st) = (start.as_f64().unwrap_or(1.0), step.as_f64().unwrap_or(1.0));
        Seq::Float {
            start: s,
            step: st,
            i: 0,
            count: end
                .and_then(Value::as_f64)
                .map(|e| float_seq_count(s, st, e)),
        }
    };
    Ok(Stream::value(Role::Producer, stage))
}

/// An optional repetition count of `repeat`/`cycle` (6.3): `n <= 0` is an error.
fn repetitions(a: &Args, i: usize) -> Result<Option<u64>, RuntimeError> {
    if a.len() <= i {
        return Ok(None);
    }
    let n = a.int(i)?;
    if n <= 0 {
        return Err(a.error(i, "invalid count number"));
    }
    Ok(Some(n as u64))
}

/// `repeat(v [, n])`: `v`, `n` times or forever.
struct Repeat {
    v: Value,
    left: Option<u64>,
}

impl Stage for Repeat {
    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        for _ in 0..PRODUCE_BATCH {
            if let Some(left) = &mut self.left {
                if *left == 0 {
                    return Ok(Produce::Done);
                }
                *left -= 1;
            }
            cx.emit(self.v.clone())?;
            if cx.destinations_gone() {
                return Ok(Produce::Done);
            }
        }
        Ok(if self.left == Some(0) {
            Produce::Done
        } else {
            Produce::More
        })
    }
}

/// `cycle(a [, n])`: the elements of `a`, the whole array `n` times or forever (D45).
struct Cycle {
    array: Arc<Array>,
    next: usize,
    rounds_left: Option<u64>,
}

impl Stage for Cycle {
    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        let len = self.array.items.len();
        if len == 0 {
            return Ok(Produce::Done);
        }
        for _ in 0..PRODUCE_BATCH {
            if self.next == len {
                self.next = 0;
                if let Some(r) = &mut self.rounds_left {
                    *r -= 1;
                }
            }
            if self.rounds_left == Some(0) {
                return Ok(Produce::Done);
            }
            let v = self.array.items[self.next].clone();
            self.next += 1;
            cx.emit(v)?;
            if cx.destinations_gone() {
                return Ok(Produce::Done);
            }
        }
        Ok(Produce::More)
    }
}

// ---------------------------------------------------------------------------------
// Element-wise filters: filter, each, flatmap, uniq, take, drop, slice, consec
// ---------------------------------------------------------------------------------

struct Filter {
    f: Value,
    sharing: Sharing,
}

impl Stage for Filter {
    /// Only the lines kept become strings.
    fn on_lines(&mut self, lines: &Lines<'_>, cx: &mut StageContext) -> bool {
        let Some(k) = cx.call_context().bytes_lambda(&self.f) else {
            return false;
        };
        if let Some(needle) = k.contains_needle() {
            // As grep does: one search through the whole block, not one per line.
            let finder = memchr::memmem::Finder::new(needle);
            for line in lines.containing(&finder) {
                let _ = cx.emit(Value::bytes(line));
            }
            return true;
        }
        for line in lines.iter() {
            match k.call(line) {
                Ok(keep) if keep.truthy() => {
                    let _ = cx.emit(Value::bytes(line));
                }
                Ok(_) => {}
                Err(e) => cx.report(e),
            }
        }
        true
    }

    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        let Self { f, sharing } = self;
        let f = &*f;
        if let Some(p) = int_lambda(f) {
            // `{x -> x % 3 == 0}` over integers: the kept values are compacted in
            // place and passed on whole; from the first value the program cannot
            // take, the general path goes on.
            let mut keep = Vec::new();
            let seen = int_lambda_runs(p, vals, |_, r| keep.extend(r.iter().map(Value::truthy)));
            let mut kept = 0;
            for (i, k) in keep.into_iter().enumerate() {
                if k {
                    vals.swap(kept, i);
                    kept += 1;
                }
            }
            vals.drain(kept..seen);
            if cx.emit_prefix(vals, kept) {
                return;
            }
        }
        sharing.run(
            f,
            vals,
            cx,
            |cx, vals| {
                cx.each_value(vals, |call, v| {
                    if call.call_with_element(f, v.clone())?.truthy() {
                        call.emit(v)?;
                    }
                    Ok(())
                })
            },
            |cx, vals, results| {
                for (v, r) in vals.into_iter().zip(results) {
                    match r {
                        Ok(keep) if keep.truthy() => {
                            let _ = cx.emit(v);
                        }
                        Ok(_) => {}
                        Err(e) => cx.report(e),
                    }
                }
            },
        );
    }
}

struct Each {
    f: Value,
}

impl Stage for Each {
    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        let f = &self.f;
        cx.each_value(vals, |call, v| {
            call.call_with_element(f, v)?;
            Ok(())
        });
    }
}

/// `flatmap(f)` (D46): an array result is spliced, `nil` dropped, anything else
/// emitted as one value.
struct FlatMap {
    f: Value,
    /// The words of a block (reused).
    words: Vec<(usize, usize)>,
}

impl FlatMap {
    /// D46 for one result.
    fn splice(r: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        match r {
            Value::Array(a) => match Arc::try_unwrap(a) {
                Ok(a) => a.items.into_iter().try_for_each(|x| cx.emit(x)),
                Err(a) => a.items.iter().try_for_each(|x| cx.emit(x.clone())),
            },
            other => cx.emit(other),
        }
    }
}

impl Stage for FlatMap {
    /// `flatmap{l -> l.split()}` over a reader's lines: the words of the whole block
    /// (line ends are whitespace too), lent on as strings to the next stage, or
    /// emitted if it refuses them.
    fn on_lent(
        &mut self,
        lent: Lent<'_>,
        cx: &mut StageContext,
        pass: &mut dyn FnMut(Lent<'_>) -> bool,
    ) -> bool {
        let Lent::Lines(lines) = lent else {
            return false;
        };
        let text = match (lines.text(), cx.call_context().bytes_lambda(&self.f)) {
            (Some(text), Some(k)) if k.splits_words() => text,
            _ => return self.on_lines(lines, cx),
        };
        let mut words = std::mem::take(&mut self.words);
        words.clear();
        word_spans(text, &mut words);
        let lent = Lines::spans(text, &words);
        if !pass(Lent::Lines(&lent)) {
            for w in lent.iter() {
                let _ = cx.emit(Value::bytes(w));
            }
        }
        self.words = words;
        true
    }

    fn on_lines(&mut self, lines: &Lines<'_>, cx: &mut StageContext) -> bool {
        let Some(k) = cx.call_context().bytes_lambda(&self.f) else {
            return false;
        };
        for line in lines.iter() {
            if let Err(e) = k.call(line).and_then(|r| Self::splice(r, cx)) {
                cx.report(e);
            }
        }
        true
    }

    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let r = cx.call_context().call_with_element(&self.f, v);
        ignore_skip(r.and_then(|r| Self::splice(r, cx)))
    }
}

/// `uniq([f])`: drops a value equal (`==`) to the previous one, or whose key is.
struct Uniq {
    f: Option<Value>,
    prev: Option<Value>,
}

impl Stage for Uniq {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let key = match &self.f {
            None => {
                if !self.prev.as_ref().is_some_and(|p| equals(p, &v)) {
                    cx.emit(v.clone())?;
                }
                self.prev = Some(v);
                return Ok(());
            }
            Some(f) => match cx.call_context().call_with_element(f, v.clone()) {
                Ok(k) => k,
                Err(e) => return ignore_skip(Err(e)),
            },
        };
        let dup = self.prev.as_ref().is_some_and(|p| equals(p, &key));
        self.prev = Some(key);
        if dup {
            Ok(())
        } else {
            cx.emit(v)
        }
    }
}

/// A `take`/`drop` count: `n < 0` is "negative iteration".
fn iteration_count(a: &Args) -> Result<u64, RuntimeError> {
    a.arity(1, 1)?;
    let n = a.int(0)?;
    if n < 0 {
        return Err(a.error(0, "negative iteration"));
    }
    Ok(n as u64)
}

/// `take(n)` (D51): the first `n` values, then the stream closes, so its source stops
/// when it has no other live destination (5.7).
struct Take {
    left: u64,
}

impl Stage for Take {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if self.left == 0 {
            // Only `take(0)`: the stage API has no start hook, so it closes on the
            // first value it is offered, emitting nothing.
            cx.close();
            return Ok(());
        }
        self.left -= 1;
        let r = cx.emit(v);
        if self.left == 0 {
            cx.close();
        }
        r
    }
}

/// `drop(n)`: discards the first `n` values.
struct DropFirst {
    left: u64,
}

impl Stage for DropFirst {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if self.left > 0 {
            self.left -= 1;
            return Ok(());
        }
        cx.emit(v)
    }
}

/// A `slice`/`consec` window size (D50: "count must be positive").
fn window_size(a: &Args) -> Result<usize, RuntimeError> {
    a.arity(1, 1)?;
    let n = a.int(0)?;
    if n < 1 {
        return Err(a.error(0, "count must be positive"));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// `slice(n)`: consecutive groups of `n`; the last partial group at the end.
struct Slice {
    n: usize,
    buf: Vec<Value>,
}

impl Stage for Slice {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.buf.push(v);
        if self.buf.len() >= self.n {
            let group =
                std::mem::replace(&mut self.buf, Vec::with_capacity(self.n.min(MAX_RESERVE)));
            cx.emit(Value::array(group))?;
        }
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        cx.emit(Value::array(std::mem::take(&mut self.buf)))
    }
}

/// `consec(n)`: a sliding window of the `n` most recent values.
struct Consec {
    n: usize,
    window: VecDeque<Value>,
}

impl Stage for Consec {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if self.window.len() == self.n {
            self.window.pop_front();
        }
        self.window.push_back(v);
        if self.window.len() == self.n {
            cx.emit(Value::array(self.window.iter().cloned().collect()))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Aggregators: count, min, max, reduce, reduce_by_key
// ---------------------------------------------------------------------------------

struct Count {
    n: i64,
}

impl Stage for Count {
    fn on_value(&mut self, _v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.n += 1;
        Ok(())
    }
    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, _cx: &mut StageContext) {
        self.n += vals.len() as i64;
        vals.clear();
    }
    fn on_lines(&mut self, lines: &Lines<'_>, _cx: &mut StageContext) -> bool {
        self.n += lines.len() as i64;
        true
    }
    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        cx.emit(Value::Int(self.n))
    }
}

/// `min([f])` / `max([f])` (D47): keys compared with the total order (4.10); on ties
/// the earliest value wins; empty input emits nothing.
struct Extreme {
    f: Option<Value>,
    /// `Less` for `min`, `Greater` for `max`.
    want: Ordering,
    best: Option<Value>,
    /// The key of `best` when `f` is given.
    best_key: Value,
}

impl Stage for Extreme {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        match &self.f {
            None => {
                if self
                    .best
                    .as_ref()
                    .is_none_or(|b| compare(&v, b) == self.want)
                {
                    self.best = Some(v);
                }
            }
            Some(f) => {
                let key = match cx.call_context().call_with_element(f, v.clone()) {
                    Ok(k) => k,
                    Err(e) => return ignore_skip(Err(e)),
                };
                if self.best.is_none() || compare(&key, &self.best_key) == self.want {
                    self.best = Some(v);
                    self.best_key = key;
                }
            }
        }
        Ok(())
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        match self.best.take() {
            Some(v) => cx.emit(v),
            None => Ok(()),
        }
    }
}

/// `reduce(f)` / `reduce(init, f)` (D48): `acc = f(acc, v)`; emits the final `acc`.
struct Reduce {
    f: Value,
    /// `None` until the first value when no initial value was given.
    acc: Option<Value>,
}

impl Stage for Reduce {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let Some(acc) = self.acc.take() else {
            self.acc = Some(v);
            return Ok(());
        };
        if let Some(r) = int_call(&self.f, &[&acc, &v]) {
            self.acc = Some(r);
            return Ok(());
        }
        let args = [acc, v];
        match cx.call(&self.f, &args) {
            Ok(r) => {
                self.acc = Some(r);
                Ok(())
            }
            Err(e) => {
                // Skipped or failed: the accumulator keeps its value (5.5, 5.6).
                let [acc, _] = args;
                self.acc = Some(acc);
                ignore_skip(Err(e))
            }
        }
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        match self.acc.take() {
            Some(acc) => cx.emit(acc),
            None => Ok(()),
        }
    }
}

/// Feeds the canonical form of a key to `h`, so that values equal by `==` (4.9) hash
/// alike: numbers by numeric value (`1` and `1.0` collide, as do `0.0` and `-0.0`),
/// strings by bytes, times by instant, arrays element-wise. Values equal only by
/// identity or by a user definition hash to their type tag; equality decides.
/// Returns false when the key contains a NaN, so that it equals nothing, itself
/// included.
fn hash_key(v: &Value, h: &mut FxHasher) -> bool {
    match v {
        Value::Nil => h.write_u8(0),
        Value::Bool(b) => h.write_u8(1 + *b as u8),
        Value::Int(i) => {
            h.write_u8(3);
            h.write_i64(*i);
        }
        Value::Float(f) => {
            h.write_u8(3);
            // Exactly an i64: hash as that integer (`num_cmp` compares exactly).
            if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(f)
            {
                h.write_i64(*f as i64);
            } else if f.is_nan() {
                return false;
            } else {
                h.write_u64(f.to_bits());
            }
        }
        Value::Str(s) => {
            h.write_u8(4);
            h.write_usize(s.as_bytes().len());
            h.write(s.as_bytes());
        }
        Value::Time(t) => {
            h.write_u8(5);
            h.write_i128(t.total_nanos());
        }
        Value::Array(a) => {
            h.write_u8(6);
            h.write_usize(a.items.len());
            let mut reflexive = true;
            for x in &a.items {
                reflexive &= hash_key(x, h);
            }
            return reflexive;
        }
        _ => h.write_u8(7),
    }
    true
}

/// The hash of a key, or `None` if it contains a NaN (it can match no other key).
/// `key_hash` of the string `b`, without making it.
#[inline]
fn str_key_hash(b: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write_u8(4);
    h.write_usize(b.len());
    h.write(b);
    h.finish()
}

fn key_hash(v: &Value) -> Option<u64> {
    let mut h = FxHasher::default();
    hash_key(v, &mut h).then(|| h.finish())
}

/// Longest string key kept inline in its [`Key`].
const INLINE: usize = 15;
/// The bytes of `b` (at most `INLINE`) as two little-endian words, zero-padded. Read
/// with whole-word loads, not copied byte by byte into a buffer that is then read as
/// words (a copy the processor cannot forward to the loads: a stall of a dozen
/// cycles on every lookup).
#[inline]
fn short_words(b: &[u8]) -> [u64; 2] {
    let n = b.len();
    debug_assert!(n <= INLINE);
    let word = |s: &[u8]| -> u64 {
        // Up to 8 bytes: overlapping loads of 4 or 2 bytes, then 1.
        let k = s.len();
        if k >= 4 {
            let lo = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64;
            let hi = u32::from_le_bytes([s[k - 4], s[k - 3], s[k - 2], s[k - 1]]) as u64;
            lo | hi << (8 * (k - 4))
        } else if k >= 2 {
            let lo = u16::from_le_bytes([s[0], s[1]]) as u64;
            let hi = u16::from_le_bytes([s[k - 2], s[k - 1]]) as u64;
            lo | hi << (8 * (k - 2))
        } else {
            s.first().map_or(0, |&c| c as u64)
        }
    };
    if n <= 8 {
        [word(b), 0]
    } else {
        let lo = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
        [lo, word(&b[8..])]
    }
}

/// `Key::short_len` of a key that is not a short string.
const NOT_SHORT: u8 = u8::MAX;

/// A `reduce_by_key` key with its precomputed hash; equal by `==` (4.9). A short
/// string key also keeps a copy of its bytes inline, so that comparing it with the
/// key of a map slot reads only that slot, not the string's heap block.
struct Key {
    hash: u64,
    v: Value,
    short_len: u8,
    /// The bytes of a short string key, zero-padded (`short_words`).
    short: [u64; 2],
}

impl Key {
    /// A key to look up the string `b` (at most `INLINE` bytes) with, without making
    /// the string: equal to the key of a string of the same bytes.
    #[inline]
    fn short(hash: u64, b: &[u8]) -> Key {
        let short = short_words(b);
        Key {
            hash,
            v: Value::Nil,
            short_len: b.len() as u8,
            short,
        }
    }

    #[inline]
    fn new(hash: u64, v: Value) -> Key {
        let mut short = [0; 2];
        let mut short_len = NOT_SHORT;
        if let Value::Str(s) = &v {
            let b = s.as_bytes();
            if b.len() <= INLINE {
                short = short_words(b);
                short_len = b.len() as u8;
            }
        }
        Key {
            hash,
            v,
            short_len,
            short,
        }
    }
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Key) -> bool {
        if self.hash != other.hash {
            return false;
        }
        if self.short_len != NOT_SHORT || other.short_len != NOT_SHORT {
            // A short string equals only a string of the same bytes.
            return self.short_len == other.short_len && self.short == other.short;
        }
        match (&self.v, &other.v) {
            (Value::Str(a), Value::Str(b)) => a.as_bytes() == b.as_bytes(),
            (a, b) => equals(a, b),
        }
    }
}

/// Keys containing a NaN never reach the map, so `==` is reflexive on its keys.
impl Eq for Key {}

/// Hashes a [`Key`] by passing its precomputed hash through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The accumulator of one key and when the key first appeared.
struct Acc {
    order: usize,
    acc: Value,
}

/// `reduce_by_key(f)` (D49): keys compared with `==`, results in order of each key's
/// first appearance. Keys are found in O(1) through a hash of their canonical form
/// (`hash_key`); the accumulator lives in the map's own slot, so a lookup touches
/// one bucket.
struct ReduceByKey {
    f: Value,
    map: HashMap<Key, Acc, BuildHasherDefault<KeyHasher>>,
    /// Keys containing a NaN: each is a key of its own.
    unmatchable: Vec<(usize, Value, Value)>,
    seen: usize,
}

impl Stage for ReduceByKey {
    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        cx.each_value(vals, |call, v| self.add(v, call));
    }

    /// Pairs lent by `map{w -> [w, 1]}`: a short string key is looked up by its
    /// bytes (a string is made only for a new key) and a number value added without
    /// making the pair; any other record goes the usual way.
    fn on_records(&mut self, records: &Records<'_>, cx: &mut StageContext) -> bool {
        if records.width() != 2 {
            return false;
        }
        for r in 0..records.len() {
            let done = match (records.text(r, 0), records.num(r, 1)) {
                (Some(key), Some(n)) if key.len() <= INLINE => self.add_short(key, n.value()),
                _ => false,
            };
            if done {
                continue;
            }
            let row = records.row(r);
            let res = self.add(row, &mut cx.call_context());
            if let Err(e) = res {
                cx.report(e);
            }
        }
        true
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let mut all: Vec<(usize, Value, Value)> = std::mem::take(&mut self.unmatchable);
        all.reserve(self.map.len());
        all.extend(self.map.drain().map(|(k, a)| (a.order, k.v, a.acc)));
        all.sort_unstable_by_key(|e| e.0);
        for (_, key, acc) in all {
            cx.emit(Value::array(vec![key, acc]))?;
        }
        Ok(())
    }
}

impl ReduceByKey {
    /// Adds `value` under the short string key `key` (at most `INLINE` bytes) when the
    /// function is an integer program; false (nothing done) when it must be called
    /// the usual way.
    fn add_short(&mut self, key: &[u8], value: Value) -> bool {
        let hash = str_key_hash(key);
        let probe = Key::short(hash, key);
        match self.map.get_mut(&probe) {
            Some(slot) => {
                // The program reads integers only: the key (a string) it never reads
                // can be nil here.
                match int_call(&self.f, &[&Value::Nil, &slot.acc, &value]) {
                    Some(r) => {
                        slot.acc = r;
                        true
                    }
                    None => false,
                }
            }
            None => {
                let order = self.seen;
                self.seen += 1;
                self.map
                    .insert(Key::new(hash, Value::bytes(key)), Acc { order, acc: value });
                true
            }
        }
    }

    fn add(&mut self, v: Value, call: &mut CallContext) -> Result<(), RuntimeError> {
        let pair = match v {
            Value::Array(a) if a.items.len() == 2 => a,
            other => {
                return Err(RuntimeError::new(format!(
                    "reduce_by_key element must be a key-value pair (value: {})",
                    inspect_plain(&other)
                )))
            }
        };
        let (key, value) = match Arc::try_unwrap(pair) {
            Ok(a) => {
                let mut it = a.items.into_iter();
                match (it.next(), it.next()) {
                    (Some(k), Some(v)) => (k, v),
                    _ => unreachable!("a pair has two elements"),
                }
            }
            Err(a) => (a.items[0].clone(), a.items[1].clone()),
        };
        let order = self.seen;
        let Some(hash) = key_hash(&key) else {
            self.seen += 1;
            self.unmatchable.push((order, key, value));
            return Ok(());
        };
        let key = Key::new(hash, key);
        let slot = match self.map.get_mut(&key) {
            Some(slot) => slot,
            None => {
                self.seen += 1;
                self.map.insert(key, Acc { order, acc: value });
                return Ok(());
            }
        };
        if let Some(r) = int_call(&self.f, &[&key.v, &slot.acc, &value]) {
            slot.acc = r;
            return Ok(());
        }
        let args = [key.v, std::mem::take(&mut slot.acc), value];
        match call.call_value(&self.f, &args) {
            Ok(r) => {
                slot.acc = r;
                Ok(())
            }
            Err(err) => {
                // Skipped or failed: the accumulator keeps its value (5.5, 5.6).
                let [_, acc, _] = args;
                slot.acc = acc;
                ignore_skip(Err(err))
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------

/// `name(f)`: exactly one function argument.
fn one_func(name: &str, vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new(name, vals);
    a.arity(1, 1)?;
    Ok(a.func(0)?.clone())
}

/// `name([f])`: an optional function argument.
fn opt_func(name: &str, vals: &[Value]) -> Result<Option<Value>, RuntimeError> {
    let a = Args::new(name, vals);
    a.arity(0, 1)?;
    Ok(if a.is_empty() {
        None
    } else {
        Some(a.func(0)?.clone())
    })
}

fn extreme(name: &str, want: Ordering, vals: &[Value]) -> Result<Value, RuntimeError> {
    Ok(Stream::value(
        Role::Filter,
        Extreme {
            f: opt_func(name, vals)?,
            want,
            best: None,
            best_key: Value::Nil,
        },
    ))
}

pub fn register(r: &Registry) {
    r.define_stage_fn("seq", |_cx, vals| seq(vals));
    r.define_stage_fn("repeat", |_cx, vals| {
        let a = Args::new("repeat", vals);
        a.arity(1, 2)?;
        let left = repetitions(&a, 1)?;
        Ok(Stream::value(
            Role::Producer,
            Repeat {
                v: vals[0].clone(),
                left,
            },
        ))
    });
    r.define_stage_fn("cycle", |_cx, vals| {
        let a = Args::new("cycle", vals);
        a.arity(1, 2)?;
        let array = a.array(0)?.clone();
        let rounds_left = repetitions(&a, 1)?;
        Ok(Stream::value(
            Role::Producer,
            Cycle {
                array,
                next: 0,
                rounds_left,
            },
        ))
    });
    r.define_stage_fn("map", |_cx, vals| {
        let f = one_func("map", vals)?;
        Ok(Stream::value(Role::Filter, MapStage::new(f)))
    });
    r.define_stage_fn("filter", |_cx, vals| {
        let f = one_func("filter", vals)?;
        Ok(Stream::value(
            Role::Filter,
            Filter {
                f,
                sharing: Sharing::default(),
            },
        ))
    });
    r.define_stage_fn("each", |_cx, vals| {
        let f = one_func("each", vals)?;
        Ok(Stream::value(Role::Filter, Each { f }))
    });
    r.define_stage_fn("flatmap", |_cx, vals| {
        let f = one_func("flatmap", vals)?;
        Ok(Stream::value(
            Role::Filter,
            FlatMap {
                f,
                words: Vec::new(),
            },
        ))
    });
    r.define_stage_fn("count", |_cx, vals| {
        Args::new("count", vals).arity(0, 0)?;
        Ok(Stream::value(Role::Filter, Count { n: 0 }))
    });
    r.define_stage_fn("min", |_cx, vals| extreme("min", Ordering::Less, vals));
    r.define_stage_fn("max", |_cx, vals| extreme("max", Ordering::Greater, vals));
    r.define_stage_fn("reduce", |_cx, vals| {
        let a = Args::new("reduce", vals);
        a.arity(1, 2)?;
        let (acc, f) = if a.len() == 1 {
            (None, a.func(0)?)
        } else {
            (Some(vals[0].clone()), a.func(1)?)
        };
        Ok(Stream::value(Role::Filter, Reduce { f: f.clone(), acc }))
    });
    r.define_stage_fn("reduce_by_key", |_cx, vals| {
        let f = one_func("reduce_by_key", vals)?;
        Ok(Stream::value(
            Role::Filter,
            ReduceByKey {
                f,
                map: HashMap::default(),
                unmatchable: Vec::new(),
                seen: 0,
            },
        ))
    });
    r.define_stage_fn("slice", |_cx, vals| {
        let n = window_size(&Args::new("slice", vals))?;
        Ok(Stream::value(
            Role::Filter,
            Slice {
                n,
                buf: Vec::with_capacity(n.min(MAX_RESERVE)),
            },
        ))
    });
    r.define_stage_fn("consec", |_cx, vals| {
        let n = window_size(&Args::new("consec", vals))?;
        Ok(Stream::value(
            Role::Filter,
            Consec {
                n,
                window: VecDeque::with_capacity(n.min(MAX_RESERVE)),
            },
        ))
    });
    r.define_stage_fn("take", |_cx, vals| {
        let left = iteration_count(&Args::new("take", vals))?;
        Ok(Stream::value(Role::Filter, Take { left }))
    });
    r.define_stage_fn("drop", |_cx, vals| {
        let left = iteration_count(&Args::new("drop", vals))?;
        Ok(Stream::value(Role::Filter, DropFirst { left }))
    });
    r.define_stage_fn("uniq", |_cx, vals| {
        let f = opt_func("uniq", vals)?;
        Ok(Stream::value(Role::Filter, Uniq { f, prev: None }))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_counts_keep_the_end() {
        assert_eq!(float_seq_count(0.0, 0.1, 0.3), 4);
        assert_eq!(float_seq_count(0.5, 0.5, 2.0), 4);
        assert_eq!(float_seq_count(5.0, 1.0, 1.0), 0);
        assert_eq!(float_seq_count(10.0, -0.5, 9.0), 3);
        assert_eq!(float_seq_count(0.0, 1.0, f64::NAN), 0);
        assert_eq!(float_seq_count(0.0, 1.0, f64::INFINITY), u64::MAX);
    }

    #[test]
    fn short_keys_are_their_bytes_zero_padded() {
        let text = b"abcdefghijklmnop";
        for n in 0..=INLINE {
            let b = &text[..n];
            let mut padded = [0u8; 16];
            padded[..n].copy_from_slice(b);
            let want = [
                u64::from_le_bytes(padded[..8].try_into().unwrap()),
                u64::from_le_bytes(padded[8..].try_into().unwrap()),
            ];
            assert_eq!(short_words(b), want, "length {n}");
            // A key looked up by its bytes equals the key of the string.
            let hash = str_key_hash(b);
            assert_eq!(Some(hash), key_hash(&Value::bytes(b)));
            assert!(Key::short(hash, b) == Key::new(hash, Value::bytes(b)));
        }
    }

    #[test]
    fn equal_keys_hash_alike() {
        let same = [
            (Value::Int(1), Value::Float(1.0)),
            (Value::Float(0.0), Value::Float(-0.0)),
            (Value::Int(-7), Value::Float(-7.0)),
            (Value::str("word"), Value::str("word")),
            (
                Value::array(vec![Value::Int(2), Value::str("a")]),
                Value::array(vec![Value::Float(2.0), Value::str("a")]),
            ),
            (Value::Int(1 << 62), Value::Float((1u64 << 62) as f64)),
        ];
        for (a, b) in &same {
            assert!(equals(a, b));
            assert_eq!(key_hash(a), key_hash(b));
            assert!(key_hash(a).is_some());
        }
        assert_ne!(key_hash(&Value::Int(1)), key_hash(&Value::Float(1.5)));
        assert_ne!(key_hash(&Value::str("a")), key_hash(&Value::str("b")));
        assert_eq!(key_hash(&Value::Float(f64::NAN)), None);
        assert_eq!(
            key_hash(&Value::array(vec![Value::Int(1), Value::Float(f64::NAN)])),
            None
        );
    }

    #[test]
    fn int_seq_stops_at_the_integer_limit() {
        let mut s = Seq::Int {
            next: i64::MAX - 1,
            step: 1,
            end: None,
            done: false,
        };
        assert!(matches!(s.next_value(), Some(Value::Int(n)) if n == i64::MAX - 1));
        assert!(matches!(s.next_value(), Some(Value::Int(i64::MAX))));
        assert!(s.next_value().is_none());
    }
}
