//! Iteration and stream transformation (6.3).

use crate::builtins::pipe::MapStage;
use crate::ext::{Args, Produce, Registry, Role, RuntimeError, Stage, StageContext, Stream, Value};

const SEQ_BATCH: usize = 1024;

/// `seq` (D44): integers when every argument is an integer, else floats computed as
/// `start + i * step`.
enum Seq {
    Int {
        next: i64,
        step: i64,
        end: Option<i64>,
    },
    Float {
        start: f64,
        step: f64,
        i: u64,
        count: Option<u64>,
    },
}

impl Stage for Seq {
    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        for _ in 0..SEQ_BATCH {
            let v = match self {
                Seq::Int { next, step, end } => {
                    if let Some(end) = end {
                        if (*step > 0 && *next > *end) || (*step < 0 && *next < *end) {
                            return Ok(Produce::Done);
                        }
                    }
                    let v = *next;
                    match next.checked_add(*step) {
                        Some(n) => *next = n,
                        None => {
                            *end = Some(v);
                            *step = if *step > 0 { 1 } else { -1 };
                            *next = v;
                            cx.emit(Value::Int(v))?;
                            return Ok(Produce::Done);
                        }
                    }
                    Value::Int(v)
                }
                Seq::Float {
                    start,
                    step,
                    i,
                    count,
                } => {
                    if count.is_some_and(|c| *i >= c) {
                        return Ok(Produce::Done);
                    }
                    let v = *start + *i as f64 * *step;
                    *i += 1;
                    Value::Float(v)
                }
            };
            cx.emit(v)?;
            if cx.destinations_gone() {
                return Ok(Produce::Done);
            }
        }
        Ok(Produce::More)
    }
}

fn seq(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("seq", vals);
    a.arity(0, 3)?;
    for i in 0..vals.len() {
        a.number(i)?;
    }
    let all_int = vals.iter().all(|v| matches!(v, Value::Int(_)));
    let (start, step, end) = match vals.len() {
        0 => (Value::Int(1), Value::Int(1), None),
        1 => (Value::Int(1), Value::Int(1), Some(vals[0].clone())),
        2 => (vals[0].clone(), Value::Int(1), Some(vals[1].clone())),
        _ => (vals[0].clone(), vals[1].clone(), Some(vals[2].clone())),
    };
    if step.as_f64() == Some(0.0) {
        return Err(RuntimeError::new("seq: step must not be zero"));
    }
    let stage = if all_int {
        Seq::Int {
            next: start.as_int().unwrap_or(1),
            step: step.as_int().unwrap_or(1),
            end: end.and_then(|e| e.as_int()),
        }
    } else {
        let (s, st) = (start.as_f64().unwrap_or(1.0), step.as_f64().unwrap_or(1.0));
        let count = end.and_then(|e| e.as_f64()).map(|e| {
            let n = ((e - s) / st + 1e-9).floor() + 1.0;
            if n.is_nan() || n < 0.0 {
                0
            } else {
                n as u64
            }
        });
        Seq::Float {
            start: s,
            step: st,
            i: 0,
            count,
        }
    };
    Ok(Stream::value(Role::Producer, stage))
}

struct Filter {
    f: Value,
}

impl Stage for Filter {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if cx
            .call_context()
            .call_with_element(&self.f, v.clone())?
            .truthy()
        {
            cx.emit(v)?;
        }
        Ok(())
    }
}

struct Each {
    f: Value,
}

impl Stage for Each {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        cx.call_context().call_with_element(&self.f, v)?;
        Ok(())
    }
}

struct Count {
    n: i64,
}

impl Stage for Count {
    fn on_value(&mut self, _v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.n += 1;
        Ok(())
    }
    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        cx.emit(Value::Int(self.n))
    }
}

pub fn register(r: &Registry) {
    r.define_stage_fn("seq", |_cx, vals| seq(vals));
    r.define_stage_fn("map", |_cx, vals| {
        let a = Args::new("map", vals);
        a.arity(1, 1)?;
        Ok(Stream::value(
            Role::Filter,
            MapStage {
                f: a.func(0)?.clone(),
            },
        ))
    });
    r.define_stage_fn("filter", |_cx, vals| {
        let a = Args::new("filter", vals);
        a.arity(1, 1)?;
        Ok(Stream::value(
            Role::Filter,
            Filter {
                f: a.func(0)?.clone(),
            },
        ))
    });
    r.define_stage_fn("each", |_cx, vals| {
        let a = Args::new("each", vals);
        a.arity(1, 1)?;
        Ok(Stream::value(
            Role::Filter,
            Each {
                f: a.func(0)?.clone(),
            },
        ))
    });
    r.define_stage_fn("count", |_cx, vals| {
        Args::new("count", vals).arity(0, 0)?;
        Ok(Stream::value(Role::Filter, Count { n: 0 }))
    });
}
