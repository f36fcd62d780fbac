//! The pipe operator `|` (5.1): converting operands to streams and connecting them.

use std::sync::Arc;

use crate::eval::exec::{int_lambda, int_lambda_runs};
use crate::eval::print::inspect_plain;
use crate::ext::{
    Args, Array, CallContext, Func, Produce, Registry, Role, RuntimeError, Stage, StageContext,
    Stream, Value,
};
use crate::runtime::stream::connect;

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
                Ok(Stream::new(Role::Filter, MapStage { f: v.clone() }))
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
            _ => Ok(Stream::new(Role::Filter, MapStage { f: v.clone() })),
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
}

impl Stage for MapStage {
    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        let f = &self.f;
        if let Some(p) = int_lambda(f) {
            // `{x -> x * 2}` over integers: transformed in place, the batch passed on
            // whole; from the first value it cannot take, the general path goes on.
            let mut results = Vec::new();
            let done = int_lambda_runs(p, vals, |_, r| results.extend_from_slice(r));
            // The integers replaced own nothing: dropping them is free.
            vals.splice(..done, results);
            if done == vals.len() {
                cx.emit_batch(vals);
                return;
            }
            let rest = vals.split_off(done);
            cx.emit_batch(vals);
            *vals = rest;
        }
        cx.each_value(vals, |call, v| {
            let r = call.call_with_element(f, v)?;
            call.emit(r)
        });
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
