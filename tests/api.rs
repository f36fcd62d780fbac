//! The public API used from outside the crate, as an extension and an embedder do
//! (spec 9.2; the surface is listed in ARCHITECTURE.md, "Public API"). Only `streem::ext`
//! and the crate root are used here.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use streem::ext::{
    compare, equals, inspect, signals, Args, BoxFuture, CallContext, Capture, Inlet, NativeObject,
    Outlet, Produce, Registry, Role, RuntimeError, Sink, Source, Stage, StageContext, Stream,
    Value,
};
use streem::{Interpreter, RunOptions};

/// Runs `program` in a fresh interpreter after `setup`; (status, stdout, stderr).
fn run_with(setup: impl FnOnce(&Registry), program: &str, argv: &[&str]) -> (i32, String, String) {
    let interp = Interpreter::new();
    setup(&interp.registry());
    let (out, err) = (Capture::new(), Capture::new());
    interp.set_stdout(out.clone());
    interp.set_stderr(err.clone());
    let argv = argv.iter().map(|s| s.to_string()).collect();
    let status = interp.run_str("api.strm", program, argv, &RunOptions::default());
    (status, out.text(), err.text())
}

// ----- 1. values and native objects ---------------------------------------------------

struct Point {
    x: i64,
    y: i64,
}

impl NativeObject for Point {
    fn namespace(&self) -> &str {
        "point"
    }
    fn display(&self) -> String {
        format!("<point {},{}>", self.x, self.y)
    }
    fn equals(&self, other: &dyn NativeObject) -> Option<bool> {
        let o = other.as_any().downcast_ref::<Point>()?;
        Some(self.x == o.x && self.y == o.y)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn point_ext(r: &Registry) {
    r.define_fn("point", |_cx, vals| {
        let a = Args::new("point", vals);
        a.arity(2, 2)?;
        Ok(Value::native(Point {
            x: a.int(0)?,
            y: a.int(1)?,
        }))
    });
    r.namespace("point").define_method("norm1", |_cx, vals| {
        let a = Args::method("norm1", vals);
        a.arity(1, 1)?;
        let p = a.native::<Point>(0)?;
        Ok(Value::Int(p.x.abs() + p.y.abs()))
    });
}

#[test]
fn values_and_helpers() {
    let s = Value::str("héllo");
    assert_eq!(s.as_bytes().unwrap(), "héllo".as_bytes());
    assert!(Value::Int(0).truthy() && !Value::Nil.truthy() && !Value::Bool(false).truthy());
    assert!(equals(&Value::Int(2), &Value::Float(2.0)));
    assert_eq!(
        compare(&Value::Int(1), &Value::str("a")),
        std::cmp::Ordering::Less
    );
    assert_eq!(
        inspect(&Value::array(vec![Value::Nil, Value::str("q")])),
        "[nil, \"q\"]"
    );
    let p = Value::native(Point { x: 1, y: 2 });
    assert!(equals(&p, &Value::native(Point { x: 1, y: 2 })));
    assert_eq!(inspect(&p), "<point 1,2>");
}

#[test]
fn native_objects_dispatch_print_and_compare() {
    let (status, out, err) = run_with(
        point_ext,
        "p = point(3, -4)\nprint(p, p.norm1(), norm1(p), p == point(3, -4), p == point(0, 0))",
        &[],
    );
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(out, "<point 3,-4> 7 7 true false\n");
}

// ----- 2, 3. native functions and argument errors ---------------------------------------

#[test]
fn native_function_errors_name_function_and_argument() {
    let (status, out, err) = run_with(point_ext, "print(point)\npoint(1, \"x\")\n", &[]);
    assert_eq!(status, 1);
    assert_eq!(out, "<cfunc:point>\n");
    assert!(
        err.starts_with("api.strm:2:1: error: point: argument 2: number required"),
        "{err}"
    );
    let (status, _, err) = run_with(point_ext, "point(1)", &[]);
    assert_eq!(status, 1);
    assert!(
        err.contains("point: wrong number of arguments (given 1, expected 2)"),
        "{err}"
    );
}

// ----- 4. calling back ----------------------------------------------------------------------

#[test]
fn native_code_calls_script_functions() {
    let (status, out, _) = run_with(
        |r| {
            r.define_fn("apply_twice", |cx: &mut CallContext, vals: &[Value]| {
                let a = Args::new("apply_twice", vals);
                a.arity(2, 2)?;
                let f = a.func(0)?;
                let once = cx.call(f, &[vals[1].clone()])?;
                cx.call(f, &[once])
            });
        },
        "def inc(x) = x + 1\nprint(apply_twice(&inc, 1), apply_twice({x -> x * x}, 3), apply_twice([1, 2, 0], 0))",
        &[],
    );
    assert_eq!((status, out.as_str()), (0, "3 81 2\n"));
}

// ----- 6. stages: a filter with state and a close hook, a producer ------------------------

/// Emits running totals, and on close the number of values it saw.
struct RunningTotal {
    total: f64,
    seen: usize,
}

impl Stage for RunningTotal {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let x = v
            .as_f64()
            .ok_or_else(|| RuntimeError::new("running_total: number required"))?;
        self.total += x;
        self.seen += 1;
        cx.emit(Value::Float(self.total))
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        cx.emit(Value::str(&format!("seen {}", self.seen)))
    }
}

/// Counts down from n; stops early when nobody listens.
struct Countdown {
    n: i64,
}

impl Stage for Countdown {
    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        for _ in 0..100 {
            if self.n == 0 || cx.destinations_gone() {
                return Ok(Produce::Done);
            }
            cx.emit(Value::Int(self.n))?;
            self.n -= 1;
        }
        Ok(Produce::More)
    }
}

fn stage_ext(r: &Registry) {
    r.define_stage_fn("running_total", |_cx, vals| {
        Args::new("running_total", vals).arity(0, 0)?;
        Ok(Stream::value(
            Role::Filter,
            RunningTotal {
                total: 0.0,
                seen: 0,
            },
        ))
    });
    r.define_stage_fn("countdown", |_cx, vals| {
        let a = Args::new("countdown", vals);
        a.arity(1, 1)?;
        Ok(Stream::value(Role::Producer, Countdown { n: a.int(0)? }))
    });
}

#[test]
fn filter_with_state_and_close_hook() {
    let (status, out, err) = run_with(
        stage_ext,
        "[1, 2, \"x\", 3.5] | running_total | stdout",
        &[],
    );
    // The bad element is reported and skipped (5.6); the stage goes on and closes.
    assert_eq!(status, 1);
    assert_eq!(out, "1\n3\n6.5\nseen 3\n");
    assert!(err.contains("running_total: number required"), "{err}");
}

#[test]
fn producer_runs_until_exhausted_or_nobody_listens() {
    let (status, out, err) = run_with(stage_ext, "countdown(3) | running_total | stdout", &[]);
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (0, "3\n5\n6\nseen 3\n", "")
    );
    // An endless producer stops when take(2) is satisfied (5.7).
    let (status, out, _) = run_with(stage_ext, "countdown(-1) | take(2) | stdout", &[]);
    assert_eq!((status, out.as_str()), (0, "-1\n-2\n"));
}

// ----- 7. multiple inputs -----------------------------------------------------------------------

/// Counts values per input; reports each input's end.
struct PerInput {
    counts: Vec<usize>,
    closed: Vec<usize>,
}

impl Stage for PerInput {
    fn on_input(
        &mut self,
        input: usize,
        _v: Value,
        _cx: &mut StageContext,
    ) -> Result<(), RuntimeError> {
        if self.counts.len() <= input {
            self.counts.resize(input + 1, 0);
        }
        self.counts[input] += 1;
        Ok(())
    }
    fn on_input_closed(
        &mut self,
        input: usize,
        _cx: &mut StageContext,
    ) -> Result<(), RuntimeError> {
        self.closed.push(input);
        Ok(())
    }
    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.closed.sort();
        let counts: Vec<Value> = self.counts.iter().map(|&n| Value::Int(n as i64)).collect();
        let closed: Vec<Value> = self.closed.iter().map(|&n| Value::Int(n as i64)).collect();
        cx.emit(Value::array(vec![
            Value::array(counts),
            Value::array(closed),
        ]))
    }
}

#[test]
fn a_stage_with_several_inputs() {
    let (status, out, err) = run_with(
        |r| {
            r.define_stage_fn("per_input", |_cx, _vals| {
                Ok(Stream::value(
                    Role::Filter,
                    PerInput {
                        counts: vec![],
                        closed: vec![],
                    },
                ))
            });
        },
        "p = per_input()\nseq(5) | p\n[\"a\", \"b\"] | p\np | stdout",
        &[],
    );
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (0, "[[5, 2], [0, 1]]\n", "")
    );
}

// ----- 8. asynchronous stages ---------------------------------------------------------------

/// Emits n ticks, waiting between them without holding a worker.
struct Ticks(i64);

impl Source for Ticks {
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
        Box::pin(async move {
            for i in 1..=self.0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                out.emit(Value::Int(i));
                out.flush().await;
                if out.destinations_gone() {
                    return;
                }
            }
        })
    }
}

/// Collects everything into a shared vector (a consumer).
struct Collect(Arc<parking_lot::Mutex<Vec<String>>>);

impl Sink for Collect {
    fn run<'a>(self: Box<Self>, input: &'a mut Inlet) -> BoxFuture<'a> {
        Box::pin(async move {
            while let Some(batch) = input.next().await {
                for v in batch {
                    let mut text = Vec::new();
                    if input.display(&v, &mut text).is_ok() {
                        self.0
                            .lock()
                            .push(String::from_utf8_lossy(&text).into_owned());
                    }
                }
            }
        })
    }
}

#[test]
fn asynchronous_source_and_sink() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let (status, _, err) = run_with(
        move |r| {
            r.define_stage_fn("ticks", |_cx, vals| {
                let a = Args::new("ticks", vals);
                a.arity(1, 1)?;
                Ok(Value::Stream(Stream::source(Ticks(a.int(0)?))))
            });
            r.define_stage_fn("collect", move |_cx, _vals| {
                Ok(Value::Stream(Stream::sink(Collect(s2.clone()))))
            });
        },
        "ticks(4) | map{x -> x * 100} | collect",
        &[],
    );
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(*seen.lock(), vec!["100", "200", "300", "400"]);
}

/// Records the name of the thread its task runs on, then emits it.
struct WhereAmI {
    io_bound: bool,
}

impl Source for WhereAmI {
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
        Box::pin(async move {
            let name = std::thread::current().name().unwrap_or("").to_string();
            out.emit(Value::from(name.as_str()));
        })
    }

    fn io_bound(&self) -> bool {
        self.io_bound
    }
}

/// Collects like [`Collect`], as an `io_bound` sink.
struct CollectIo(Collect);

impl Sink for CollectIo {
    fn run<'a>(self: Box<Self>, input: &'a mut Inlet) -> BoxFuture<'a> {
        Box::new(self.0).run(input)
    }

    fn io_bound(&self) -> bool {
        true
    }
}

/// A source and sink that are `io_bound` and exchange values only with each other run
/// on the I/O thread; one that feeds a stream of the pool runs on the pool.
#[test]
fn io_bound_tasks_run_on_the_io_thread() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (s2, s3) = (seen.clone(), seen.clone());
    let (status, _, err) = run_with(
        move |r| {
            r.define_stage_fn("where", |_cx, vals| {
                let a = Args::new("where", vals);
                a.arity(1, 1)?;
                let io_bound = a.boolean(0)?;
                Ok(Value::Stream(Stream::source(WhereAmI { io_bound })))
            });
            r.define_stage_fn("collect", move |_cx, _vals| {
                Ok(Value::Stream(Stream::sink(Collect(s2.clone()))))
            });
            r.define_stage_fn("collect_io", move |_cx, _vals| {
                Ok(Value::Stream(Stream::sink(CollectIo(Collect(s3.clone())))))
            });
        },
        "where(true) | collect_io; where(true) | collect; where(false) | collect_io",
        &[],
    );
    assert_eq!((status, err.as_str()), (0, ""));
    let mut got = seen.lock().clone();
    got.sort();
    assert_eq!(got, vec!["streem-io", "streem-worker", "streem-worker"]);
}

// ----- 9. signals ------------------------------------------------------------------------------

#[test]
fn signal_subscription() {
    let interp = Interpreter::new();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let id = interp
        .registry()
        .on_signal(signals::SIGUSR2, move || {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    unsafe { libc::raise(signals::SIGUSR2) };
    for _ in 0..500 {
        if hits.load(Ordering::SeqCst) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(interp.registry().remove_signal(id));
    assert!(!interp.registry().remove_signal(id));
    // Unhandleable signals are refused.
    assert!(interp.registry().on_signal(libc::SIGKILL, || {}).is_err());
}

// ----- 10. embedding ---------------------------------------------------------------------------

#[test]
fn embedding_argv_output_and_status() {
    let (status, out, err) = run_with(
        |_| {},
        "print(ARGV)\n[\"e\"] | stderr\nseq(2) | stdout",
        &["x", "-y"],
    );
    assert_eq!(status, 0);
    assert_eq!(out, "[\"x\", \"-y\"]\n1\n2\n");
    assert_eq!(err, "e\n");
    let (status, _, err) = run_with(|_| {}, "print(1 +)", &[]);
    assert_eq!(status, 1);
    assert!(err.starts_with("api.strm:1:"), "{err}");
}

#[test]
fn exit_ends_the_run_not_the_host() {
    // In the script.
    let (status, out, _) = run_with(|_| {}, "print(1)\nexit(3)\nprint(2)", &[]);
    assert_eq!((status, out.as_str()), (3, "1\n"));
    // In a stage: nothing is written after exit, other stages stop too.
    let (status, out, _) = run_with(
        |_| {},
        "seq() | each{x -> if (x == 3) exit(4); print(x)}\nseq() | map{x -> x} | take(1000000) | count() | stdout",
        &[],
    );
    assert_eq!(status, 4);
    assert!(out.starts_with("1\n2\n"), "{out}");
    assert!(!out.contains("\n3\n"), "{out}");
    // From a native function.
    let (status, _, _) = run_with(
        |r| {
            r.define_fn("bail", |cx, _vals| Err(cx.globals().request_exit(9)));
        },
        "bail()",
        &[],
    );
    assert_eq!(status, 9);
}

#[test]
fn run_file_and_unreadable_file() {
    let dir = std::env::temp_dir().join(format!("streem-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.strm");
    std::fs::write(&path, "print(ARGV(0) + \"!\")\n").unwrap();
    let interp = Interpreter::new();
    let out = Capture::new();
    interp.set_stdout(out.clone());
    assert_eq!(
        interp.run_file(&path, vec!["hi".into()], &RunOptions::default()),
        0
    );
    assert_eq!(out.text(), "hi!\n");
    let interp = Interpreter::new();
    let err = Capture::new();
    interp.set_stderr(err.clone());
    assert_eq!(
        interp.run_file(dir.join("missing.strm"), vec![], &RunOptions::default()),
        1
    );
    assert!(err.text().contains("cannot read"), "{}", err.text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn parse_is_public() {
    assert!(streem::parse(b"x = 1").is_ok());
    assert!(streem::parse(b"x = (").is_err());
}

// ----- pure natives and stages shared among cores ----------------------------------

#[test]
fn a_native_not_declared_pure_runs_once_per_value_and_a_pure_one_gives_the_same_results() {
    // An expensive `map` may share its batch among cores only while its function
    // does nothing but compute: a native with an effect (here a call counter) is
    // refused before it acts, so the stage runs the values one at a time and every
    // value is counted exactly once.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let program = "def fib(n) { if (n < 2) n else fib(n - 1) + fib(n - 2) }\n\
                   seq(30) | map{x -> tick(fib(16) + x) + square(x)} | reduce{a, b -> a + b} | stdout";
    let (status, out, err) = run_with(
        move |r| {
            r.define_fn("tick", move |_cx, vals| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(vals[0].clone())
            });
            r.define_fn("square", |_cx, vals| {
                let a = Args::new("square", vals);
                Ok(Value::from(a.int(0)? * a.int(0)?))
            });
            r.mark_pure(&["square", "no such function"]);
        },
        program,
        &[],
    );
    assert_eq!((status, err.as_str()), (0, ""));
    let want: i64 = (1..=30).map(|x| 987 + x + x * x).sum();
    assert_eq!(out, format!("{want}\n"));
    assert_eq!(calls.load(Ordering::SeqCst), 30);
}
