//! The interpreter: global state, and running a program from source to exit status.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
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

/// Options of one run (command-line flags).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `-w`: extra warnings.
    pub warnings: bool,
    /// `-v`: dump the parse tree to standard error before running.
    pub dump_ast: bool,
    /// Install the process's SIGINT/SIGTERM handling (D66): flush output, restore the
    /// terminal and exit with 130/143. The command line sets it; an embedder decides.
    pub handle_signals: bool,
}

/// State shared by everything that runs in one interpreter: the prelude, namespaces,
/// the top-level frame, the output writers and the stream graph.
pub struct Globals {
    pub namespaces: Namespaces,
    prelude: RwLock<FxHashMap<Sym, Value>>,
    pub(crate) ns_number: Arc<Namespace>,
    pub(crate) ns_string: Arc<Namespace>,
    pub(crate) ns_array: Arc<Namespace>,
    pub(crate) ns_time: Arc<Namespace>,
    top: RwLock<Arc<Frame>>,
    /// The one ordered writer for standard output (D39).
    pub out: Arc<Output>,
    /// The one ordered writer for standard error.
    pub err: Arc<Output>,
    pub graph: Graph,
    errors_reported: AtomicUsize,
    color: bool,
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
            color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        })
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
    pub fn report_error(&self, e: &RuntimeError) {
        self.errors_reported.fetch_add(1, Ordering::Relaxed);
        self.out.flush();
        self.err.write_raw(e.render(self.color).as_bytes());
        self.err.flush();
    }

    /// Reports a warning (does not change the exit status).
    pub fn report_warning(&self, message: &str) {
        self.out.flush();
        let d = Diagnostic::warning(message, None);
        self.err.write_raw(render(None, &d, self.color).as_bytes());
        self.err.flush();
    }

    pub fn errors_reported(&self) -> usize {
        self.errors_reported.load(Ordering::Relaxed)
    }

    /// Flushes standard output and error (at exit, D37).
    pub fn flush_all(&self) {
        self.out.flush();
        self.err.flush();
    }
}

/// A Streem interpreter with the standard library registered.
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
pub const SCRIPT_STACK_SIZE: usize = 1 << 30;

impl Interpreter {
    pub fn new() -> Interpreter {
        let g = Globals::new();
        let interp = Interpreter { g };
        crate::builtins::register_all(&interp.registry());
        interp
    }

    /// The registry through which builtins and extensions install names.
    pub fn registry(&self) -> Registry {
        Registry { g: self.g.clone() }
    }

    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    fn compile(&self, source: &Arc<Source>) -> Result<Arc<super::ir::FnCode>, Vec<Diagnostic>> {
        let program = parse(&source.text).map_err(|e| vec![e.to_diagnostic()])?;
        compile::compile_program(&program, source.clone(), &self.g)
    }

    /// Lexes, parses and compiles without running; returns the rendered errors.
    pub fn check(&self, source: Arc<Source>, color: bool) -> Vec<String> {
        match self.compile(&source) {
            Ok(_) => Vec::new(),
            Err(diags) => diags
                .iter()
                .map(|d| render(Some(&source), d, color))
                .collect(),
        }
    }

    /// Compiles and runs a program (the script, then the graph). Prints its own
    /// errors. Returns the exit status.
    pub fn run(&self, source: Arc<Source>, argv: Vec<String>, opts: &RunOptions) -> i32 {
        let g = self.g.clone();
        let color = g.color;
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

/// What evaluating one input of a session gave.
pub enum Outcome {
    /// The input is an unfinished statement: read another line and try again.
    Incomplete,
    /// It ran. `value` is the value of the last statement if that was an expression.
    Done { value: Option<Value> },
    /// It failed; the rendered diagnostics.
    Error(String),
}

/// An interactive session (the REPL): each input is compiled against the bindings of
/// the earlier ones (which it may rebind) and runs at once; the streams it connects
/// start immediately and run in the background.
pub struct Session {
    g: Arc<Globals>,
    top: compile::TopLevel,
    _runtime: tokio::runtime::Runtime,
}

impl Interpreter {
    /// Starts an interactive session with the given `ARGV`.
    pub fn session(self, argv: Vec<String>) -> std::io::Result<Session> {
        let g = self.g;
        g.prelude_define(
            Sym::new("ARGV"),
            Value::array(argv.iter().map(|a| Value::str(a)).collect()),
        );
        let runtime = crate::runtime::stream::start_background(&g)?;
        Ok(Session {
            g,
            top: compile::TopLevel::interactive(),
            _runtime: runtime,
        })
    }
}

impl Session {
    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    /// Evaluates one input. `name` names it in messages.
    pub fn eval(&mut self, name: &str, text: &str) -> Outcome {
        let source = Arc::new(Source::new(name, text));
        let color = self.g.color;
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
        g.report_error(&e);
        g.flush_all();
        return 1;
    }
    crate::runtime::stream::run_graph(g);
    g.flush_all();
    if g.errors_reported() > 0 {
        1
    } else {
        0
    }
}

/// D66: on SIGINT or SIGTERM, flush standard output and error, restore the terminal
/// if a bar graph is drawn, and exit with 128 + the signal number.
fn install_signal_handlers(g: &Arc<Globals>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let g = g.clone();
    let _ = std::thread::Builder::new()
        .name("streem-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                g.flush_all();
                crate::builtins::graph_bar::restore_terminal();
                std::process::exit(128 + sig);
            }
        });
}
