//! Streams (graph nodes), stages and the concurrent graph runner.
//!
//! Started streams run as tasks on a multi-threaded tokio runtime; a chain of
//! single-input stages is fused into one task (`Task::fuse_chain`) and cuts itself in
//! two threads when both halves are busy (`Task::maybe_split`). Edges between tasks are
//! bounded channels carrying *batches* of values, so synchronisation is paid per batch,
//! not per value, and a fast producer is suspended when its destination is full (D2).
//! A stage is owned by exactly one task, so its callbacks never run concurrently with
//! each other (1.6); different tasks run in parallel on different workers.
//!
//! A task flushes its pending output when the batch is full or as soon as it would
//! otherwise wait (its input is empty, or it is about to block on a read), so a slow
//! trickle of input is delivered at once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use smallvec::{smallvec, SmallVec};
use tokio::sync::{mpsc, Notify};

pub use super::io::{Lent, Lines, Records};
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

    /// A batch of values from input number `input`, to be taken out of `vals` in
    /// order. The default calls [`on_input`](Stage::on_input) for each value, reports
    /// its errors (5.6) and stops early once the stage has closed itself; a stage
    /// that calls a script function per value may override it to keep one
    /// [`CallContext`] for the whole batch (see [`StageContext::each_value`]).
    fn on_batch(&mut self, input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        for v in vals.drain(..) {
            if let Err(e) = self.on_input(input, v, cx) {
                cx.report(e);
            }
            if cx.out.closing {
                break;
            }
        }
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

    /// A consumer whose whole effect is to write each value's printed text and a
    /// newline, in order (`stdout`, a file): a source of lines may then send several
    /// lines as one string that holds them joined by newlines, which writes the same
    /// bytes (see [`Outlet::only_line_writers`]).
    fn writes_lines(&self) -> bool {
        false
    }

    /// Producers of lines (readers): like [`produce`](Stage::produce), but this turn's
    /// lines are first offered to `take`, borrowed from the reader's buffer, and are
    /// emitted as string values only if it returns false. `None` (the default): not a
    /// producer of lines; nothing was done. The runtime uses it when the stage fused
    /// after the reader accepts lines (see [`on_lines`](Stage::on_lines)).
    fn produce_lines(
        &mut self,
        _cx: &mut StageContext,
        _take: &mut dyn FnMut(&Lines<'_>) -> bool,
    ) -> Option<Result<Produce, RuntimeError>> {
        None
    }

    /// Lines lent by the reader this stage reads from (fused into the same task), as
    /// if they had arrived as string values in a batch: handle them all and return
    /// true, or return false having done nothing to receive them as values instead
    /// (the default), after which they always come as values. Lets `map{l ->
    /// l.length()}`, `filter`, `flatmap`, `count` and `stdout` work on lines without
    /// making a string of each.
    fn on_lines(&mut self, _lines: &Lines<'_>, _cx: &mut StageContext) -> bool {
        false
    }

    /// What the stage before lends, with the chance to lend on in turn: a stage that
    /// turns lines into records (`csv`), words (`flatmap{l -> l.split()}`) or pairs
    /// (`map{w -> [w, 1]}`) may hand what it makes to the stage fused after it through
    /// `pass`, before making values of it; `pass` takes it, in order, or refuses it
    /// (returns false), and then the values must be emitted as usual. Returns what
    /// [`on_lines`](Stage::on_lines) and [`on_records`](Stage::on_records) return, to
    /// which the default hands `lent` (ignoring `pass`).
    fn on_lent(
        &mut self,
        lent: Lent<'_>,
        cx: &mut StageContext,
        _pass: &mut dyn FnMut(Lent<'_>) -> bool,
    ) -> bool {
        match lent {
            Lent::Lines(lines) => self.on_lines(lines, cx),
            Lent::Records(records) => self.on_records(records, cx),
        }
    }

    /// Records lent by the stage this stage reads from, as if they had arrived as
    /// values: handle them all and return true, or return false having done nothing
    /// (the default) to receive them as values. Lets `map{row -> row.price *
    /// row.qty}` after `csv()` compute without making a row of each record, and
    /// `reduce_by_key` count words without a pair per word.
    fn on_records(&mut self, _records: &Records<'_>, _cx: &mut StageContext) -> bool {
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

    /// The task mostly waits for sockets and moves bytes. When every stream it
    /// exchanges values with is `io_bound` too (`s | s`, two sockets joined), it runs
    /// on the runtime's I/O thread with them instead of the worker pool, and its
    /// readiness events wake no other thread (see ARCHITECTURE.md, "the I/O
    /// thread"). The task must not block or compute for long.
    fn io_bound(&self) -> bool {
        false
    }
}

/// An asynchronous consumer: it receives batches from its [`Inlet`] until the input
/// ends (or stops early, e.g. when its peer has gone: its sources then drop it, D40).
/// See `extensions/unix` for a socket writer; `tests/api.rs` has a minimal one.
pub trait Sink: Send + 'static {
    /// The consumer's task: take batches from `input` until it returns `None`.
    fn run<'a>(self: Box<Self>, input: &'a mut Inlet) -> BoxFuture<'a>;

    /// As [`Stage::writes_lines`]: the sink writes each value's printed text and a
    /// newline, in order, and does nothing else.
    fn writes_lines(&self) -> bool {
        false
    }

    /// As [`Source::io_bound`].
    fn io_bound(&self) -> bool {
        false
    }
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
    /// The destination stream (to recognise the one fused into the same task).
    to: std::sync::Weak<Stream>,
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
    /// Its behaviour writes lines and does nothing else (`Stage::writes_lines`).
    writes_lines: bool,
    /// Its behaviour is an `io_bound` source or sink.
    io_bound: bool,
    /// Inputs from streams that are not `io_bound`: a sink with any runs on the pool.
    pool_inputs: AtomicU32,
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
        let writes_lines = match &behaviour {
            Behaviour::Stage(st) => st.writes_lines(),
            Behaviour::Sink(sk) => sk.writes_lines(),
            Behaviour::Source(_) => false,
        };
        let io_bound = match &behaviour {
            Behaviour::Stage(_) => false,
            Behaviour::Sink(sk) => sk.io_bound(),
            Behaviour::Source(so) => so.io_bound(),
        };
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
            writes_lines,
            io_bound,
            pool_inputs: AtomicU32::new(0),
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

    /// How many inputs are connected to it.
    pub(crate) fn input_count(&self) -> u32 {
        self.inputs.load(Ordering::Acquire)
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
    /// The I/O thread, started for the first source or sink that is `io_bound`.
    io_thread: Mutex<Option<IoThread>>,
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
    if !src.io_bound {
        dst.pool_inputs.fetch_add(1, Ordering::AcqRel);
    }
    {
        let mut dests = src.dests.lock();
        dests.push(Dest {
            tx,
            input,
            to: Arc::downgrade(dst),
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
            // A producer made of other streams (`zip`, `concat`) runs on its inputs.
            let producer = s.role == Role::Producer && s.inputs.load(Ordering::Acquire) == 0;
            let blocking = producer && stage.is_blocking();
            let mut task = Task::new(g, s, stage, if producer { None } else { rx }, producer);
            task.fuse_chain();
            if blocking {
                let h = handle.clone();
                handle.spawn_blocking(move || h.block_on(task.run()));
            } else {
                handle.spawn(task.run());
            }
        }
        Behaviour::Source(source) => {
            let handle = io_handle_for(g, s).unwrap_or(handle);
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
            let handle = io_handle_for(g, s).unwrap_or(handle);
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

/// Whether a starting source or sink runs on the I/O thread: it is `io_bound` and so
/// is every stream it exchanges values with (`s | s`, a proxy between two sockets).
/// A socket that feeds stages or is fed by them stays on the pool with them: a thread
/// hop each way per read would cost more than the I/O thread saves.
fn on_io_thread(s: &Stream) -> bool {
    if !s.io_bound {
        return false;
    }
    match s.role {
        Role::Producer => {
            let dests = s.dests.lock();
            !dests.is_empty()
                && dests
                    .iter()
                    .all(|d| d.to.upgrade().is_some_and(|t| t.io_bound))
        }
        _ => s.inputs.load(Ordering::Acquire) > 0 && s.pool_inputs.load(Ordering::Acquire) == 0,
    }
}

/// The I/O thread's runtime, if the starting source or sink `s` runs there.
fn io_handle_for(g: &Globals, s: &Stream) -> Option<tokio::runtime::Handle> {
    if !on_io_thread(s) {
        return None;
    }
    let mut io = g.graph.io_thread.lock();
    if io.is_none() {
        match IoThread::start() {
            Ok(t) => *io = Some(t),
            // Without it the task runs on the worker pool, as any other.
            Err(_) => return None,
        }
    }
    io.as_ref().map(|t| t.handle.clone())
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

    /// Whether `s` is the one destination (no reference count is touched: this is
    /// asked on every read of a socket).
    pub(crate) fn sole_destination_is(&mut self, s: &Arc<Stream>) -> bool {
        self.out.refresh_dests();
        match &self.out.dests[..] {
            [d] => std::ptr::eq(d.to.as_ptr(), Arc::as_ptr(s)),
            _ => false,
        }
    }

    /// Whether every destination only writes lines (`Stage::writes_lines`): then
    /// several lines may be sent as one string holding them joined by newlines, with
    /// the same effect and one value instead of one per line.
    pub fn only_line_writers(&mut self) -> bool {
        self.out.refresh_dests();
        !self.out.dests.is_empty()
            && self
                .out
                .dests
                .iter()
                .all(|d| d.to.upgrade().is_some_and(|s| s.writes_lines))
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
    /// The destination fused into the same task (its address), which gets its batches
    /// handed over in memory instead of sent.
    inline: Option<*const Stream>,
}

// SAFETY: `inline` is only compared with addresses, never dereferenced.
unsafe impl Send for Out {}

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
            inline: None,
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
        let _ = self.flush_split(g).await;
    }

    /// Sends the pending batch to every destination reached by channel, waiting for
    /// room (D2), and returns the fused destination's copy with its input number.
    async fn flush_split(&mut self, g: &Globals) -> Option<(u32, Vec<Value>)> {
        self.prune_closed();
        if self.buf.is_empty() {
            return None;
        }
        if self.dests.is_empty() {
            self.buf.clear();
            return None;
        }
        let inline = self.inline.and_then(|p| {
            self.dests
                .iter()
                .position(|d| std::ptr::eq(d.to.as_ptr(), p))
        });
        let mut batch = Some(std::mem::take(&mut self.buf));
        let n = self.dests.len();
        let mut dead = Vec::new();
        let mut handed = None;
        for i in 0..n {
            let b = if i + 1 == n {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            let d = &self.dests[i];
            if Some(i) == inline {
                handed = Some((d.input, b));
                continue;
            }
            let ok = if self.lossy {
                deliver_lossy(g, d, Msg::Batch(d.input, b))
            } else if b.len() <= BATCH {
                d.tx.send(Msg::Batch(d.input, b)).await.is_ok()
            } else {
                // A stage that emits many values per input (`flatmap`) sends them in
                // batches of `BATCH`, so an edge holds a bounded number of values.
                let mut ok = true;
                let mut rest = b.into_iter();
                while ok {
                    let chunk: Vec<Value> = rest.by_ref().take(BATCH).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    ok = d.tx.send(Msg::Batch(d.input, chunk)).await.is_ok();
                }
                ok
            };
            if !ok {
                dead.push(i);
            }
        }
        if !dead.is_empty() {
            self.remove_dests(&dead);
        }
        if handed.is_none() {
            self.buf = Vec::with_capacity(self.reserve);
        }
        handed
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

    /// Tells every destination this input has ended; returns the input number of the
    /// fused destination, which is told by the task instead.
    async fn close(&mut self) -> Option<u32> {
        self.refresh_dests();
        let mut inline = None;
        for d in self.dests.drain(..) {
            if self.inline.is_some_and(|p| std::ptr::eq(d.to.as_ptr(), p)) {
                inline = Some(d.input);
                continue;
            }
            let _ = d.tx.send(Msg::Closed(d.input)).await;
        }
        self.stream.dests.lock().clear();
        inline
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

/// One stream of a task's chain, with its stage and its output.
struct Link {
    stream: Arc<Stream>,
    /// `None` once the stream has finished.
    stage: Option<Box<dyn Stage>>,
    out: Out,
    /// The stream's own input channel. The head of a chain receives its input here;
    /// a fused stream receives its values from the link before it, and this channel
    /// only carries inputs connected to it later (5.11).
    rx: Option<mpsc::Receiver<Msg>>,
    keeps_open: bool,
    done: bool,
    /// Time spent in its callbacks since the task last considered splitting.
    busy: std::time::Duration,
}

/// What `Task::recv_any` found.
enum Recv {
    Msg(usize, Option<Msg>),
    /// A channel's backlog was retried; look again.
    Retry,
    /// No live link has an input channel.
    Nothing,
}

/// Work for a link, in the order it was generated (FIFO keeps every edge in order).
enum Work {
    Batch(usize, u32, Vec<Value>),
    Closed(usize, u32),
}

/// One running task: a chain of streams fused into one task (see `start`). Values
/// pass from one link to the next as batches handed over in memory, with no
/// channel and no thread hop; every link keeps its own output edges to streams
/// outside the chain.
struct Task {
    g: Arc<Globals>,
    /// The top-level frame, fetched once: stage callbacks read globals through it.
    top: Arc<Frame>,
    links: Vec<Link>,
    /// The head produces (its `produce` is called) instead of receiving.
    producer: bool,
    work: std::collections::VecDeque<Work>,
    /// A batch went out over a channel since the last yield.
    sent: bool,
    /// Batches taken by the head, and since when, for `maybe_split`.
    batches: u32,
    window: std::time::Instant,
    /// When a producing head last let other tasks run.
    last_yield: std::time::Instant,
    /// For each link, whether it takes what the link before lends (`lend_lines`):
    /// `None` until asked; after a refusal, never again.
    lent: Vec<Option<bool>>,
}

/// A producing chain runs this long between yields to the runtime. Yielding after
/// every batch woke the idle worker, which stole the task: a busy chain moved
/// between cores thousands of times a second, and ran up to 1.7 times slower.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_micros(500);

impl Task {
    fn new(
        g: &Arc<Globals>,
        s: &Arc<Stream>,
        stage: Box<dyn Stage>,
        rx: Option<mpsc::Receiver<Msg>>,
        producer: bool,
    ) -> Task {
        let keeps_open = stage.keeps_open();
        Task {
            g: g.clone(),
            top: g.top_frame(),
            links: vec![Link {
                stream: s.clone(),
                stage: Some(stage),
                out: Out::new(s, keeps_open),
                rx,
                keeps_open,
                done: false,
                busy: std::time::Duration::ZERO,
            }],
            producer,
            work: std::collections::VecDeque::new(),
            sent: false,
            batches: 0,
            window: std::time::Instant::now(),
            last_yield: std::time::Instant::now(),
            lent: Vec::new(),
        }
    }

    /// Splits the chain in two tasks when both halves are busy enough for running
    /// them on two cores to pay for the hand-over of each batch (the design notes'
    /// "split only where parallelism pays"). Called between head batches, with no
    /// queued work. The cut link keeps its channel, so values already handed over
    /// stay in order and the rest travel by channel.
    fn maybe_split(&mut self) {
        self.batches += 1;
        if self.links.len() < 2
            || self.batches < SPLIT_MIN_BATCHES
            || worker_count() < 2
            || !split_enabled()
        {
            return;
        }
        let wall = self.window.elapsed();
        if wall < SPLIT_WINDOW {
            return;
        }
        let busy: Vec<std::time::Duration> = self.links.iter().map(|l| l.busy).collect();
        let batches = self.batches;
        self.batches = 0;
        self.window = std::time::Instant::now();
        for l in &mut self.links {
            l.busy = std::time::Duration::ZERO;
        }
        let total: std::time::Duration = busy.iter().sum();
        if total * 2 < wall || self.links.iter().any(|l| l.done) || !self.work.is_empty() {
            return;
        }
        // The cut that balances the two halves best.
        let (mut best, mut best_k) = (std::time::Duration::ZERO, 0);
        for k in 1..busy.len() {
            // A lone sink is not worth a thread: every value would cross cores only
            // to be copied into an output buffer.
            if k + 1 == busy.len() && self.links[k].stream.role == Role::Consumer {
                continue;
            }
            // What is lent exists only in the lender's buffers: the borrowers stay.
            if k <= self.lending_depth() {
                continue;
            }
            let a: std::time::Duration = busy[..k].iter().sum();
            let smaller = a.min(total - a);
            if smaller > best {
                (best, best_k) = (smaller, k);
            }
        }
        if best_k == 0 || best * 4 < total || best / batches < SPLIT_MIN_BATCH_COST {
            return;
        }
        let Some(handle) = self.g.graph.handle.get() else {
            return;
        };
        if std::env::var_os("STRM_TRACE_SPLIT").is_some() {
            eprintln!("split at {best_k}: busy {busy:?} over {wall:?}, {batches} batches");
        }
        let tail = self.links.split_off(best_k);
        self.links[best_k - 1].out.inline = None;
        let task = Task {
            g: self.g.clone(),
            top: self.top.clone(),
            links: tail,
            producer: false,
            work: std::collections::VecDeque::new(),
            sent: false,
            batches: 0,
            window: std::time::Instant::now(),
            last_yield: std::time::Instant::now(),
            // Its head is no reader.
            lent: Vec::new(),
        };
        // A thread of its own: as a runtime task, woken by the other half, it would
        // sit in that worker's LIFO slot, which no idle worker may steal, and both
        // halves would keep sharing one core.
        let h = handle.clone();
        handle.spawn_blocking(move || h.block_on(task.run()));
    }

    /// Fuses the stream's single destination into this task while it is a plain
    /// synchronous stage with this stream as its only input, and so on down the
    /// chain: `seq | map | filter | count | stdout` becomes one task.
    fn fuse_chain(&mut self) {
        if self.links[0].keeps_open || !fusion_enabled() {
            return;
        }
        loop {
            let last = self.links.last().expect("a task has a link");
            let next = {
                let dests = last.stream.dests.lock();
                match &dests[..] {
                    [d] => d.to.upgrade(),
                    _ => None,
                }
            };
            let Some(next) = next else { return };
            if next.inputs.load(Ordering::Acquire) != 1 {
                return;
            }
            let stage = {
                let mut behaviour = next.stage.lock();
                match &*behaviour {
                    Some(Behaviour::Stage(st)) if !st.keeps_open() => {}
                    _ => return,
                }
                // Claim it while holding its lock: `start` swaps first, then takes.
                if next.started.swap(true, Ordering::AcqRel) {
                    return;
                }
                match behaviour.take() {
                    Some(Behaviour::Stage(st)) => st,
                    _ => unreachable!("checked above"),
                }
            };
            let rx = next.rx.lock().take();
            next.tx.lock().take();
            self.g.graph.live.fetch_add(1, Ordering::AcqRel);
            if next.role == Role::Producer {
                self.g.graph.live_producers.fetch_add(1, Ordering::AcqRel);
            }
            let last = self.links.last_mut().expect("a task has a link");
            last.out.inline = Some(Arc::as_ptr(&next));
            self.links.push(Link {
                out: Out::new(&next, false),
                stream: next,
                stage: Some(stage),
                rx,
                keeps_open: false,
                done: false,
                busy: std::time::Duration::ZERO,
            });
        }
    }

    fn report(&self, i: usize, e: RuntimeError) {
        if !e.is_skip() {
            self.g.report_error(&self.links[i].stream.locate(e));
        }
    }

    /// Runs a callback of link `i` and reports its error (5.6).
    fn call(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn Stage, &mut StageContext) -> Result<(), RuntimeError>,
    ) {
        let Task { g, top, links, .. } = self;
        let link = &mut links[i];
        let Some(stage) = link.stage.as_mut() else {
            return;
        };
        let mut cx = StageContext {
            g,
            top,
            out: &mut link.out,
        };
        if let Err(e) = f(&mut **stage, &mut cx) {
            self.report(i, e);
        }
    }

    /// One turn of a head that reads lines, lending them to the next link when that
    /// link is fused after it, is the head's only destination and takes lines
    /// (`Stage::on_lines`): no string is made per line. Returns false, having done
    /// nothing, when the turn must go through `produce`.
    fn lend_lines(&mut self, r: &mut Result<Produce, ()>) -> bool {
        if !self.producer || self.links.len() < 2 || !lending_enabled() {
            return false;
        }
        self.lent.resize(self.links.len(), None);
        if self.lent[1] == Some(false) || self.links[1].done || self.should_stop(1) {
            return false;
        }
        if !self.only_to_next(0) {
            return false;
        }
        // How far down the chain lending may go this turn.
        let mut depth = 1;
        while depth + 1 < self.links.len()
            && self.lent[depth + 1] != Some(false)
            && !self.links[depth + 1].done
            && !self.should_stop(depth + 1)
            && self.only_to_next(depth)
        {
            depth += 1;
        }
        let Task { g, top, links, .. } = self;
        let (head, rest) = links.split_at_mut(1);
        let l0 = &mut head[0];
        let Some(reader) = l0.stage.as_mut() else {
            return false;
        };
        let mut cx0 = StageContext {
            g,
            top,
            out: &mut l0.out,
        };
        let mut taken: SmallVec<[Option<(bool, &'static str)>; 4]> = smallvec![None; depth];
        // The time goes to the head (`busy`): the borrowers are never cut from it.
        let produced = reader.produce_lines(&mut cx0, &mut |lines| {
            lend_through(&mut rest[..depth], g, top, Lent::Lines(lines), &mut taken)
        });
        let Some(produced) = produced else {
            self.lent[1] = Some(false);
            return false;
        };
        let trace = std::env::var_os("STRM_TRACE_LINES").is_some();
        for (i, t) in taken.iter().enumerate() {
            if let Some((ok, what)) = *t {
                let slot = &mut self.lent[i + 1];
                if slot.is_none() && trace {
                    let verdict = if ok { "taken" } else { "refused" };
                    eprintln!("{what} lent to stage {}: {verdict}", i + 1);
                }
                *slot = Some(ok);
            }
        }
        match produced {
            Ok(p) => *r = Ok(p),
            Err(e) => {
                *r = Err(());
                self.report(0, e);
            }
        }
        true
    }

    /// How many links after the head take what is lent to them (0: none).
    fn lending_depth(&self) -> usize {
        self.lent
            .iter()
            .skip(1)
            .take_while(|t| **t == Some(true))
            .count()
    }

    /// Whether link `i`'s only destination is the next link, fused, and nothing of
    /// its output is pending.
    fn only_to_next(&mut self, i: usize) -> bool {
        let out = &mut self.links[i].out;
        out.refresh_dests();
        let only_next = match (&out.dests[..], out.inline) {
            ([d], Some(p)) => std::ptr::eq(d.to.as_ptr(), p),
            _ => false,
        };
        only_next && out.buf.is_empty()
    }

    /// Whether link `i` should stop: it closed itself (`take`), or nobody listens.
    fn should_stop(&self, i: usize) -> bool {
        let l = &self.links[i];
        !l.done
            && (l.out.closing
                || (l.stream.orphaned.load(Ordering::Acquire) && l.stream.role != Role::Consumer))
    }

    /// The head would wait for input now: pending output must go out (flush as soon
    /// as the producer would wait).
    fn idle(&self) -> bool {
        self.producer || self.links[0].rx.as_ref().is_none_or(|rx| rx.is_empty())
    }

    /// Sends link `i`'s pending output: the fused next link's part is queued as
    /// work, the rest goes over channels. Output for channels only is held until a
    /// batch is full or the task would wait.
    async fn flush(&mut self, i: usize, force: bool) {
        let idle = self.idle();
        let link = &mut self.links[i];
        if link.out.inline.is_none() && !force && link.out.buf.len() < BATCH && !idle {
            return;
        }
        let had = !link.out.buf.is_empty();
        let inline = link.out.flush_split(&self.g).await;
        match inline {
            Some((input, batch)) => self.work.push_back(Work::Batch(i + 1, input, batch)),
            None => self.sent |= had,
        }
    }

    /// Processes queued work until there is none.
    async fn drain(&mut self) {
        while let Some(w) = self.work.pop_front() {
            match w {
                Work::Batch(i, input, vals) => self.on_batch(i, input, vals).await,
                Work::Closed(i, input) => self.on_closed(i, input).await,
            }
        }
    }

    async fn on_batch(&mut self, i: usize, input: u32, mut vals: Vec<Value>) {
        if self.links[i].done || self.should_stop(i) {
            return;
        }
        {
            let Task { g, top, links, .. } = self;
            let link = &mut links[i];
            if let Some(stage) = link.stage.as_mut() {
                let mut cx = StageContext {
                    g,
                    top,
                    out: &mut link.out,
                };
                let t0 = std::time::Instant::now();
                stage.on_batch(input as usize, &mut vals, &mut cx);
                link.busy += t0.elapsed();
            }
        }
        vals.clear();
        // Give the emptied buffer back to the link that filled it.
        if i > 0 && self.links[i - 1].out.buf.capacity() == 0 {
            self.links[i - 1].out.buf = vals;
        }
        start_pending(&self.g);
        self.flush(i, false).await;
        if self.links[i].out.buf.is_empty() {
            self.links[i].out.prune_closed();
        }
        if self.should_stop(i) {
            self.finish_link(i).await;
        }
    }

    async fn on_closed(&mut self, i: usize, input: u32) {
        if self.links[i].done {
            return;
        }
        self.call(i, |st, cx| st.on_input_closed(input as usize, cx));
        start_pending(&self.g);
        self.flush(i, true).await;
        let link = &self.links[i];
        let open = link.stream.open_inputs.fetch_sub(1, Ordering::AcqRel) - 1;
        let stop = link.out.closing
            || (open == 0
                && (!link.keeps_open || self.g.graph.live_producers.load(Ordering::Acquire) == 0));
        if stop {
            self.finish_link(i).await;
        }
    }

    /// The finishing step of link `i`: `on_close`, the last output, end of stream
    /// to its destinations (the fused next link gets it as queued work).
    async fn finish_link(&mut self, i: usize) {
        if self.links[i].done {
            return;
        }
        self.call(i, |st, cx| st.on_close(cx));
        start_pending(&self.g);
        self.flush(i, true).await;
        let link = &mut self.links[i];
        link.done = true;
        if let Some(rx) = link.rx.as_mut() {
            // Stop accepting input: senders see a closed channel and drop this edge.
            rx.close();
        }
        link.rx = None;
        if let Some(input) = link.out.close().await {
            self.work.push_back(Work::Closed(i + 1, input));
        }
        let link = &mut self.links[i];
        link.stage = None;
        finished(&self.g, &link.stream);
    }

    /// Stops links nobody listens to any more, from the end of the chain up, so that
    /// a satisfied `take` stops the stages before it (5.7).
    async fn stop_orphans(&mut self) {
        for i in (0..self.links.len()).rev() {
            if self.links[i].done {
                continue;
            }
            self.links[i].out.prune_closed();
            if self.should_stop(i) {
                self.finish_link(i).await;
                self.drain().await;
            }
        }
    }

    /// Values that arrived on the channels of fused links, without waiting.
    async fn poll_side_inputs(&mut self) {
        for i in 1..self.links.len() {
            loop {
                let link = &mut self.links[i];
                let msg = match link.rx.as_mut() {
                    Some(rx) if !link.done => rx.try_recv(),
                    _ => break,
                };
                match msg {
                    Ok(m) => {
                        self.on_msg(i, Some(m)).await;
                        self.drain().await;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.links[i].rx = None;
                        break;
                    }
                }
            }
        }
    }

    /// The next message on the channel of any live link. `None` when a channel with
    /// a backlog should retry it (D53) or when no link can receive.
    async fn recv_any(&mut self) -> Recv {
        let head = &self.links[0];
        let retry = head.keeps_open && !head.done && head.out.has_backlog();
        if !self.links.iter().any(|l| !l.done && l.rx.is_some()) {
            return Recv::Nothing;
        }
        let links = &mut self.links;
        let next = std::future::poll_fn(|cx| {
            for (i, l) in links.iter_mut().enumerate() {
                if l.done {
                    continue;
                }
                if let Some(rx) = l.rx.as_mut() {
                    if let std::task::Poll::Ready(m) = rx.poll_recv(cx) {
                        return std::task::Poll::Ready((i, m));
                    }
                }
            }
            std::task::Poll::Pending
        });
        if retry {
            // A channel with values waiting for a slow destination retries them
            // while no new input arrives.
            match tokio::time::timeout(std::time::Duration::from_millis(10), next).await {
                Ok((i, m)) => Recv::Msg(i, m),
                Err(_) => {
                    self.links[0].out.retry_backlog(&self.g);
                    Recv::Retry
                }
            }
        } else {
            let (i, m) = next.await;
            Recv::Msg(i, m)
        }
    }

    async fn on_msg(&mut self, i: usize, msg: Option<Msg>) {
        match msg {
            Some(Msg::Batch(input, vals)) => self.work.push_back(Work::Batch(i, input, vals)),
            Some(Msg::Closed(input)) => self.work.push_back(Work::Closed(i, input)),
            Some(Msg::Wake) => {
                let link = &self.links[i];
                let open = link.stream.open_inputs.load(Ordering::Acquire);
                if open == 0 && self.g.graph.live_producers.load(Ordering::Acquire) == 0 {
                    self.finish_link(i).await;
                }
            }
            None => {
                // Every sender is gone.
                self.links[i].rx = None;
                self.finish_link(i).await;
            }
        }
        self.drain().await;
    }

    async fn run(mut self) {
        let head = &self.links[0];
        if !self.producer
            && head.stream.open_inputs.load(Ordering::Acquire) == 0
            && !head.keeps_open
        {
            // Never fed (D33): nothing will ever arrive.
            self.finish_link(0).await;
            self.drain().await;
        }
        while self.links.iter().any(|l| !l.done) {
            if self.producer && !self.links[0].done {
                if self.links[0].stream.orphaned.load(Ordering::Acquire) {
                    self.finish_link(0).await;
                } else {
                    let mut r: Result<Produce, ()> = Ok(Produce::Done);
                    let t0 = std::time::Instant::now();
                    let lent = self.lend_lines(&mut r);
                    if !lent {
                        self.call(0, |st, cx| {
                            r = Ok(st.produce(cx)?);
                            Ok(())
                        });
                    }
                    self.links[0].busy += t0.elapsed();
                    start_pending(&self.g);
                    self.flush(0, true).await;
                    if lent {
                        // The borrowers' output, in chain order.
                        let depth = (self.lending_depth() + 1).min(self.links.len() - 1);
                        for i in 1..=depth {
                            self.flush(i, false).await;
                            self.drain().await;
                        }
                        for i in 1..=depth {
                            if self.should_stop(i) {
                                self.finish_link(i).await;
                            }
                        }
                    }
                    self.drain().await;
                    if r != Ok(Produce::More) || self.links[0].out.closing {
                        self.finish_link(0).await;
                    }
                }
                self.drain().await;
                self.poll_side_inputs().await;
                self.stop_orphans().await;
                if !self.links[0].done {
                    self.maybe_split();
                    if self.last_yield.elapsed() >= YIELD_EVERY {
                        tokio::task::yield_now().await;
                        self.last_yield = std::time::Instant::now();
                    }
                }
                continue;
            }
            match self.recv_any().await {
                Recv::Msg(i, msg) => self.on_msg(i, msg).await,
                Recv::Retry => continue,
                Recv::Nothing => {
                    // No live link can receive anything: end them all.
                    for i in 0..self.links.len() {
                        self.finish_link(i).await;
                        self.drain().await;
                    }
                }
            }
            self.stop_orphans().await;
            self.maybe_split();
            if self.sent {
                self.sent = false;
                // Let the destination just woken run on another worker.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Head batches and time a task watches before it considers splitting its chain.
const SPLIT_MIN_BATCHES: u32 = 16;
const SPLIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);
/// A half of a chain must cost at least this much per batch to run on its own task
/// (a hand-over costs a few microseconds when the other side sleeps).
const SPLIT_MIN_BATCH_COST: std::time::Duration = std::time::Duration::from_micros(25);

/// Lends `lent` to the first of `links`, which may lend what it makes of it to the
/// next, and so on; `taken[i]` records whether link `i` took it, and what it was.
fn lend_through(
    links: &mut [Link],
    g: &Arc<Globals>,
    top: &Arc<Frame>,
    lent: Lent<'_>,
    taken: &mut [Option<(bool, &'static str)>],
) -> bool {
    let (Some((first, rest)), Some((t0, trest))) =
        (links.split_first_mut(), taken.split_first_mut())
    else {
        return false;
    };
    let Some(stage) = first.stage.as_mut() else {
        return false;
    };
    let mut cx = StageContext {
        g,
        top,
        out: &mut first.out,
    };
    let ok = stage.on_lent(lent, &mut cx, &mut |next| {
        lend_through(&mut *rest, g, top, next, &mut *trest)
    });
    let what = match lent {
        Lent::Lines(_) => "lines",
        Lent::Records(_) => "records",
    };
    *t0 = Some((ok, what));
    ok
}

/// Fused chains split themselves where parallelism pays unless `STRM_SPLIT=0`.
fn split_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("STRM_SPLIT").map_or(true, |v| v.trim() != "0"))
}

/// A reader lends its lines to the stage after it unless `STRM_LEND=0` (for
/// measurement and for tests that compare both ways).
fn lending_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("STRM_LEND").map_or(true, |v| v.trim() != "0"))
}

/// Chains of stages are fused into one task unless `STRM_FUSE=0` (for measurement).
fn fusion_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("STRM_FUSE").map_or(true, |v| v.trim() != "0"))
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

    /// Calls `f` on each value of `vals` on several threads at once, when `f` is a
    /// script function that turns out pure (see `runtime::assist`); `None` when it is
    /// not (nothing happened) or there is no other core.
    pub(crate) fn call_shared(
        &mut self,
        f: &Value,
        vals: &[Value],
    ) -> Option<super::assist::Results> {
        super::assist::call_shared(self.g, self.top, f, vals)
    }

    /// Sends the first `n` values of `vals` (none of them nil) and leaves the rest in
    /// `vals`; whether none is left. A stage that transformed a batch in place up to
    /// some value passes that part on without copying.
    pub fn emit_prefix(&mut self, vals: &mut Vec<Value>, n: usize) -> bool {
        if n == vals.len() {
            self.emit_batch(vals);
            return true;
        }
        let rest = vals.split_off(n);
        self.emit_batch(vals);
        *vals = rest;
        false
    }

    /// Sends every value of `vals` (none of them nil), leaving `vals` empty: a stage
    /// that transforms a batch in place passes it on without copying.
    pub fn emit_batch(&mut self, vals: &mut Vec<Value>) {
        if self.out.buf.is_empty() {
            std::mem::swap(&mut self.out.buf, vals);
        } else {
            self.out.buf.append(vals);
        }
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

    /// Runs `f` on every value taken out of `vals`, in order, with one
    /// [`CallContext`] for the whole batch (script functions it calls emit into this
    /// stage); an error is reported (5.6) and the next value goes on.
    pub fn each_value(
        &mut self,
        vals: &mut Vec<Value>,
        mut f: impl FnMut(&mut CallContext<'_>, Value) -> Result<(), RuntimeError>,
    ) {
        let g = self.g;
        let stream = self.out.stream.clone();
        let mut call = CallContext::with_top(self.g, self.top, Some(&mut *self.out));
        for v in vals.drain(..) {
            if let Err(e) = f(&mut call, v) {
                if !e.is_skip() {
                    g.report_error(&stream.locate(e));
                }
            }
        }
    }

    /// How many values emitted in this callback have not gone out yet.
    pub fn pending(&self) -> usize {
        self.out.buf.len()
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
pub(crate) fn worker_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(read_worker_count)
}

fn read_worker_count() -> usize {
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
pub(crate) const WORKER_STACK_SIZE: usize = 512 << 20;

/// The thread that runs the `io_bound` sources and sinks (sockets), on a runtime of
/// its own: a connection's reader and writer then wake nothing but this thread, as in
/// a single-threaded event loop, while the stages they feed run on the worker pool.
/// Dropping it stops the thread; the tasks still on it are dropped.
struct IoThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoThread {
    fn start() -> std::io::Result<IoThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("streem-io".into())
            .stack_size(IO_STACK_SIZE)
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                rt.shutdown_background();
            })?;
        Ok(IoThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Native stack of the I/O thread: its tasks run no Streem code.
const IO_STACK_SIZE: usize = 8 << 20;

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
    // Out of the lock before its thread is joined.
    let io = g.graph.io_thread.lock().take();
    drop(io);
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
/// It sleeps while nothing waits to be written.
async fn flush_periodically(g: Arc<Globals>) {
    loop {
        tokio::select! {
            _ = g.out.unflushed() => {}
            _ = g.err.unflushed() => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        g.out.flush_if_idle();
        g.err.flush_if_idle();
    }
}
