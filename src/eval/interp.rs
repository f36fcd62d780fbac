//! The interpreter: global state, and running a program from source to exit status.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use super::compile;
use super::error::RuntimeError;
use super::exec::{finish_top, Act, Locals};
use super::func::Frame;
use super::ir::FnBody;
use super::namespace::{Namespace, Namespaces};
use super::symbol::Sym;
use super::value::Value;
use crate::ext::{CallContext, Registry};
use crate::runtime::io::Output;
use crate::runtime::stream::Graph;
use crate::syntax::diagnostic::{render, Diagnostic};
use crate::syntax::{parse, Source};

/// Options of one run (the command-line flags, and whether the interpreter owns the
/// process).
///
/// `RunOptions::default()` is what an embedder wants: no extra warnings, and the
/// host keeps its process (see [`handle_signals`](RunOptions::handle_signals)).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `-w`: extra warnings.
    pub warnings: bool,
    /// `-v`: dump the parse tree to standard error before running.
    pub dump_ast: bool,
    /// The interpreter owns the process, as the command line does (it sets this):
    /// SIGINT/SIGTERM flush output, restore the terminal and exit the process with
    /// 130/143 (D66), and `exit(n)` flushes output and ends the process at once
    /// (5.8, D37).
    ///
    /// An embedder leaves it `false`: signals stay the host's business (extensions
    /// may still subscribe to them, [`Registry::on_signal`]), and `exit(n)` ends only
    /// the run: the script and every stage stop, nothing more is written to the
    /// output sinks, and [`Interpreter::run`] returns `n`.
    pub handle_signals: bool,
}

/// Times the same error at the same place is shown before repeats are only counted.
const REPEATS_SHOWN: u64 = 10;

/// State shared by everything that runs in one interpreter: the prelude, namespaces,
/// the top-level frame, the output writers and the stream graph.
///
/// Native code reaches it through [`CallContext::globals`] and
/// [`StageContext::globals`](crate::ext::StageContext::globals); what it offers
/// publicly is the ordered output writers ([`out`](Globals::out),
/// [`err`](Globals::err)) and error reporting.
pub struct Globals {
    pub(crate) namespaces: Namespaces,
    prelude: RwLock<FxHashMap<Sym, Value>>,
    pub(crate) ns_number: Arc<Namespace>,
    pub(crate) ns_string: Arc<Namespace>,
    pub(crate) ns_array: Arc<Namespace>,
    pub(crate) ns_time: Arc<Namespace>,
    top: RwLock<Arc<Frame>>,
    /// The one ordered writer for standard output (D39). Write whole lines with
    /// [`Output::write_line`] so that concurrent stages never interleave mid-line.
    pub out: Arc<Output>,
    /// The one ordered writer for standard error.
    pub err: Arc<Output>,
    pub(crate) graph: Graph,
    errors_reported: AtomicUsize,
    /// How often each (location, message) has been reported: after
    /// `REPEATS_SHOWN`, repeats are counted and summarised at exit (D36).
    repeats: parking_lot::Mutex<FxHashMap<String, (u64, String)>>,
    color: AtomicBool,
    /// `exit(n)` ends the process (the command line) rather than the run.
    exit_process: AtomicBool,
    /// The status of the first `exit(n)` of an embedded run.
    exit_status: OnceLock<i32>,
    /// An interpreter runs one program.
    started: AtomicBool,
    pub(crate) signals: SignalHub,
}

impl Globals {
    fn new() -> Arc<Globals> {
        let namespaces = Namespaces::default();
        let ns_number = namespaces.open("number", true);
        let ns_string = namespaces.open("string", true);
        let ns_array = namespaces.open("array", true);
        let ns_time = namespaces.open("time", true);
        Arc::new(Globals {
            namespaces,
            prelude: RwLock::new(FxHashMap::default()),
            ns_number,
            ns_string,
            ns_array,
            ns_time,
            top: RwLock::new(Frame::permanent(0, None)),
            out: Output::stdout(),
            err: Output::stderr(),
            graph: Graph::default(),
            errors_reported: AtomicUsize::new(0),
            repeats: parking_lot::Mutex::new(FxHashMap::default()),
            color: AtomicBool::new(
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            ),
            exit_process: AtomicBool::new(false),
            exit_status: OnceLock::new(),
            started: AtomicBool::new(false),
            signals: SignalHub::default(),
        })
    }

    fn color(&self) -> bool {
        self.color.load(Ordering::Relaxed)
    }

    /// `exit(status)` (5.8, D37): flushes output, then either ends the process (when
    /// the interpreter owns it, [`RunOptions::handle_signals`]) or records the status,
    /// stops further output and returns the error that unwinds the caller to the
    /// interpreter. Native code that wants to end the program calls this and returns
    /// the error it gets.
    pub fn request_exit(&self, status: i32) -> RuntimeError {
        if self.exit_process.load(Ordering::Relaxed) {
            self.flush_all();
            crate::builtins::graph_bar::restore_terminal();
            std::process::exit(status);
        }
        if self.exit_status.set(status).is_ok() {
            self.flush_all();
            // Nothing is written after exit: later output goes nowhere.
            self.out.redirect(Box::new(std::io::sink()));
            self.err.redirect(Box::new(std::io::sink()));
            self.graph.wake();
        }
        RuntimeError::exit(*self.exit_status.get().unwrap_or(&status))
    }

    /// The status of `exit(n)` once it has been called in an embedded run.
    pub fn exit_requested(&self) -> Option<i32> {
        self.exit_status.get().copied()
    }

    pub(crate) fn prelude_get(&self, name: Sym) -> Option<Value> {
        self.prelude.read().get(&name).cloned()
    }

    pub(crate) fn prelude_define(&self, name: Sym, v: Value) {
        self.prelude.write().insert(name, v);
    }

    pub(crate) fn prelude_names(&self) -> Vec<String> {
        self.prelude
            .read()
            .keys()
            .map(|s| s.name().to_owned())
            .collect()
    }

    pub(crate) fn prelude_has(&self, name: &str) -> bool {
        self.prelude.read().contains_key(&Sym::new(name))
    }

    pub(crate) fn top_frame(&self) -> Arc<Frame> {
        self.top.read().clone()
    }

    /// Reports a runtime error on standard error; the exit status becomes 1 (D36).
    /// `skip` and `exit` are not errors and are not reported.
    pub fn report_error(&self, e: &RuntimeError) {
        if e.is_skip() || e.exit_status().is_some() {
            return;
        }
        self.errors_reported.fetch_add(1, Ordering::Relaxed);
        // D36: the same error at the same place is shown a few times, then counted.
        let key = {
            let msg = e.message();
            let msg = msg.split(" (value: ").next().unwrap_or(msg);
            match e.location() {
                Some((src, span)) => format!("{}: {msg}", src.location(*span)),
                None => msg.to_string(),
            }
        };
        {
            let mut repeats = self.repeats.lock();
            let entry = repeats.entry(key.clone()).or_insert((0, key));
            entry.0 += 1;
            if entry.0 > REPEATS_SHOWN {
                return;
            }
        }
        self.out.flush();
        self.err.write_raw(e.render(self.color()).as_bytes());
        self.err.flush();
    }

    /// Prints how many repeated errors were not shown.
    pub(crate) fn report_suppressed(&self) {
        let mut lines: Vec<(u64, String)> = self
            .repeats
            .lock()
            .values()
            .filter(|(n, _)| *n > REPEATS_SHOWN)
            .map(|(n, what)| (*n - REPEATS_SHOWN, what.clone()))
            .collect();
        lines.sort_by(|a, b| a.1.cmp(&b.1));
        for (n, what) in lines {
            let d = Diagnostic::warning(
                format!("{n} more errors like this were not shown: {what}"),
                None,
            );
            self.err
                .write_raw(render(None, &d, self.color()).as_bytes());
        }
        self.err.flush();
    }

    /// Reports a warning (does not change the exit status).
    pub fn report_warning(&self, message: &str) {
        self.out.flush();
        let d = Diagnostic::warning(message, None);
        self.err
            .write_raw(render(None, &d, self.color()).as_bytes());
        self.err.flush();
    }

    /// How many errors have been reported so far.
    pub fn errors_reported(&self) -> usize {
        self.errors_reported.load(Ordering::Relaxed)
    }

    /// Flushes standard output and error (at exit, D37).
    pub fn flush_all(&self) {
        self.out.flush();
        self.err.flush();
    }
}

/// A Streem interpreter with the standard library registered: the entry point for
/// the command line and for embedders (spec 9.2 item 10).
///
/// An interpreter runs one program: create it, register extensions through
/// [`registry`](Interpreter::registry), direct its output with
/// [`set_stdout`](Interpreter::set_stdout)/[`set_stderr`](Interpreter::set_stderr),
/// then [`run_str`](Interpreter::run_str), [`run_file`](Interpreter::run_file) or
/// [`run`](Interpreter::run) it and get the exit status.
///
/// ```
/// use streem::ext::Capture;
/// use streem::{Interpreter, RunOptions};
///
/// let interp = Interpreter::new();
/// let (out, err) = (Capture::new(), Capture::new());
/// interp.set_stdout(out.clone());
/// interp.set_stderr(err.clone());
/// let status = interp.run_str(
///     "hello.strm",
///     "print(ARGV); seq(3) | map{x -> x * 10} | stdout; exit(4)",
///     vec!["a".into(), "b".into()],
///     &RunOptions::default(),
/// );
/// assert_eq!(status, 4);
/// assert_eq!(out.text(), "[\"a\", \"b\"]\n");
/// assert_eq!(err.text(), "");
/// ```
///
/// The status is 0 on success, 1 after a syntax error, a top-level runtime error or
/// any reported stage error (5.8, D36), `n` after `exit(n)`, and 70 when the program
/// could not be started (or the interpreter has already run one).
pub struct Interpreter {
    g: Arc<Globals>,
}

impl Default for Interpreter {
    fn default() -> Self {
        Self::new()
    }
}

/// Native stack for the thread that runs the script (D72: deep recursion must not
/// overflow; only the pages actually used are committed).
pub(crate) const SCRIPT_STACK_SIZE: usize = 1 << 30;

impl Interpreter {
    /// A fresh interpreter with the whole standard library registered. Its output
    /// goes to the process's standard output and error until redirected.
    pub fn new() -> Interpreter {
        let g = Globals::new();
        let interp = Interpreter { g };
        crate::builtins::register_all(&interp.registry());
        interp
    }

    /// The registry through which builtins and extensions install names. Register
    /// extensions before running a program.
    ///
    /// ```
    /// use streem::ext::{Args, Capture, Value};
    /// use streem::{Interpreter, RunOptions};
    ///
    /// let interp = Interpreter::new();
    /// interp.registry().define_fn("twice", |_cx, vals| {
    ///     let a = Args::new("twice", vals);
    ///     a.arity(1, 1)?;
    ///     Ok(Value::Int(a.int(0)? * 2))
    /// });
    /// let out = Capture::new();
    /// interp.set_stdout(out.clone());
    /// assert_eq!(interp.run_str("-e", "print(twice(21))", vec![], &RunOptions::default()), 0);
    /// assert_eq!(out.text(), "42\n");
    /// ```
    pub fn registry(&self) -> Registry {
        Registry { g: self.g.clone() }
    }

    /// The interpreter's shared state (output writers, error reporting).
    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    /// Directs the program's standard output (`print`, `| stdout`) to `sink`. Output
    /// is written in whole lines, flushed at exit and whenever the program waits.
    pub fn set_stdout(&self, sink: impl Write + Send + 'static) {
        self.g.out.redirect(Box::new(sink));
    }

    /// Directs the program's standard error (`| stderr`, error messages and warnings)
    /// to `sink`. Messages are then written without colour.
    pub fn set_stderr(&self, sink: impl Write + Send + 'static) {
        self.g.err.redirect(Box::new(sink));
        self.g.color.store(false, Ordering::Relaxed);
    }

    fn compile(&self, source: &Arc<Source>) -> Result<Arc<super::ir::FnCode>, Vec<Diagnostic>> {
        let program = parse(&source.text).map_err(|e| vec![e.to_diagnostic()])?;
        compile::compile_program(&program, source.clone(), &self.g)
    }

    /// Lexes, parses and compiles without running (`streem -c`); returns the rendered
    /// errors (empty when the program is well formed).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use streem::{Interpreter, Source};
    ///
    /// let interp = Interpreter::new();
    /// assert!(interp.check(Arc::new(Source::new("ok.strm", "print(1)")), false).is_empty());
    /// let errors = interp.check(Arc::new(Source::new("bad.strm", "print(1")), false);
    /// assert!(errors[0].starts_with("bad.strm:1:"));
    /// ```
    pub fn check(&self, source: Arc<Source>, color: bool) -> Vec<String> {
        match self.compile(&source) {
            Ok(_) => Vec::new(),
            Err(diags) => diags
                .iter()
                .map(|d| render(Some(&source), d, color))
                .collect(),
        }
    }

    /// Runs program text; `name` names it in messages (`-e` for the command line's
    /// `-e`). See [`run`](Interpreter::run).
    pub fn run_str(&self, name: &str, text: &str, argv: Vec<String>, opts: &RunOptions) -> i32 {
        self.run(Arc::new(Source::new(name, text)), argv, opts)
    }

    /// Runs a program file (named in messages by `path` as given). An unreadable
    /// file is reported on the interpreter's standard error with status 1. See
    /// [`run`](Interpreter::run).
    pub fn run_file(&self, path: impl AsRef<Path>, argv: Vec<String>, opts: &RunOptions) -> i32 {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(text) => self.run(
                Arc::new(Source::new(path.display().to_string(), text)),
                argv,
                opts,
            ),
            Err(e) => {
                let reason = crate::builtins::io::os_reason(&e);
                self.g.err.write_raw(
                    format!("streem: cannot read {}: {reason}\n", path.display()).as_bytes(),
                );
                self.g.flush_all();
                1
            }
        }
    }

    /// Compiles and runs a program with the given `ARGV`: the top-level script on a
    /// thread of its own, then the stream graph until no stream can produce any more
    /// data (5.8). Reports its errors on the interpreter's standard error and returns
    /// the exit status (see [`Interpreter`]).
    ///
    /// `exit(n)` ends the process when `opts.handle_signals` is set (the command line);
    /// otherwise it ends only this run, and `run` returns `n`
    /// ([`RunOptions::handle_signals`]). An interpreter runs one program: a second call
    /// returns 70.
    pub fn run(&self, source: Arc<Source>, argv: Vec<String>, opts: &RunOptions) -> i32 {
        let g = self.g.clone();
        if g.started.swap(true, Ordering::AcqRel) {
            g.err
                .write_raw(b"streem: an interpreter runs one program; create a new one\n");
            g.flush_all();
            return 70;
        }
        let color = g.color();
        g.exit_process.store(opts.handle_signals, Ordering::Relaxed);
        if opts.handle_signals {
            install_signal_handlers(&g);
        }
        if opts.dump_ast {
            if let Ok(p) = parse(&source.text) {
                g.err.write_raw(format!("{:#?}\n", p).as_bytes());
            }
        }
        g.prelude_define(
            Sym::new("ARGV"),
            Value::array(argv.iter().map(|a| Value::str(a)).collect()),
        );
        let code = match self.compile(&source) {
            Ok(c) => c,
            Err(diags) => {
                for d in &diags {
                    g.err.write_raw(render(Some(&source), d, color).as_bytes());
                }
                g.flush_all();
                return 1;
            }
        };
        let frame = Frame::permanent(code.frame.nslots as usize, None);
        *g.top.write() = frame.clone();

        let worker = {
            let g = g.clone();
            std::thread::Builder::new()
                .name("streem-main".into())
                .stack_size(SCRIPT_STACK_SIZE)
                .spawn(move || run_script(&g, &code, &frame))
        };
        let status = match worker {
            Ok(h) => h.join().unwrap_or(70),
            Err(e) => {
                g.err
                    .write_raw(format!("streem: cannot start: {e}\n").as_bytes());
                70
            }
        };
        g.flush_all();
        status
    }
}

/// What evaluating one input of a [`Session`] gave.
pub enum Outcome {
    /// The input is an unfinished statement: read another line and try again.
    Incomplete,
    /// It ran. `value` is the value of the last statement if that was an expression.
    Done {
        /// The value of the last statement, if it was an expression.
        value: Option<Value>,
    },
    /// It failed; the rendered diagnostics.
    Error(String),
}

/// An interactive session (the REPL): each input is compiled against the bindings of
/// the earlier ones (which it may rebind) and runs at once; the streams it connects
/// start immediately and run in the background.
///
/// A session owns the process like the command line: `exit(n)` in an input ends the
/// process.
///
/// ```
/// use streem::{Interpreter, Outcome};
///
/// let mut s = Interpreter::new().session(vec![]).unwrap();
/// assert!(matches!(s.eval("-", "x = 20"), Outcome::Done { value: None }));
/// match s.eval("-", "[x + 1, \"s\"]") {
///     Outcome::Done { value: Some(v) } => assert_eq!(s.inspect(&v), "[21, \"s\"]"),
///     _ => unreachable!(),
/// }
/// assert!(matches!(s.eval("-", "print(1,"), Outcome::Incomplete));
/// ```
pub struct Session {
    g: Arc<Globals>,
    top: compile::TopLevel,
    _runtime: tokio::runtime::Runtime,
}

impl Interpreter {
    /// Starts an interactive session with the given `ARGV`.
    pub fn session(self, argv: Vec<String>) -> std::io::Result<Session> {
        let g = self.g;
        g.exit_process.store(true, Ordering::Relaxed);
        g.prelude_define(
            Sym::new("ARGV"),
            Value::array(argv.iter().map(|a| Value::str(a)).collect()),
        );
        let runtime = crate::runtime::stream::start_background(&g)?;
        keep_standard_writers_open(&g);
        Ok(Session {
            g,
            top: compile::TopLevel::interactive(),
            _runtime: runtime,
        })
    }
}

/// In a session the write streams of `stdout` and `stderr` serve every input: a
/// producer that never ends keeps each open, or the first pipeline into it that ends
/// would close it for all later inputs (prelude values are constants of the compiled
/// code, so functions defined earlier hold the same stream).
fn keep_standard_writers_open(g: &Arc<Globals>) {
    use crate::runtime::stream::{connect, BoxFuture, Outlet, Source, Stream};
    struct Forever;
    impl Source for Forever {
        fn run<'a>(self: Box<Self>, _out: &'a mut Outlet) -> BoxFuture<'a> {
            Box::pin(std::future::pending())
        }
    }
    for name in ["stdout", "stderr"] {
        if let Some(Value::Io(io)) = g.prelude_get(Sym::new(name)) {
            if let Some(writer) = io.write_stream() {
                connect(g, &Stream::source(Forever), &writer);
            }
        }
    }
}

impl Session {
    /// The session's shared state (output writers, error reporting).
    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    /// Evaluates one input. `name` names it in messages.
    pub fn eval(&mut self, name: &str, text: &str) -> Outcome {
        let source = Arc::new(Source::new(name, text));
        let color = self.g.color();
        let program = match parse(&source.text) {
            Ok(p) => p,
            Err(e) if e.incomplete => return Outcome::Incomplete,
            Err(e) => return Outcome::Error(render(Some(&source), &e.to_diagnostic(), color)),
        };
        let is_expr = matches!(
            program.stmts.last().map(|s| &s.kind),
            Some(crate::syntax::ast::StmtKind::Expr(_))
        );
        let code = match compile::compile_top(&program, source.clone(), &self.g, &mut self.top) {
            Ok(c) => c,
            Err(diags) => {
                return Outcome::Error(
                    diags
                        .iter()
                        .map(|d| render(Some(&source), d, color))
                        .collect(),
                )
            }
        };
        {
            let mut top = self.g.top.write();
            if (top.len() as u32) < self.top.nslots() {
                *top = Frame::grown(&top, self.top.nslots() as usize);
            }
        }
        let frame = self.g.top_frame();
        let g = self.g.clone();
        let r = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(SCRIPT_STACK_SIZE)
                .spawn_scoped(s, || {
                    let mut cx = CallContext::new(&g, None);
                    let mut act = Act {
                        locals: Locals::Heap(&frame),
                        env: None,
                        source: &code.source,
                    };
                    let FnBody::Plain { body, .. } = &code.body else {
                        unreachable!("the top level is a plain body")
                    };
                    finish_top(cx.exec_block(&mut act, body))
                })
                .map(|h| h.join())
        });
        crate::runtime::stream::start_pending(&self.g);
        self.g.out.flush();
        match r {
            Ok(Ok(Ok(v))) => Outcome::Done {
                value: is_expr.then_some(v),
            },
            Ok(Ok(Err(e))) => Outcome::Error(e.render(color)),
            Ok(Err(_)) => Outcome::Error("error: the evaluation thread failed\n".into()),
            Err(e) => Outcome::Error(format!("error: cannot start evaluation: {e}\n")),
        }
    }

    /// The inspected form of a value (4.12: strings quoted), as the REPL shows results.
    pub fn inspect(&self, v: &Value) -> String {
        let mut cx = CallContext::new(&self.g, None);
        let mut out = Vec::new();
        match cx.write_inspect(&mut out, v) {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => format!("<error: {}>", e.message()),
        }
    }

    /// Names for completion: top-level bindings and builtins; with `receiver_methods`,
    /// the methods of every namespace.
    pub fn completion_names(&self, receiver_methods: bool) -> Vec<String> {
        let mut names = self.top.names();
        if receiver_methods {
            for ns in self.g.namespaces.all_names() {
                if let Some(ns) = self.g.namespaces.get(&ns) {
                    names.extend(ns.names().into_iter().map(|s| s.name().to_owned()));
                }
            }
        } else {
            names.extend(self.g.prelude_names());
        }
        names.sort();
        names.dedup();
        names
    }
}

fn run_script(g: &Arc<Globals>, code: &Arc<super::ir::FnCode>, frame: &Arc<Frame>) -> i32 {
    let r = {
        let mut cx = CallContext::new(g, None);
        let mut act = Act {
            locals: Locals::Heap(frame),
            env: None,
            source: &code.source,
        };
        let FnBody::Plain { body, .. } = &code.body else {
            unreachable!("the top level is a plain body")
        };
        finish_top(cx.exec_block(&mut act, body))
    };
    if let Err(e) = r {
        if let Some(status) = e.exit_status() {
            return status;
        }
        g.report_error(&e);
        g.flush_all();
        return 1;
    }
    crate::runtime::stream::run_graph(g);
    g.flush_all();
    g.report_suppressed();
    if let Some(status) = g.exit_requested() {
        status
    } else if g.errors_reported() > 0 {
        1
    } else {
        0
    }
}

/// Identifies a signal subscription made with [`Registry::on_signal`], to remove it
/// with [`Registry::remove_signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalId(u64);

type SignalFn = Arc<dyn Fn() + Send + Sync>;

/// Process signals of one interpreter (spec 9.2 item 9): one thread waits for every
/// signal that anyone subscribed to, calls the subscribers in subscription order, and
/// then applies the runtime's own handling (D66) when the interpreter owns the
/// process. Handlers run on that thread, not in signal context, so they may lock and
/// allocate.
#[derive(Default)]
pub(crate) struct SignalHub {
    state: Arc<Mutex<HubState>>,
}

#[derive(Default)]
struct HubState {
    handle: Option<signal_hook::iterator::Handle>,
    subs: Vec<(SignalId, i32, SignalFn)>,
    next_id: u64,
    /// Set when the runtime handles SIGINT/SIGTERM itself (D66).
    owner: Option<Weak<Globals>>,
}

impl SignalHub {
    /// Starts the waiting thread if needed and makes it wait for `signal` too.
    fn listen(&self, st: &mut HubState, signal: i32) -> std::io::Result<()> {
        if st.handle.is_none() {
            let mut signals = signal_hook::iterator::Signals::new(Vec::<i32>::new())?;
            st.handle = Some(signals.handle());
            let state = self.state.clone();
            std::thread::Builder::new()
                .name("streem-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        dispatch(&state, sig);
                    }
                })?;
        }
        match &st.handle {
            Some(h) => h.add_signal(signal),
            None => Ok(()),
        }
    }

    pub(crate) fn subscribe(&self, signal: i32, f: SignalFn) -> std::io::Result<SignalId> {
        if signal_hook::consts::FORBIDDEN.contains(&signal) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("signal {signal} cannot be handled"),
            ));
        }
        let mut st = self.state.lock();
        self.listen(&mut st, signal)?;
        st.next_id += 1;
        let id = SignalId(st.next_id);
        st.subs.push((id, signal, f));
        Ok(id)
    }

    pub(crate) fn unsubscribe(&self, id: SignalId) -> bool {
        let mut st = self.state.lock();
        let n = st.subs.len();
        st.subs.retain(|(i, _, _)| *i != id);
        st.subs.len() != n
    }

    /// D66: SIGINT and SIGTERM end the process after the subscribers have run.
    fn handle_termination(&self, g: &Arc<Globals>) {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut st = self.state.lock();
        st.owner = Some(Arc::downgrade(g));
        for sig in [SIGINT, SIGTERM] {
            if let Err(e) = self.listen(&mut st, sig) {
                drop(st);
                g.report_warning(&format!("cannot handle signal {sig}: {e}"));
                return;
            }
        }
    }
}

impl Drop for SignalHub {
    fn drop(&mut self) {
        if let Some(h) = self.state.lock().handle.take() {
            h.close();
        }
    }
}

fn dispatch(state: &Mutex<HubState>, sig: i32) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (subs, owner) = {
        let st = state.lock();
        let subs: Vec<SignalFn> = st
            .subs
            .iter()
            .filter(|(_, s, _)| *s == sig)
            .map(|(_, _, f)| f.clone())
            .collect();
        (subs, st.owner.clone())
    };
    for f in subs {
        // A panicking handler must not take signal handling down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f()));
    }
    if sig == SIGINT || sig == SIGTERM {
        if let Some(g) = owner.and_then(|w| w.upgrade()) {
            g.flush_all();
            crate::builtins::graph_bar::restore_terminal();
            std::process::exit(128 + sig);
        }
    }
}

/// D66: on SIGINT or SIGTERM, flush standard output and error, restore the terminal
/// if a bar graph is drawn, and exit with 128 + the signal number (after the
/// extensions' subscribers have run).
fn install_signal_handlers(g: &Arc<Globals>) {
    g.signals.handle_termination(g);
}
