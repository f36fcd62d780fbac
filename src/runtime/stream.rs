//! Streams (graph nodes), stages and the graph runner.
//!
//! This runner is deliberately simple: values are pushed synchronously from a
//! producer through the chain of stages it feeds (so memory is bounded without any
//! queue: a producer never gets ahead of its slowest consumer), and producers are run
//! round-robin on the script thread. The concurrent runtime replaces only what sits
//! behind [`Graph`], [`connect`] and [`StageContext`]; the [`Stage`] trait that
//! builtins implement stays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::eval::error::RuntimeError;
use crate::eval::interp::Globals;
use crate::eval::value::Value;
use crate::ext::{CallContext, Emitter};
use crate::syntax::{Source, Span};

/// The role of a stream in the graph (1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer,
    Filter,
    Consumer,
}

/// What a producer's `produce` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produce {
    /// More values may come: call `produce` again.
    More,
    /// Exhausted: the stream closes.
    Done,
}

/// The behaviour of one stream. Callbacks of one stage never run concurrently (1.6),
/// so its state needs no locking.
pub trait Stage: Send + 'static {
    /// Producers: emit some values (a batch), then return. Called repeatedly until it
    /// returns `Done` or every destination has closed.
    fn produce(&mut self, _cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        Ok(Produce::Done)
    }

    /// Filters and consumers: one incoming value.
    fn on_value(&mut self, _v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The finishing step, when every input has ended (aggregators emit here).
    fn on_close(&mut self, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        Ok(())
    }
}

struct State {
    /// Taken out while a callback runs.
    stage: Option<Box<dyn Stage>>,
    dests: Vec<Arc<Stream>>,
    sources: usize,
    open_sources: usize,
    closed: bool,
}

/// A node of the graph.
pub struct Stream {
    pub role: Role,
    state: Mutex<State>,
    /// Set when all destinations have gone (a producer stops, 5.7).
    orphaned: AtomicBool,
    scheduled: AtomicBool,
    /// Where the stream was created; errors of builtin stages are reported here.
    location: OnceLock<(Arc<Source>, Span)>,
}

impl Stream {
    pub fn new(role: Role, stage: impl Stage) -> Arc<Stream> {
        Arc::new(Stream {
            role,
            state: Mutex::new(State {
                stage: Some(Box::new(stage)),
                dests: Vec::new(),
                sources: 0,
                open_sources: 0,
                closed: false,
            }),
            orphaned: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            location: OnceLock::new(),
        })
    }

    pub fn value(role: Role, stage: impl Stage) -> Value {
        Value::Stream(Stream::new(role, stage))
    }

    /// Records where the stream was created (first call wins).
    pub fn set_location(&self, source: &Arc<Source>, span: Span) {
        let _ = self.location.set((source.clone(), span));
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    fn locate(&self, e: RuntimeError) -> RuntimeError {
        match self.location.get() {
            Some((src, span)) => e.at(src, *span),
            None => e,
        }
    }
}

/// The streams waiting to be started.
#[derive(Default)]
pub struct Graph {
    pending: Mutex<Vec<Arc<Stream>>>,
}

/// Connects `src` to `dst` (both already converted to streams, 5.1).
pub fn connect(g: &Globals, src: &Arc<Stream>, dst: &Arc<Stream>) {
    src.state.lock().dests.push(dst.clone());
    {
        let mut d = dst.state.lock();
        d.sources += 1;
        d.open_sources += 1;
    }
    if src.role == Role::Producer && !src.scheduled.swap(true, Ordering::AcqRel) {
        g.graph.pending.lock().push(src.clone());
    }
}

/// The context a stage callback runs in: emitting goes to the stream's destinations.
pub struct StageContext<'g> {
    pub(crate) g: &'g Arc<Globals>,
    out: Out,
}

struct Out {
    stream: Arc<Stream>,
    g: Arc<Globals>,
}

impl Emitter for Out {
    fn emit(&mut self, v: Value) -> Result<(), RuntimeError> {
        if v.is_nil() {
            return Ok(());
        }
        push(&self.g, &self.stream, v);
        Ok(())
    }
}

impl<'g> StageContext<'g> {
    pub fn globals(&self) -> &Arc<Globals> {
        self.g
    }

    /// Sends a value to every destination (nil is not sent).
    pub fn emit(&mut self, v: Value) -> Result<(), RuntimeError> {
        self.out.emit(v)
    }

    /// A context for calling script functions from this stage; their `emit`s go to
    /// this stage's destinations.
    pub fn call_context(&mut self) -> CallContext<'_> {
        CallContext::new(self.g, Some(&mut self.out))
    }

    /// Calls `f` with `args` in this stage.
    pub fn call(&mut self, f: &Value, args: &[Value]) -> Result<Value, RuntimeError> {
        self.call_context().call_value(f, args)
    }

    /// Every destination has closed: a producer should stop.
    pub fn destinations_gone(&self) -> bool {
        self.out.stream.orphaned.load(Ordering::Relaxed)
    }

    /// Closes this stream after the current callback (e.g. `take` is satisfied).
    pub fn close(&mut self) {
        self.out.stream.orphaned.store(true, Ordering::Relaxed);
        self.out.stream.state.lock().open_sources = usize::MAX / 2;
        let s = self.out.stream.clone();
        close_dests(&self.out.g, &s);
    }

    /// Connects two streams while the graph runs (5.11).
    pub fn connect(&self, src: &Arc<Stream>, dst: &Arc<Stream>) {
        connect(self.g, src, dst)
    }

    /// Reports a stage error (5.6) located at the stream's creation if it has none.
    pub fn report(&self, e: RuntimeError) {
        if !e.is_skip() {
            self.g.report_error(&self.out.stream.locate(e));
        }
    }
}

/// Delivers `v` to every live destination of `src`.
fn push(g: &Arc<Globals>, src: &Arc<Stream>, v: Value) {
    let dests: smallvec::SmallVec<[Arc<Stream>; 4]> = {
        let st = src.state.lock();
        st.dests.iter().cloned().collect()
    };
    let mut any_live = false;
    let n = dests.len();
    for d in dests.iter() {
        if deliver(g, d, v.clone()) {
            any_live = true;
        }
    }
    if !any_live && n > 0 {
        src.orphaned.store(true, Ordering::Relaxed);
    }
}

/// Runs a destination's `on_value`. Returns false when the destination is closed.
fn deliver(g: &Arc<Globals>, dst: &Arc<Stream>, v: Value) -> bool {
    let stage = {
        let mut st = dst.state.lock();
        if st.closed || dst.orphaned.load(Ordering::Relaxed) && dst.role != Role::Consumer {
            return false;
        }
        match st.stage.take() {
            Some(s) => s,
            None => {
                drop(st);
                g.report_error(&dst.locate(RuntimeError::new(
                    "a stream cannot feed itself (cycle in the pipeline)",
                )));
                return false;
            }
        }
    };
    let mut stage = stage;
    let mut cx = StageContext {
        g,
        out: Out {
            stream: dst.clone(),
            g: g.clone(),
        },
    };
    if let Err(e) = stage.on_value(v, &mut cx) {
        cx.report(e);
    }
    dst.state.lock().stage = Some(stage);
    !dst.is_closed() && (!dst.orphaned.load(Ordering::Relaxed) || dst.role == Role::Consumer)
}

/// One input of `dst` has ended; when it was the last, finish and close it.
fn source_ended(g: &Arc<Globals>, dst: &Arc<Stream>) {
    let finish = {
        let mut st = dst.state.lock();
        if st.closed {
            return;
        }
        st.open_sources = st.open_sources.saturating_sub(1);
        st.open_sources == 0
    };
    if finish {
        finish_stream(g, dst);
    }
}

/// Runs the finishing step of a stream, then closes its destinations' inputs.
fn finish_stream(g: &Arc<Globals>, s: &Arc<Stream>) {
    let stage = {
        let mut st = s.state.lock();
        if st.closed {
            return;
        }
        st.stage.take()
    };
    if let Some(mut stage) = stage {
        let mut cx = StageContext {
            g,
            out: Out {
                stream: s.clone(),
                g: g.clone(),
            },
        };
        if let Err(e) = stage.on_close(&mut cx) {
            cx.report(e);
        }
        s.state.lock().stage = Some(stage);
    }
    close_dests(g, s);
}

fn close_dests(g: &Arc<Globals>, s: &Arc<Stream>) {
    let dests = {
        let mut st = s.state.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        std::mem::take(&mut st.dests)
    };
    for d in dests {
        source_ended(g, &d);
    }
}

/// Runs the graph until no stream can produce any more data (5.8).
pub fn run_graph(g: &Arc<Globals>) {
    let mut active: Vec<Arc<Stream>> = Vec::new();
    loop {
        active.append(&mut g.graph.pending.lock());
        if active.is_empty() {
            break;
        }
        let mut i = 0;
        while i < active.len() {
            let s = active[i].clone();
            let done = run_producer(g, &s);
            if done {
                active.swap_remove(i);
            } else {
                i += 1;
            }
            active.append(&mut g.graph.pending.lock());
        }
    }
}

/// Gives a producer one turn. Returns true when it has finished.
fn run_producer(g: &Arc<Globals>, s: &Arc<Stream>) -> bool {
    if s.orphaned.load(Ordering::Relaxed) || s.is_closed() {
        finish_stream(g, s);
        return true;
    }
    let stage = s.state.lock().stage.take();
    let Some(mut stage) = stage else {
        return true;
    };
    let mut cx = StageContext {
        g,
        out: Out {
            stream: s.clone(),
            g: g.clone(),
        },
    };
    let r = stage.produce(&mut cx);
    s.state.lock().stage = Some(stage);
    let done = match r {
        Ok(Produce::More) => s.orphaned.load(Ordering::Relaxed),
        Ok(Produce::Done) => true,
        Err(e) => {
            cx.report(e);
            true
        }
    };
    if done {
        finish_stream(g, s);
    }
    done
}
