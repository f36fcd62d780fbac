//! Combining streams (6.4): `zip` / `&`, `concat` and `chan`.

use std::collections::VecDeque;

use crate::builtins::pipe::to_source;
use crate::ext::{Args, Registry, Role, RuntimeError, Stage, StageContext, Stream, Value};
use crate::runtime::stream::connect;

/// How far one input of `zip`/`concat` may run ahead of the stream's output before
/// the program stops with a clear error instead of buffering without bound (D71).
pub const MAX_AHEAD: usize = 1 << 20;

fn ahead_error(what: &str, input: usize) -> RuntimeError {
    RuntimeError::new(format!(
        "{what}: input {} is more than {MAX_AHEAD} values ahead of the others; \
         the pipeline cannot make progress without unbounded buffering",
        input + 1
    ))
}

/// `zip(s1, s2, ...)` (D52): tuples of the next value of every input; ends when any
/// input ends (a partial tuple is discarded).
struct Zip {
    queues: Vec<VecDeque<Value>>,
    closed: Vec<bool>,
}

impl Zip {
    fn drain(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        while self.queues.iter().all(|q| !q.is_empty()) {
            let tuple: Vec<Value> = self
                .queues
                .iter_mut()
                .map(|q| q.pop_front().unwrap_or_default())
                .collect();
            cx.emit(Value::array(tuple))?;
        }
        if self
            .queues
            .iter()
            .zip(&self.closed)
            .any(|(q, c)| *c && q.is_empty())
        {
            cx.close();
        }
        Ok(())
    }
}

impl Stage for Zip {
    fn on_input(
        &mut self,
        input: usize,
        v: Value,
        cx: &mut StageContext,
    ) -> Result<(), RuntimeError> {
        let q = &mut self.queues[input];
        if q.len() >= MAX_AHEAD {
            cx.close();
            return Err(ahead_error("zip", input));
        }
        q.push_back(v);
        self.drain(cx)
    }

    fn on_input_closed(&mut self, input: usize, cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.closed[input] = true;
        self.drain(cx)
    }
}

/// `concat(s1, s2, ...)`: every value of `s1`, then of `s2`, and so on. Later inputs
/// are buffered while earlier ones are consumed.
struct Concat {
    current: usize,
    pending: Vec<VecDeque<Value>>,
    closed: Vec<bool>,
}

impl Concat {
    fn advance(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        while self.current < self.closed.len() && self.closed[self.current] {
            self.current += 1;
            if let Some(q) = self.pending.get_mut(self.current) {
                for v in q.drain(..) {
                    cx.emit(v)?;
                }
            }
        }
        Ok(())
    }
}

impl Stage for Concat {
    fn on_input(
        &mut self,
        input: usize,
        v: Value,
        cx: &mut StageContext,
    ) -> Result<(), RuntimeError> {
        if input == self.current {
            return cx.emit(v);
        }
        let q = &mut self.pending[input];
        if q.len() >= MAX_AHEAD {
            cx.close();
            return Err(ahead_error("concat", input));
        }
        q.push_back(v);
        Ok(())
    }

    fn on_input_closed(&mut self, input: usize, cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.closed[input] = true;
        self.advance(cx)
    }
}

/// `chan()` (D53): a broadcast hub. Every value goes to every destination connected at
/// that moment; a destination that cannot keep up loses values (the runtime drops
/// them per destination and warns once) rather than stalling the others.
struct Chan;

impl Stage for Chan {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        cx.emit(v)
    }

    fn keeps_open(&self) -> bool {
        true
    }
}

/// Builds a stream fed by every argument, converted like pipe sources.
fn combine(
    cx: &mut crate::ext::CallContext,
    name: &str,
    vals: &[Value],
    stage: impl Stage,
) -> Result<Value, RuntimeError> {
    let a = Args::new(name, vals);
    let mut sources = Vec::with_capacity(vals.len());
    for (i, v) in vals.iter().enumerate() {
        sources.push(to_source(v).map_err(|e| a.error(i, e.message()))?);
    }
    let s = Stream::new(Role::Producer, stage);
    for src in &sources {
        connect(cx.globals(), src, &s);
    }
    Ok(Value::Stream(s))
}

fn zip(cx: &mut crate::ext::CallContext, vals: &[Value]) -> Result<Value, RuntimeError> {
    if vals.is_empty() {
        return Err(RuntimeError::new("zip needs at least one input"));
    }
    let n = vals.len();
    combine(
        cx,
        "zip",
        vals,
        Zip {
            queues: vec![VecDeque::new(); n],
            closed: vec![false; n],
        },
    )
}

pub fn register(r: &Registry) {
    r.define_stage_fn("zip", zip);
    r.define_fn("&", zip);
    r.define_stage_fn("concat", |cx, vals| {
        let n = vals.len();
        combine(
            cx,
            "concat",
            vals,
            Concat {
                current: 0,
                pending: vec![VecDeque::new(); n],
                closed: vec![false; n],
            },
        )
    });
    r.define_stage_fn("chan", |_cx, vals| {
        Args::new("chan", vals).arity(0, 0)?;
        Ok(Stream::value(Role::Filter, Chan))
    });
}
