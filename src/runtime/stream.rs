//! Streams (graph nodes), stages and the concurrent graph runner.
//!
//! Every started stream is one task on a multi-threaded tokio runtime. Edges are
//! bounded channels carrying *batches* of values, so synchronisation is paid per batch,
//! not per value, and a fast producer is suspended when its destination is full (D2).
//! A stage's callbacks run only inside its own task, so they never run concurrently
//! with each other (1.6); different stages run in parallel on different workers.
//!
//! A task flushes its pending output when the batch is full or as soon as it would
//! otherwise wait (its input is empty, or it is about to block on a read), so a slow
//! trickle of input is delivered at once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::eval::error::RuntimeError;
use crate::eval::func::Frame;
use crate::eval::interp::Globals;
use crate::eval::value::Value;
use crate::ext::{CallContext, Emitter};
use crate::syntax::Span;
type SourceText = crate::syntax::Source;

/// Values per batch before a task sends it on.
pub const BATCH: usize = 256;
/// Batches an edge holds before its source is suspended (D2).
const EDGE_CAPACITY: usize = 16;
/// Batches the input of an asynchronous sink (a socket writer) holds. A channel sends
/// what it receives at once, often one value per batch, and drops for a destination
/// whose input is full: this gives every such destination room for at least 256
/// values (D53). Channels allocate lazily, so idle connections do not pay for it.
const SINK_CAPACITY: usize = EDGE_CAPACITY;
/// Values a channel holds for one destination whose input is full, before it drops
/// values for it (D53: at least 256).
const CHAN_BACKLOG: usize = 256;

/// The role of a stream in the graph (1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Emits values; has no input (`seq`, an array, a server).
    Producer,
    /// Receives values and emits values (`map`, `count()`).
    Filter,
    /// Receives values and emits nothing (`stdout`, a file).
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

/// The behaviour of one stream (spec 9.2 item 6). Callbacks of one stage never run
/// concurrently (1.6), so its state needs no locking.
///
/// A filter or consumer implements [`on_value`](Stage::on_value) (and
/// [`on_close`](Stage::on_close), its finishing step); a producer implements
/// [`produce`](Stage::produce). Values emitted with [`StageContext::emit`] are sent
/// on in batches; the task waits while a destination is full (D2), so emitting never
/// buffers without bound. An error returned from a callback is reported, located at
/// the stream's creation, and the stage goes on (5.6).
///
/// A producer that stops when nobody listens (5.7):
///
/// ```
/// use streem::ext::{Args, Capture, Produce, Role, RuntimeError, Stage, StageContext, Stream, Value};
/// use streem::{Interpreter, RunOptions};
///
/// /// 1, 2, 4, 8, ... forever.
/// struct Powers { next: i64 }
///
/// impl Stage for Powers {
///     fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
///         for _ in 0..256 {
///             if cx.destinations_gone() || self.next > i64::MAX / 2 {
///                 return Ok(Produce::Done);
///             }
///             cx.emit(Value::Int(self.next))?;
///             self.next *= 2;
///         }
///         Ok(Produce::More)       // call me again (other stages run in between)
///     }
/// }
///
/// let interp = Interpreter::new();
/// interp.registry().define_stage_fn("powers", |_cx, vals| {
///     Args::new("powers", vals).arity(0, 0)?;
///     Ok(Stream::value(Role::Producer, Powers { next: 1 }))
/// });
/// let out = Capture::new();
/// interp.set_stdout(out.clone());
/// let status = interp.run_str("-e", "powers() | take(5) | stdout", vec![], &RunOptions::default());
/// assert_eq!((status, out.text()), (0, "1\n2\n4\n8\n16\n".to_string()));
/// ```
///
/// A stage with several inputs (9.2 item 7) overrides [`on_input`](Stage::on_input)
/// and [`on_input_closed`](Stage::on_input_closed):
///
/// ```
/// use streem::ext::{Capture, Role, RuntimeError, Stage, StageContext, Stream, Value};
/// use streem::{Interpreter, RunOptions};
///
/// /// Emits `[input, value]` pairs, and which inputs have ended.
/// struct Tag;
///
/// impl Stage for Tag {
///     fn on_input(&mut self, input: usize, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
///         cx.emit(Value::array(vec![Value::Int(input as i64), v]))
///     }
///     fn on_input_closed(&mut self, input: usize, cx: &mut StageContext) -> Result<(), RuntimeError> {
///         cx.emit(Value::str(&format!("input {input} ended")))
///     }
/// }
///
/// let interp = Interpreter::new();
/// interp.registry().define_stage_fn("tag", |_cx, _vals| Ok(Stream::value(Role::Filter, Tag)));
/// let out = Capture::new();
/// interp.set_stdout(out.clone());
/// let program = "t = tag()\n[\"a\"] | t\n[\"b\"] | t\nt | stdout";
/// assert_eq!(interp.run_str("-e", program, vec![], &RunOptions::default()), 0);
/// let mut lines: Vec<String> = out.text().lines().map(String::from).collect();
/// lines.sort();
/// assert_eq!(lines, ["[0, \"a\"]", "[1, \"b\"]", "input 0 ended", "input 1 ended"]);
/// ```
pub trait Stage: Send + 'static {
    /// Producers: emit some values (a batch of at most a few hundred), then return.
    /// Called again until it returns `Done` or every destination has closed.
    fn produce(&mut self, _cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        Ok(Produce::Done)
    }

    /// Filters and consumers: one incoming value.
    fn on_value(&mut self, _v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// A value from input number `input` (in connection order). Stages with several
    /// inputs (`zip`, `concat`) override this; the default forwards to `on_value`.
    fn on_input(
        &mut self,
        _input: usize,
        v: Value,
        cx: &mut StageContext,
    ) -> Result<(), RuntimeError> {
        self.on_value(v, cx)
    }

    /// Input number `input` has ended (others may still be open).
    fn on_input_closed(
        &mut self,
        _input: usize,
        _cx: &mut StageContext,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The finishing step, when every input has ended (aggregators emit here).
    fn on_close(&mut self, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// A producer whose `produce` may block the thread (reading a file or a pipe):
    /// it runs on a thread of its own instead of a runtime worker.
    fn is_blocking(&self) -> bool {
        false
    }

    /// A channel (D53): stays open when its inputs end, until the program is otherwise
    /// finished.
    fn keeps_open(&self) -> bool {
        false
    }
}

/// Boxed future returned by asynchronous stages.
pub type BoxFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// An asynchronous producer (spec 9.2 item 8): it runs as a task, may wait for I/O
/// readiness without blocking a worker, and emits through its [`Outlet`]. When `run`
/// returns, the runtime sends what is pending and closes the stream.
///
/// The future runs on Streem's tokio runtime (tokio 1), so tokio's sockets, timers
/// and `spawn_blocking` work inside it; awaiting readiness and then emitting is the
/// "emit and re-arm" of the original.
///
/// ```
/// use std::time::Duration;
/// use streem::ext::{BoxFuture, Capture, Outlet, Source, Stream, Value};
/// use streem::{Interpreter, RunOptions};
///
/// /// Emits a value every millisecond, n times.
/// struct Ticker(i64);
///
/// impl Source for Ticker {
///     fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
///         Box::pin(async move {
///             for i in 1..=self.0 {
///                 tokio::time::sleep(Duration::from_millis(1)).await; // no thread held
///                 out.emit(Value::Int(i));
///                 out.flush().await;                 // waits for room downstream (D2)
///                 if out.destinations_gone() {
///                     return;
///                 }
///             }
///         })
///     }
/// }
///
/// let interp = Interpreter::new();
/// interp.registry().define_stage_fn("ticker", |_cx, _vals| {
///     Ok(Value::Stream(Stream::source(Ticker(3))))
/// });
/// let out = Capture::new();
/// interp.set_stdout(out.clone());
/// assert_eq!(interp.run_str("-e", "ticker() | stdout", vec![], &RunOptions::default()), 0);
/// assert_eq!(out.text(), "1\n2\n3\n");
/// ```
pub trait Source: Send + 'static {
    /// The producer's task: emit through `out` until done, then return.
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a>;
}

/// An asynchronous consumer: it receives batches from its [`Inlet`] until the input
/// ends (or stops early, e.g. when its peer has gone: its sources then drop it, D40).
/// See `extensions/unix` for a socket writer; `tests/api.rs` has a minimal one.
pub trait Sink: Send + 'static {
    /// The consumer's task: take batches from `input` until it returns `None`.
    fn run<'a>(self: Box<Self>, input: &'a mut Inlet) -> BoxFuture<'a>;
}

enum Behaviour {
    Stage(Box<dyn Stage>),
    Source(Box<dyn Source>),
    Sink(Box<dyn Sink>),
}

enum Msg {
    Batch(u32, Vec<Value>),
    Closed(u32),
    /// Re-check whether a channel may close.
    Wake,
}

/// An output edge: where a stream sends its batches.
#[derive(Clone)]
struct Dest {
    tx: mpsc::Sender<Msg>,
    input: u32,
    /// Values a channel could not deliver yet (D53); used only by channels.
    backlog: Arc<Mutex<Backlog>>,
}

#[derive(Default)]
struct Backlog {
    batches: std::collections::VecDeque<Vec<Value>>,
    values: usize,
    warned: bool,
}

/// A node of the graph.
pub struct Stream {
    /// Producer, filter or consumer.
    pub role: Role,
    /// Taken by the task when the stream starts.
    stage: Mutex<Option<Behaviour>>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    /// The sending side of this stream's input. Strong until the stream starts (so
    /// connections made while building keep it open), then only a weak reference is
    /// kept: the task ends when every input has sent `Closed`.
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// `None` for an asynchronous [`Source`], which takes no input: it gets no
    /// channel at all (net.rs: two per idle connection would cost ~1.3 KB each).
    weak_tx: Option<mpsc::WeakSender<Msg>>,
    dests: Mutex<Vec<Dest>>,
    /// Bumped whenever `dests` changes, so a running task re-reads it.
    dests_version: AtomicU64,
    inputs: AtomicU32,
    open_inputs: AtomicU32,
    started: AtomicBool,
    finished: AtomicBool,
    /// Set when every destination has gone (a producer stops, 5.7).
    orphaned: AtomicBool,
    /// Where the stream was created; errors of builtin stages are reported here.
    location: OnceLock<(Arc<SourceText>, Span)>,
}

impl Stream {
    /// A stream driven by a synchronous [`Stage`].
    pub fn new(role: Role, stage: impl Stage) -> Arc<Stream> {
        let capacity = if stage.keeps_open() {
            1024
        } else {
            EDGE_CAPACITY
        };
        Stream::with_behaviour(role, Behaviour::Stage(Box::new(stage)), capacity)
    }

    /// A producer driven by an asynchronous [`Source`].
    pub fn source(source: impl Source) -> Arc<Stream> {
        Stream::with_behaviour(
            Role::Producer,
            Behaviour::Source(Box::new(source)),
            EDGE_CAPACITY,
        )
    }

    /// A consumer driven by an asynchronous [`Sink`].
    pub fn sink(sink: impl Sink) -> Arc<Stream> {
        Stream::with_behaviour(
            Role::Consumer,
            Behaviour::Sink(Box::new(sink)),
            SINK_CAPACITY,
        )
    }

    fn with_behaviour(role: Role, behaviour: Behaviour, capacity: usize) -> Arc<Stream> {
        // A `Source` has no input, so no input channel (see `weak_tx`).
        let (tx, rx) = if matches!(behaviour, Behaviour::Source(_)) {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(capacity);
            (Some(tx), Some(rx))
        };
        Arc::new(Stream {
            role,
            stage: Mutex::new(Some(behaviour)),
            rx: Mutex::new(rx),
            weak_tx: tx.as_ref().map(mpsc::Sender::downgrade),
            tx: Mutex::new(tx),
            dests: Mutex::new(Vec::new()),
            dests_version: AtomicU64::new(0),
            inputs: AtomicU32::new(0),
            open_inputs: AtomicU32::new(0),
            started: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            location: OnceLock::new(),
        })
    }

    /// A stream value driven by a synchronous [`Stage`] (what a stage constructor returns).
    pub fn value(role: Role, stage: impl Stage) -> Value {
        Value::Stream(Stream::new(role, stage))
    }

    /// Records where the stream was created (first call wins).
    pub fn set_location(&self, source: &Arc<SourceText>, span: Span) {
        let _ = self.location.set((source.clone(), span));
    }

    /// The stream has finished (its finishing step has run).
    pub fn is_closed(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    fn locate(&self, e: RuntimeError) -> RuntimeError {
        match self.location.get() {
            Some((src, span)) => e.at(src, *span),
            None => e,
        }
    }

    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        if let Some(tx) = self.tx.lock().as_ref() {
            return Some(tx.clone());
        }
        self.weak_tx.as_ref()?.upgrade()
    }
}

/// The graph: streams waiting to start, and the count of running tasks.
#[derive(Default)]
pub struct Graph {
    pending: Mutex<Vec<Arc<Stream>>>,
    has_pending: AtomicBool,
    running: AtomicBool,
    handle: OnceLock<tokio::runtime::Handle>,
    live: AtomicUsize,
    live_producers: AtomicUsize,
    idle: Notify,
    channels: Mutex<Vec<Arc<Stream>>>,
}

impl Graph {
    /// Wakes the graph runner to re-check whether it should stop (`exit`).
    pub(crate) fn wake(&self) {
        self.idle.notify_one();
    }
}

/// Connects `src` to `dst` (both already converted to streams, 5.1).
pub fn connect(g: &Arc<Globals>, src: &Arc<Stream>, dst: &Arc<Stream>) {
    let Some(tx) = dst.sender() else {
        // The destination has already finished: nothing will be delivered.
        return;
    };
    let input = dst.inputs.fetch_add(1, Ordering::AcqRel);
    dst.open_inputs.fetch_add(1, Ordering::AcqRel);
    {
        let mut dests = src.dests.lock();
        dests.push(Dest {
            tx,
            input,
            backlog: Arc::default(),
        });
        src.dests_version.fetch_add(1, Ordering::Release);
    }
    // Streams start when the code that connects them is done (the script, a stage
    // callback, a REPL input), never halfway through building a pipeline: a stage
    // started before its destination is connected would emit into nothing.
    let graph = &g.graph;
    let mut pending = graph.pending.lock();
    pending.push(src.clone());
    pending.push(dst.clone());
    graph.has_pending.store(true, Ordering::Release);
}

/// Starts the streams connected since the last call (while the graph runs).
pub fn start_pending(g: &Arc<Globals>) {
    let graph = &g.graph;
    if !graph.has_pending.load(Ordering::Acquire) || !graph.running.load(Ordering::Acquire) {
        return;
    }
    let pending = {
        let mut p = graph.pending.lock();
        graph.has_pending.store(false, Ordering::Release);
        std::mem::take(&mut *p)
    };
    for s in &pending {
        start(g, s);
    }
}

/// Starts a stream's task (once).
fn start(g: &Arc<Globals>, s: &Arc<Stream>) {
    if s.started.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(handle) = g.graph.handle.get().cloned() else {
        return;
    };
    let Some(behaviour) = s.stage.lock().take() else {
        return;
    };
    let rx = s.rx.lock().take();
    // Drop the strong self-sender: from now on the inputs' `Closed` messages end it.
    // A channel keeps it, so that it can be woken to re-check whether it may close.
    let keeps_open = matches!(&behaviour, Behaviour::Stage(st) if st.keeps_open());
    if !keeps_open {
        s.tx.lock().take();
    } else {
        g.graph.channels.lock().push(s.clone());
    }
    g.graph.live.fetch_add(1, Ordering::AcqRel);
    if s.role == Role::Producer {
        g.graph.live_producers.fetch_add(1, Ordering::AcqRel);
    }
    match behaviour {
        Behaviour::Stage(stage) => {
            let task = Task::new(g, s, stage);
            // A producer made of other streams (`zip`, `concat`) runs on its inputs.
            if s.role == Role::Producer && s.inputs.load(Ordering::Acquire) == 0 {
                if task.stage.is_blocking() {
                    let h = handle.clone();
                    handle.spawn_blocking(move || h.block_on(task.run_producer()));
                } else {
                    handle.spawn(task.run_producer());
                }
            } else {
                let rx = rx.expect("a stream's receiver is taken only once");
                handle.spawn(task.run_consumer(rx, keeps_open));
            }
        }
        Behaviour::Source(source) => {
            let mut outlet = Outlet {
                g: g.clone(),
                out: Out {
                    reserve: 0,
                    ..Out::new(s, false)
                },
            };
            handle.spawn(async move {
                source.run(&mut outlet).await;
                outlet.out.flush(&outlet.g).await;
                outlet.out.close().await;
                finished(&outlet.g, &outlet.out.stream);
            });
        }
        Behaviour::Sink(sink) => {
            let rx = rx.expect("a stream's receiver is taken only once");
            let mut inlet = Inlet {
                g: g.clone(),
                stream: s.clone(),
                rx,
                done: false,
            };
            handle.spawn(async move {
                sink.run(&mut inlet).await;
                inlet.rx.close();
                finished(&inlet.g, &inlet.stream);
            });
        }
    }
}

/// Bookkeeping when a stream's task ends.
fn finished(g: &Arc<Globals>, s: &Arc<Stream>) {
    s.finished.store(true, Ordering::Release);
    let graph = &g.graph;
    if s.role == Role::Producer && graph.live_producers.fetch_sub(1, Ordering::AcqRel) == 1 {
        wake_channels(g);
    }
    if graph.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        graph.idle.notify_one();
    }
}

/// The output side of an asynchronous [`Source`].
pub struct Outlet {
    g: Arc<Globals>,
    out: Out,
}

impl Outlet {
    /// The interpreter's shared state (output writers, error reporting).
    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    /// Queues a value (nil is not sent); `flush` sends it.
    pub fn emit(&mut self, v: Value) {
        if !v.is_nil() {
            self.out.buf.push(v);
        }
    }

    /// Values queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.out.buf.len()
    }

    /// Sends the queued values, waiting for room downstream (D2).
    pub async fn flush(&mut self) {
        self.out.flush(&self.g).await;
    }

    /// Every destination has closed: stop producing (5.7).
    pub fn destinations_gone(&self) -> bool {
        self.out.stream.orphaned.load(Ordering::Acquire)
    }

    /// Reports an error located at the stream's creation.
    pub fn report(&self, e: RuntimeError) {
        if !e.is_skip() {
            self.g.report_error(&self.out.stream.locate(e));
        }
    }

    /// Connects two streams (5.11); they start when this is called again or when
    /// `start_connected` is called.
    pub fn connect(&self, src: &Arc<Stream>, dst: &Arc<Stream>) {
        connect(&self.g, src, dst)
    }

    /// Starts the streams connected so far (a source that builds pipelines calls this
    /// once a pipeline is complete).
    pub fn start_connected(&self) {
        start_pending(&self.g)
    }
}

/// The input side of an asynchronous [`Sink`].
pub struct Inlet {
    g: Arc<Globals>,
    stream: Arc<Stream>,
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

impl Inlet {
    /// The interpreter's shared state (output writers, error reporting).
    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    /// The next batch of values; `None` once every input has ended.
    pub async fn next(&mut self) -> Option<Vec<Value>> {
        if self.done {
            return None;
        }
        if self.stream.open_inputs.load(Ordering::Acquire) == 0 {
            self.done = true;
            return None;
        }
        loop {
            match self.rx.recv().await {
                Some(Msg::Batch(_, vals)) => return Some(vals),
                Some(Msg::Closed(_)) => {
                    if self.stream.open_inputs.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.done = true;
                        return None;
                    }
                }
                Some(Msg::Wake) => {}
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    /// Whether a batch is waiting right now (a writer flushes when none is).
    pub fn has_pending(&self) -> bool {
        !self.rx.is_empty()
    }

    /// The printed form of a value (4.12), as a writer needs it.
    pub fn display(&self, v: &Value, buf: &mut Vec<u8>) -> Result<(), RuntimeError> {
        match v {
            Value::Str(s) => {
                buf.extend_from_slice(s.as_bytes());
                Ok(())
            }
            _ => {
                let top = self.g.top_frame();
                CallContext::with_top(&self.g, &top, None).write_display(buf, v)
            }
        }
    }

    /// Reports an error located at the stream's creation.
    pub fn report(&self, e: RuntimeError) {
        if !e.is_skip() {
            self.g.report_error(&self.stream.locate(e));
        }
    }
}

/// One running stream.
struct Task {
    g: Arc<Globals>,
    /// The top-level frame, fetched once: stage callbacks read globals through it.
    top: Arc<Frame>,
    stream: Arc<Stream>,
    stage: Box<dyn Stage>,
    out: Out,
}

/// Pending output of a task and its destinations.
struct Out {
    stream: Arc<Stream>,
    buf: Vec<Value>,
    dests: Vec<Dest>,
    version: u64,
    /// Set by `StageContext::close`.
    closing: bool,
    /// Per-destination drop policy of channels (D53).
    lossy: bool,
    warned: Vec<bool>,
    /// Capacity of a fresh batch buffer: `BATCH` for stage tasks, 0 for an async
    /// `Source` (an idle socket reader then holds no 4 KB buffer, net.rs / D2).
    reserve: usize,
}

impl Emitter for Out {
    fn emit(&mut self, v: Value) -> Result<(), RuntimeError> {
        if !v.is_nil() {
            self.buf.push(v);
        }
        Ok(())
    }
}

impl Out {
    fn new(stream: &Arc<Stream>, lossy: bool) -> Out {
        Out {
            stream: stream.clone(),
            buf: Vec::new(),
            dests: Vec::new(),
            version: u64::MAX,
            closing: false,
            lossy,
            warned: Vec::new(),
            reserve: BATCH,
        }
    }

    fn refresh_dests(&mut self) {
        let v = self.stream.dests_version.load(Ordering::Acquire);
        if v != self.version {
            self.dests = self.stream.dests.lock().clone();
            self.warned.resize(self.dests.len(), false);
            self.version = v;
        }
    }

    /// Drops destinations that have closed (e.g. a satisfied `take`), so that a stage
    /// that has stopped emitting still learns that nobody listens (5.7).
    fn prune_closed(&mut self) {
        self.refresh_dests();
        let dead: Vec<usize> = (0..self.dests.len())
            .filter(|&i| self.dests[i].tx.is_closed())
            .collect();
        if !dead.is_empty() {
            self.remove_dests(&dead);
        }
    }

    /// Sends the pending batch to every destination, waiting for room (D2).
    async fn flush(&mut self, g: &Globals) {
        self.prune_closed();
        if self.buf.is_empty() {
            return;
        }
        if self.dests.is_empty() {
            self.buf.clear();
            return;
        }
        let mut batch = Some(std::mem::take(&mut self.buf));
        let n = self.dests.len();
        let mut dead = Vec::new();
        for i in 0..n {
            let b = if i + 1 == n {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            let d = &self.dests[i];
            let msg = Msg::Batch(d.input, b);
            let ok = if self.lossy {
                deliver_lossy(g, d, msg)
            } else {
                d.tx.send(msg).await.is_ok()
            };
            if !ok {
                dead.push(i);
            }
        }
        if !dead.is_empty() {
            self.remove_dests(&dead);
        }
        self.buf = Vec::with_capacity(self.reserve);
    }

    fn remove_dests(&mut self, dead: &[usize]) {
        let mut shared = self.stream.dests.lock();
        for &i in dead.iter().rev() {
            let tx = self.dests.remove(i);
            self.warned.remove(i);
            shared.retain(|d| !(d.tx.same_channel(&tx.tx) && d.input == tx.input));
        }
        self.version = self.stream.dests_version.fetch_add(1, Ordering::AcqRel) + 1;
        if shared.is_empty() {
            self.stream.orphaned.store(true, Ordering::Release);
        }
    }

    /// Tells every destination this input has ended.
    async fn close(&mut self) {
        self.refresh_dests();
        for d in self.dests.drain(..) {
            let _ = d.tx.send(Msg::Closed(d.input)).await;
        }
        self.stream.dests.lock().clear();
    }
}

/// A channel's send to one destination (D53): never waits. What does not fit waits
/// in the destination's backlog (up to `CHAN_BACKLOG` values), beyond which values
/// are dropped for that destination only, with one warning. Returns false when the
/// destination has closed.
fn deliver_lossy(g: &Globals, d: &Dest, msg: Msg) -> bool {
    let mut backlog = d.backlog.lock();
    // Older values first.
    while let Some(b) = backlog.batches.pop_front() {
        let n = b.len();
        match d.tx.try_send(Msg::Batch(d.input, b)) {
            Ok(()) => backlog.values -= n,
            Err(mpsc::error::TrySendError::Full(Msg::Batch(_, b))) => {
                backlog.batches.push_front(b);
                break;
            }
            Err(mpsc::error::TrySendError::Full(_)) => break,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    let Msg::Batch(_, batch) = msg else {
        return true;
    };
    if batch.is_empty() {
        return true;
    }
    if backlog.batches.is_empty() {
        match d.tx.try_send(Msg::Batch(d.input, batch)) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(Msg::Batch(_, b))) => {
                return keep_or_drop(g, &mut backlog, b)
            }
            Err(mpsc::error::TrySendError::Full(_)) => return true,
        }
    }
    keep_or_drop(g, &mut backlog, batch)
}

fn keep_or_drop(g: &Globals, backlog: &mut Backlog, batch: Vec<Value>) -> bool {
    if backlog.values + batch.len() <= CHAN_BACKLOG {
        backlog.values += batch.len();
        backlog.batches.push_back(batch);
    } else if !backlog.warned {
        backlog.warned = true;
        g.report_warning("chan: a destination is not keeping up; values are dropped for it");
    }
    true
}

impl Out {
    /// Whether a channel still holds values for a destination.
    fn has_backlog(&self) -> bool {
        self.lossy
            && self
                .dests
                .iter()
                .any(|d| !d.backlog.lock().batches.is_empty())
    }

    /// Retries a channel's backlogs.
    fn retry_backlog(&mut self, g: &Globals) {
        for d in &self.dests {
            deliver_lossy(g, d, Msg::Batch(d.input, Vec::new()));
        }
    }
}

impl Task {
    fn new(g: &Arc<Globals>, s: &Arc<Stream>, stage: Box<dyn Stage>) -> Task {
        let lossy = stage.keeps_open();
        Task {
            g: g.clone(),
            top: g.top_frame(),
            stream: s.clone(),
            stage,
            out: Out::new(s, lossy),
        }
    }

    fn context(&mut self) -> (&mut Box<dyn Stage>, StageContext<'_>) {
        (
            &mut self.stage,
            StageContext {
                g: &self.g,
                top: &self.top,
                out: &mut self.out,
            },
        )
    }

    fn report(&self, e: RuntimeError) {
        if !e.is_skip() {
            self.g.report_error(&self.stream.locate(e));
        }
    }

    async fn run_producer(mut self) {
        loop {
            if self.stream.orphaned.load(Ordering::Acquire) {
                break;
            }
            let r = {
                let (stage, mut cx) = self.context();
                stage.produce(&mut cx)
            };
            start_pending(&self.g);
            self.out.flush(&self.g).await;
            match r {
                Ok(Produce::More) if !self.out.closing => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    self.report(e);
                    break;
                }
            }
        }
        self.finish().await;
    }

    async fn run_consumer(mut self, mut rx: mpsc::Receiver<Msg>, keeps_open: bool) {
        let mut open = self.stream.open_inputs.load(Ordering::Acquire);
        if open == 0 && !keeps_open {
            // Never fed (D33): nothing will ever arrive.
            self.finish().await;
            return;
        }
        'recv: loop {
            let msg = if keeps_open && self.out.has_backlog() {
                // A channel with values waiting for a slow destination retries them
                // while no new input arrives.
                match tokio::time::timeout(std::time::Duration::from_millis(10), rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        self.out.retry_backlog(&self.g);
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(msg) = msg else { break };
            match msg {
                Msg::Batch(input, vals) => {
                    if self.out.closing || self.stream.orphaned.load(Ordering::Acquire) {
                        continue;
                    }
                    for v in vals {
                        let r = {
                            let (stage, mut cx) = self.context();
                            stage.on_input(input as usize, v, &mut cx)
                        };
                        if let Err(e) = r {
                            self.report(e);
                        }
                        if self.out.closing {
                            break;
                        }
                    }
                    start_pending(&self.g);
                    if self.out.buf.is_empty() {
                        self.out.prune_closed();
                    }
                    if self.out.buf.len() >= BATCH || rx.is_empty() {
                        self.out.flush(&self.g).await;
                        // Let the destination just woken run on another worker.
                        tokio::task::yield_now().await;
                    }
                    if self.out.closing
                        || (self.stream.orphaned.load(Ordering::Acquire) && self.role_stops())
                    {
                        break 'recv;
                    }
                }
                Msg::Closed(input) => {
                    let r = {
                        let (stage, mut cx) = self.context();
                        stage.on_input_closed(input as usize, &mut cx)
                    };
                    if let Err(e) = r {
                        self.report(e);
                    }
                    start_pending(&self.g);
                    self.out.flush(&self.g).await;
                    open = self.stream.open_inputs.fetch_sub(1, Ordering::AcqRel) - 1;
                    if self.out.closing || (open == 0 && !keeps_open) {
                        break 'recv;
                    }
                    if keeps_open
                        && open == 0
                        && self.g.graph.live_producers.load(Ordering::Acquire) == 0
                    {
                        break 'recv;
                    }
                }
                Msg::Wake => {
                    let open = self.stream.open_inputs.load(Ordering::Acquire);
                    if open == 0 && self.g.graph.live_producers.load(Ordering::Acquire) == 0 {
                        break 'recv;
                    }
                }
            }
        }
        // Stop accepting input: senders see a closed channel and drop this destination.
        rx.close();
        self.finish().await;
    }

    /// Filters stop when nobody listens; consumers never have destinations.
    fn role_stops(&self) -> bool {
        self.stream.role != Role::Consumer
    }

    async fn finish(mut self) {
        let r = {
            let (stage, mut cx) = self.context();
            stage.on_close(&mut cx)
        };
        if let Err(e) = r {
            self.report(e);
        }
        start_pending(&self.g);
        self.out.flush(&self.g).await;
        self.out.close().await;
        drop(self.stage);
        finished(&self.g, &self.stream);
    }
}

/// Lets channels re-check whether the program is otherwise finished.
fn wake_channels(g: &Globals) {
    for c in g.graph.channels.lock().iter() {
        if let Some(tx) = c.tx.lock().as_ref() {
            let _ = tx.try_send(Msg::Wake);
        }
    }
}

/// The context a stage callback runs in: emitting goes to the stream's destinations.
pub struct StageContext<'t> {
    pub(crate) g: &'t Arc<Globals>,
    top: &'t Arc<Frame>,
    out: &'t mut Out,
}

impl<'t> StageContext<'t> {
    /// The interpreter's shared state (output writers, error reporting).
    pub fn globals(&self) -> &Arc<Globals> {
        self.g
    }

    /// Sends a value to every destination (nil is not sent). Values are batched; the
    /// task delivers them, waiting for room, when the callback returns.
    pub fn emit(&mut self, v: Value) -> Result<(), RuntimeError> {
        self.out.emit(v)
    }

    /// A context for calling script functions from this stage; their `emit`s go to
    /// this stage's destinations.
    pub fn call_context(&mut self) -> CallContext<'_> {
        CallContext::with_top(self.g, self.top, Some(&mut *self.out))
    }

    /// Calls `f` with `args` in this stage.
    pub fn call(&mut self, f: &Value, args: &[Value]) -> Result<Value, RuntimeError> {
        self.call_context().call_value(f, args)
    }

    /// Every destination has closed: a producer should stop (5.7).
    pub fn destinations_gone(&self) -> bool {
        self.out.stream.orphaned.load(Ordering::Acquire)
    }

    /// Closes this stream after the current callback (e.g. `take` is satisfied): its
    /// finishing step runs and its destinations see end of stream.
    pub fn close(&mut self) {
        self.out.closing = true;
    }

    /// Connects two streams while the graph runs (5.11).
    pub fn connect(&self, src: &Arc<Stream>, dst: &Arc<Stream>) {
        connect(self.g, src, dst)
    }

    /// Reports a stage error (5.6), located at the stream's creation if it has none.
    pub fn report(&self, e: RuntimeError) {
        if !e.is_skip() {
            self.g.report_error(&self.out.stream.locate(e));
        }
    }
}

/// Worker threads: `STRM_WORKER_MAX`, or the available parallelism.
fn worker_count() -> usize {
    std::env::var("STRM_WORKER_MAX")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Native stack of runtime threads (stage callbacks may recurse deeply, D72).
const WORKER_STACK_SIZE: usize = 512 << 20;

fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_count())
        .thread_stack_size(WORKER_STACK_SIZE)
        .thread_name("streem-worker")
        .enable_all()
        .build()
}

/// Runs the graph until no stream can produce any more data (5.8).
pub fn run_graph(g: &Arc<Globals>) {
    if g.graph.pending.lock().is_empty() {
        return;
    }
    let rt = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            g.report_error(&RuntimeError::new(format!("cannot start the runtime: {e}")));
            return;
        }
    };
    let _ = g.graph.handle.set(rt.handle().clone());
    g.graph.running.store(true, Ordering::Release);
    let pending = std::mem::take(&mut *g.graph.pending.lock());
    g.graph.has_pending.store(false, Ordering::Release);
    // Count every task before any starts, so that the first to finish cannot see
    // the graph as idle while others are still being started.
    g.graph.live.fetch_add(1, Ordering::AcqRel);
    for s in &pending {
        start(g, s);
    }
    let g2 = g.clone();
    rt.block_on(async move {
        let flusher = tokio::spawn(flush_periodically(g2.clone()));
        if g2.graph.live.fetch_sub(1, Ordering::AcqRel) != 1 {
            loop {
                let notified = g2.graph.idle.notified();
                if g2.graph.live.load(Ordering::Acquire) == 0 || g2.exit_requested().is_some() {
                    break;
                }
                wake_channels(&g2);
                notified.await;
            }
        }
        flusher.abort();
    });
    g.graph.running.store(false, Ordering::Release);
    rt.shutdown_background();
}

/// Starts the runtime for an interactive session: from now on every connection
/// starts its streams at once (5.11), and they run while the session waits for input.
pub fn start_background(g: &Arc<Globals>) -> std::io::Result<tokio::runtime::Runtime> {
    let rt = build_runtime()?;
    let _ = g.graph.handle.set(rt.handle().clone());
    g.graph.running.store(true, Ordering::Release);
    rt.spawn(flush_periodically(g.clone()));
    let pending = std::mem::take(&mut *g.graph.pending.lock());
    for s in &pending {
        start(g, s);
    }
    Ok(rt)
}

/// D39: output produced while the graph waits is written within a few milliseconds.
async fn flush_periodically(g: Arc<Globals>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
    loop {
        tick.tick().await;
        g.out.flush_if_idle();
        g.err.flush_if_idle();
    }
}
