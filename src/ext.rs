//! The public extension and embedding API (spec section 9.2).
//!
//! Every builtin of the standard library is registered through this module, exactly
//! as an extension is: native functions receive a [`CallContext`] and their
//! arguments, extract them with [`Args`], and fail with [`RuntimeError`]; stages
//! implement [`Stage`] (or [`Source`]/[`Sink`] for asynchronous I/O); names are
//! installed with [`Registry`]; an embedder drives it all with
//! [`Interpreter`]. `docs/extending.md` walks through a socket
//! server and a filter stage written with it.
//!
//! | 9.2 capability | where |
//! |---|---|
//! | 1. values, native objects, helpers | [`Value`], [`NativeObject`], [`equals`], [`compare`], [`inspect`], [`CallContext::to_display_string`], [`Value::truthy`] |
//! | 2. native functions | [`Registry::define_fn`], [`Registry::define_stage_fn`], [`native_fn`], [`NativeFn`] |
//! | 3. argument extraction | [`Args`] |
//! | 4. calling back, emitting | [`CallContext::call`], [`CallContext::call_with_element`], [`CallContext::emit`] |
//! | 5. registration | [`Registry`], [`NamespaceRegistry`], [`Registry::find_namespace`] |
//! | 6. stages | [`Stage`], [`StageContext`], [`Stream`], [`Role`], [`Produce`] |
//! | 7. multiple inputs | [`Stage::on_input`], [`Stage::on_input_closed`] |
//! | 8. asynchronous I/O | [`Source`]/[`Outlet`], [`Sink`]/[`Inlet`], [`Io::custom`], [`IoBackend`] |
//! | 9. signals | [`Registry::on_signal`], [`Registry::remove_signal`], [`signals`] |
//! | 10. embedding | [`Interpreter`], [`Capture`], [`RunOptions`] |
//!
//! A small extension: a native function, a method of a native object's namespace,
//! and an embedder capturing the output.
//!
//! ```
//! use std::any::Any;
//! use streem::ext::{Args, Capture, NativeObject, Value};
//! use streem::{Interpreter, RunOptions};
//!
//! /// A counter object; methods live in the namespace "counter".
//! struct Counter(std::sync::atomic::AtomicI64);
//!
//! impl NativeObject for Counter {
//!     fn namespace(&self) -> &str { "counter" }
//!     fn display(&self) -> String {
//!         format!("<counter {}>", self.0.load(std::sync::atomic::Ordering::Relaxed))
//!     }
//!     fn as_any(&self) -> &dyn Any { self }
//! }
//!
//! let interp = Interpreter::new();
//! let r = interp.registry();
//! r.define_fn("counter", |_cx, vals| {
//!     Args::new("counter", vals).arity(0, 0)?;
//!     Ok(Value::native(Counter(0.into())))
//! });
//! r.namespace("counter").define_method("bump", |_cx, vals| {
//!     let a = Args::method("bump", vals);
//!     a.arity(1, 2)?;
//!     let by = match a.get(1) { Some(_) => a.int(1)?, None => 1 };
//!     let c = a.native::<Counter>(0)?;
//!     Ok(Value::Int(c.0.fetch_add(by, std::sync::atomic::Ordering::Relaxed) + by))
//! });
//!
//! let out = Capture::new();
//! interp.set_stdout(out.clone());
//! let status = interp.run_str("-e", "c = counter(); c.bump(); print(c.bump(5), c)",
//!                             vec![], &RunOptions::default());
//! assert_eq!(status, 0);
//! assert_eq!(out.text(), "6 <counter 6>\n");
//! ```

use std::cmp::Ordering;
use std::sync::Arc;

pub use crate::eval::error::{err, ErrorKind, RuntimeError};
pub use crate::eval::func::{BytesMethodPtr, Func, NativeFn, NativeFnPtr};
pub use crate::eval::interp::{Globals, SignalId};
pub use crate::eval::namespace::Namespace;
pub use crate::eval::value::{Array, Fields, NativeObject, Str, Time, TimeOffset, Value};
pub use crate::runtime::io::{
    Io, IoBackend, IoMode, Lent, LineReader, Lines, LinesIter, Output, Records,
};
pub use crate::runtime::stream::{
    BoxFuture, Inlet, Outlet, Produce, Role, Sink, Source, Stage, StageContext, Stream,
};
pub use crate::{Interpreter, RunOptions};

use crate::eval::func::Frame;
use crate::eval::namespace::Binding;
use crate::eval::symbol::Sym;

/// Signal numbers for [`Registry::on_signal`].
pub mod signals {
    pub use signal_hook::consts::signal::{
        SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
    };
}

/// Receives the values a stage emits (the `emit` statement and [`CallContext::emit`]).
pub(crate) trait Emitter {
    fn emit(&mut self, v: Value) -> Result<(), RuntimeError>;
}

/// The top-level frame, borrowed from a running stage (no reference-count traffic per
/// value) or owned.
pub(crate) enum TopFrame<'a> {
    Owned(Arc<Frame>),
    Borrowed(&'a Arc<Frame>),
}

/// What a native function gets besides its arguments: the interpreter, and the stage
/// it runs in (if any), so that callbacks and `emit` work from native code (9.2
/// item 4).
///
/// A native function that calls back into the language and emits, like `each`:
///
/// ```
/// use streem::ext::{Args, Capture, Value};
/// use streem::{Interpreter, RunOptions};
///
/// let interp = Interpreter::new();
/// // twice(x, f): emits f(x) twice from the stage it is called in.
/// interp.registry().define_fn("twice", |cx, vals| {
///     let a = Args::new("twice", vals);
///     a.arity(2, 2)?;
///     let f = a.func(1)?;
///     if !cx.in_stage() {
///         return Err(a.error(0, "must be called inside a stage"));
///     }
///     let v = cx.call(f, &[vals[0].clone()])?;
///     cx.emit(v.clone())?;
///     cx.emit(v)?;
///     Ok(Value::Nil)
/// });
/// let out = Capture::new();
/// interp.set_stdout(out.clone());
/// let program = "seq(2) | each{x -> twice(x, {y -> y * 10})} | stdout";
/// assert_eq!(interp.run_str("-e", program, vec![], &RunOptions::default()), 0);
/// assert_eq!(out.text(), "10\n10\n20\n20\n");
/// ```
pub struct CallContext<'a> {
    pub(crate) g: &'a Arc<Globals>,
    pub(crate) top: TopFrame<'a>,
    pub(crate) emitter: Option<&'a mut dyn Emitter>,
    pub(crate) depth: u32,
    /// Lowest native stack address calls may reach (0: not yet measured).
    pub(crate) stack_floor: usize,
    /// The last method of a builtin namespace this context called (a stage calls
    /// the same one for every value of a batch).
    pub(crate) method_cache: Option<crate::eval::exec::MethodCache>,
    /// This context runs a share of a batch beside other threads: anything with a
    /// side effect gives up with [`ErrorKind::Impure`](crate::eval::error::ErrorKind::Impure).
    pub(crate) parallel: bool,
}

impl<'a> CallContext<'a> {
    pub(crate) fn new(
        g: &'a Arc<Globals>,
        emitter: Option<&'a mut dyn Emitter>,
    ) -> CallContext<'a> {
        CallContext {
            top: TopFrame::Owned(g.top_frame()),
            g,
            emitter,
            depth: 0,
            stack_floor: 0,
            method_cache: None,
            parallel: false,
        }
    }

    pub(crate) fn with_top(
        g: &'a Arc<Globals>,
        top: &'a Arc<Frame>,
        emitter: Option<&'a mut dyn Emitter>,
    ) -> CallContext<'a> {
        CallContext {
            top: TopFrame::Borrowed(top),
            g,
            emitter,
            depth: 0,
            stack_floor: 0,
            method_cache: None,
            parallel: false,
        }
    }

    /// The interpreter's shared state: output writers, error reporting, `exit`.
    pub fn globals(&self) -> &Arc<Globals> {
        self.g
    }

    #[inline]
    pub(crate) fn top(&self) -> &Arc<Frame> {
        match &self.top {
            TopFrame::Owned(f) => f,
            TopFrame::Borrowed(f) => f,
        }
    }

    /// Whether code runs inside a pipeline stage (so `emit`/`skip` are allowed).
    pub fn in_stage(&self) -> bool {
        self.emitter.is_some()
    }

    /// Emits from the stage whose callback is running (5.5), like the `emit`
    /// statement. `nil` is not sent. Outside a stage it fails with "emit outside a
    /// pipeline stage".
    pub fn emit(&mut self, v: Value) -> Result<(), RuntimeError> {
        if v.is_nil() {
            return Ok(());
        }
        match self.emitter.as_deref_mut() {
            Some(e) => e.emit(v),
            None => Err(RuntimeError::new("emit outside a pipeline stage")),
        }
    }

    /// Calls any callable value (lambda, case lambda, native function, `&name`,
    /// array indexing) with arguments; emits inside it go to the current stage.
    /// Errors, `skip` and `exit` come back as `Err`: propagate them with `?`.
    pub fn call(&mut self, f: &Value, args: &[Value]) -> Result<Value, RuntimeError> {
        self.call_value(f, args)
    }

    /// Calls `f` with one element the way stages and `map`/`filter`/`each` do (6.0,
    /// D34): a parameterless lambda is called with no arguments.
    pub fn call_with_element(&mut self, f: &Value, v: Value) -> Result<Value, RuntimeError> {
        if let Value::Func(func) = f {
            if let Func::Closure { code, env } = &**func {
                if code.parameterless {
                    return self.call_value(f, &[]);
                }
                return self.call_closure_one(code, env.as_ref(), v);
            }
        }
        self.call_value(f, &[v])
    }

    /// The text `print` writes for `v` (4.12), honouring `string` methods of user
    /// namespaces (same as [`to_display_string`](CallContext::to_display_string)).
    pub fn display(&mut self, v: &Value) -> Result<Vec<u8>, RuntimeError> {
        self.to_display_string(v)
    }

    /// The inspected text of `v` (4.12: strings quoted, as inside arrays), honouring
    /// `string` methods of user namespaces.
    pub fn inspect(&mut self, v: &Value) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::new();
        self.write_inspect(&mut out, v)?;
        Ok(out)
    }
}

/// `a == b` (4.9): numbers by value (`1 == 1.0`), strings and arrays by content
/// (field names and class included), native objects by [`NativeObject::equals`] or
/// identity, other heap values by identity.
///
/// ```
/// use streem::ext::{equals, Value};
/// assert!(equals(&Value::Int(1), &Value::Float(1.0)));
/// assert!(equals(&Value::array(vec![Value::str("a")]), &Value::array(vec!["a".into()])));
/// assert!(!equals(&Value::Nil, &Value::Bool(false)));
/// ```
pub fn equals(a: &Value, b: &Value) -> bool {
    crate::eval::ops::equals(a, b)
}

/// The total order of values used by `sort` (4.10, D27).
///
/// ```
/// use std::cmp::Ordering;
/// use streem::ext::{compare, Value};
/// assert_eq!(compare(&Value::Int(2), &Value::Float(10.5)), Ordering::Less);
/// assert_eq!(compare(&Value::str("b"), &Value::str("a")), Ordering::Greater);
/// ```
pub fn compare(a: &Value, b: &Value) -> Ordering {
    crate::eval::ops::compare(a, b)
}

/// The inspected form of a value without calling user methods (strings quoted), as
/// used in error messages. [`CallContext::inspect`] honours user `string` methods.
///
/// ```
/// use streem::ext::{inspect, Value};
/// assert_eq!(inspect(&Value::array(vec![Value::Int(1), Value::str("x")])), "[1, \"x\"]");
/// ```
pub fn inspect(v: &Value) -> String {
    crate::eval::print::inspect_plain(v)
}

/// Argument accessors producing uniform errors that name the function and the argument
/// position (`sort_by: argument 1: function required`) — the Rust form of the
/// original's format specifiers (9.1, 9.2 item 3):
///
/// | specifier | accessor |
/// |---|---|
/// | `v` any value | [`value`](Args::value) |
/// | `S` / `s` string | [`str`](Args::str) / [`bytes`](Args::bytes) |
/// | `A` / `a` array (`a` accepts `nil`) | [`array`](Args::array) / [`items`](Args::items) |
/// | `N` number as value | [`number`](Args::number) |
/// | `f` / `i` number as float / truncated integer | [`num`](Args::num) / [`int`](Args::int) |
/// | `b` boolean | [`boolean`](Args::boolean) |
/// | `|`, `?` optional arguments | [`arity`](Args::arity), [`get`](Args::get) |
///
/// ```
/// use streem::ext::{Args, Value};
///
/// let vals = [Value::str("abc"), Value::Float(2.9)];
/// let a = Args::new("repeat", &vals);
/// assert!(a.arity(1, 2).is_ok());
/// assert_eq!(a.bytes(0).unwrap(), b"abc");
/// assert_eq!(a.int(1).unwrap(), 2);                 // truncated
/// assert!(a.get(2).is_none());                       // optional argument absent
/// assert_eq!(a.num(0).unwrap_err().message(), "repeat: argument 1: number required");
/// assert_eq!(Args::new("repeat", &[]).arity(1, 2).unwrap_err().message(),
///            "repeat: wrong number of arguments (given 0, expected 1..2)");
/// // A method: the receiver is argument 0.
/// let m = Args::method("center", &vals);
/// assert_eq!(m.str(1).unwrap_err().message(), "center: argument 1: string required");
/// ```
pub struct Args<'v> {
    /// The function name used in messages.
    pub name: &'v str,
    /// The arguments.
    pub vals: &'v [Value],
    /// Position of `vals[0]` in messages: 1 for functions, 0 for methods (whose
    /// receiver is argument 0).
    pub base: usize,
}

impl<'v> Args<'v> {
    /// The arguments of the function `name` (positions in messages start at 1).
    pub fn new(name: &'v str, vals: &'v [Value]) -> Args<'v> {
        Args {
            name,
            vals,
            base: 1,
        }
    }

    /// The arguments of the method `name`: `vals[0]` is the receiver, argument 0 in
    /// messages.
    pub fn method(name: &'v str, vals: &'v [Value]) -> Args<'v> {
        Args {
            name,
            vals,
            base: 0,
        }
    }

    /// The number of arguments.
    pub fn len(&self) -> usize {
        self.vals.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    /// The error `NAME: argument N: WHAT` for argument `i`.
    pub fn error(&self, i: usize, what: &str) -> RuntimeError {
        RuntimeError::new(format!("{}: argument {}: {what}", self.name, i + self.base))
    }

    /// Fails unless `min <= len <= max` (`usize::MAX`: no upper bound).
    pub fn arity(&self, min: usize, max: usize) -> Result<(), RuntimeError> {
        let n = self.vals.len();
        if n < min || n > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min}..{max}")
            };
            return Err(RuntimeError::new(format!(
                "{}: wrong number of arguments (given {n}, expected {expected})",
                self.name
            )));
        }
        Ok(())
    }

    /// An optional argument: `None` when it was not given.
    pub fn get(&self, i: usize) -> Option<&'v Value> {
        self.vals.get(i)
    }

    /// Any value (specifier `v`).
    pub fn value(&self, i: usize) -> Result<&'v Value, RuntimeError> {
        self.vals.get(i).ok_or_else(|| self.error(i, "missing"))
    }

    /// A number as a float (specifier `f`).
    pub fn num(&self, i: usize) -> Result<f64, RuntimeError> {
        self.value(i)?
            .as_f64()
            .ok_or_else(|| self.error(i, "number required"))
    }

    /// A number kept as a value, integer or float (specifier `N`).
    pub fn number(&self, i: usize) -> Result<&'v Value, RuntimeError> {
        let v = self.value(i)?;
        if v.is_number() {
            Ok(v)
        } else {
            Err(self.error(i, "number required"))
        }
    }

    /// A number truncated toward zero (specifier `i`).
    pub fn int(&self, i: usize) -> Result<i64, RuntimeError> {
        match self.value(i)? {
            Value::Int(n) => Ok(*n),
            Value::Float(f) if f.is_finite() => Ok(f.trunc() as i64),
            Value::Float(_) => Err(self.error(i, "finite number required")),
            _ => Err(self.error(i, "number required")),
        }
    }

    /// A string's bytes (specifier `s`).
    pub fn bytes(&self, i: usize) -> Result<&'v [u8], RuntimeError> {
        self.value(i)?
            .as_bytes()
            .ok_or_else(|| self.error(i, "string required"))
    }

    /// A string (specifier `S`).
    pub fn str(&self, i: usize) -> Result<&'v Str, RuntimeError> {
        match self.value(i)? {
            Value::Str(s) => Ok(s),
            _ => Err(self.error(i, "string required")),
        }
    }

    /// An array, struct or object (specifier `A`).
    pub fn array(&self, i: usize) -> Result<&'v Arc<Array>, RuntimeError> {
        self.value(i)?
            .as_array()
            .ok_or_else(|| self.error(i, "array required"))
    }

    /// The elements of an array, `nil` counting as empty (specifier `a`).
    pub fn items(&self, i: usize) -> Result<&'v [Value], RuntimeError> {
        match self.value(i)? {
            Value::Nil => Ok(&[]),
            Value::Array(a) => Ok(&a.items),
            _ => Err(self.error(i, "array required")),
        }
    }

    /// A boolean (specifier `b`).
    pub fn boolean(&self, i: usize) -> Result<bool, RuntimeError> {
        match self.value(i)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.error(i, "boolean required")),
        }
    }

    /// Any callable value (functions, and arrays, which index).
    pub fn func(&self, i: usize) -> Result<&'v Value, RuntimeError> {
        match self.value(i)? {
            v @ (Value::Func(_) | Value::Array(_)) => Ok(v),
            _ => Err(self.error(i, "function required")),
        }
    }

    /// A native object of type `T` (see [`NativeObject`]); the error names the
    /// object's expected namespace-less type as "object required".
    pub fn native<T: NativeObject>(&self, i: usize) -> Result<&'v T, RuntimeError> {
        match self.value(i)? {
            Value::Native(n) => {
                n.0.as_any()
                    .downcast_ref::<T>()
                    .ok_or_else(|| self.error(i, "object of another kind given"))
            }
            _ => Err(self.error(i, "object required")),
        }
    }
}

/// Installs globals, functions, namespaces and methods, and subscribes to signals
/// (9.2 items 5 and 9). Obtained from [`Interpreter::registry`];
/// cheap to clone.
///
/// ```
/// use streem::ext::{Args, Capture, Value};
/// use streem::{Interpreter, RunOptions};
///
/// let interp = Interpreter::new();
/// let r = interp.registry();
/// r.define_global("ANSWER", Value::Int(42));
/// // A method of the builtin namespace `string`: "ab".shout() and shout("ab").
/// r.namespace("string").define_method("shout", |_cx, vals| {
///     let a = Args::method("shout", vals);
///     a.arity(1, 1)?;
///     Ok(Value::bytes(&a.bytes(0)?.to_ascii_uppercase()))
/// });
/// // A namespace of importable values and functions.
/// r.namespace("geo")
///     .define_value("TAU", Value::Float(std::f64::consts::TAU))
///     .define_value("sq", streem::ext::native_fn("sq", false, |_cx, vals| {
///         let a = Args::new("sq", vals);
///         a.arity(1, 1)?;
///         Ok(Value::Float(a.num(0)?.powi(2)))
///     }));
/// assert!(r.find_namespace("geo").is_some());
/// assert!(r.find_namespace("nope").is_none());
///
/// let out = Capture::new();
/// interp.set_stdout(out.clone());
/// let program = "import geo; print(ANSWER, sq(3), TAU > 6, \"ab\".shout() + shout(\"c\"))";
/// assert_eq!(interp.run_str("-e", program, vec![], &RunOptions::default()), 0);
/// assert_eq!(out.text(), "42 9 true ABC\n");
/// ```
#[derive(Clone)]
pub struct Registry {
    pub(crate) g: Arc<Globals>,
}

impl Registry {
    /// Binds a global (prelude) value. A later definition of the same name replaces
    /// it; script bindings shadow it.
    pub fn define_global(&self, name: &str, value: Value) {
        self.g.prelude_define(Sym::new(name), value);
    }

    /// Binds a global native function (9.2 item 2); it prints as `<cfunc:NAME>`.
    ///
    /// ```
    /// use streem::ext::{Args, Capture, Value};
    /// use streem::{Interpreter, RunOptions};
    ///
    /// let interp = Interpreter::new();
    /// interp.registry().define_fn("hypot", |_cx, vals| {
    ///     let a = Args::new("hypot", vals);
    ///     a.arity(2, 2)?;
    ///     Ok(Value::Float(a.num(0)?.hypot(a.num(1)?)))
    /// });
    /// let (out, err) = (Capture::new(), Capture::new());
    /// interp.set_stdout(out.clone());
    /// interp.set_stderr(err.clone());
    /// let status = interp.run_str("t.strm", "print(hypot(3, 4), hypot)\nhypot(1, \"x\")",
    ///                             vec![], &RunOptions::default());
    /// assert_eq!(status, 1);
    /// assert_eq!(out.text(), "5 <cfunc:hypot>\n");
    /// assert!(err.text().starts_with("t.strm:2:1: error: hypot: argument 2: number required"));
    /// ```
    pub fn define_fn<F>(&self, name: &str, f: F)
    where
        F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError>
            + Send
            + Sync
            + 'static,
    {
        self.define_global(name, native_fn(name, false, f));
    }

    /// Binds a global stage constructor (D32): a function returning a stream
    /// ([`Stream::value`]); used bare as a pipe destination (`x | name`), it is
    /// called with no arguments.
    ///
    /// A filter with state and a finishing step (the `total_length` of 9.2):
    ///
    /// ```
    /// use streem::ext::{Args, Capture, Role, RuntimeError, Stage, StageContext, Stream, Value};
    /// use streem::{Interpreter, RunOptions};
    ///
    /// struct TotalLength { total: i64 }
    ///
    /// impl Stage for TotalLength {
    ///     fn on_value(&mut self, v: Value, _cx: &mut StageContext) -> Result<(), RuntimeError> {
    ///         let s = v.as_bytes().ok_or_else(|| RuntimeError::new("total_length: string required"))?;
    ///         self.total += String::from_utf8_lossy(s).chars().count() as i64;
    ///         Ok(())
    ///     }
    ///     fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
    ///         cx.emit(Value::from(self.total))
    ///     }
    /// }
    ///
    /// let interp = Interpreter::new();
    /// interp.registry().define_stage_fn("total_length", |_cx, vals| {
    ///     Args::new("total_length", vals).arity(0, 0)?;
    ///     Ok(Stream::value(Role::Filter, TotalLength { total: 0 }))
    /// });
    /// let (out, err) = (Capture::new(), Capture::new());
    /// interp.set_stdout(out.clone());
    /// interp.set_stderr(err.clone());
    /// let program = "[\"ab\", 7, \"cde\"] | total_length | stdout";
    /// // A stage error is reported and the stage goes on with the next value (5.6).
    /// assert_eq!(interp.run_str("-e", program, vec![], &RunOptions::default()), 1);
    /// assert_eq!(out.text(), "5\n");
    /// assert!(err.text().contains("total_length: string required"));
    /// ```
    pub fn define_stage_fn<F>(&self, name: &str, f: F)
    where
        F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError>
            + Send
            + Sync
            + 'static,
    {
        self.define_global(name, native_fn(name, true, f));
    }

    /// Declares the global native functions `names` free of side effects: each only
    /// reads its arguments and returns a value (or an error) and changes nothing
    /// else; a script function it calls must be called through the `CallContext` it
    /// was given, with its errors propagated unchanged (the called function is then
    /// checked itself). A `map` or `filter` whose function calls only such natives
    /// (and script code without `emit` or definitions) may then run on several cores
    /// at once; the difference cannot be observed. A name that is not a native
    /// function is ignored.
    ///
    /// ```
    /// use streem::ext::{Args, Value};
    /// use streem::Interpreter;
    ///
    /// let interp = Interpreter::new();
    /// let r = interp.registry();
    /// r.define_fn("square", |_cx, vals| {
    ///     let a = Args::new("square", vals);
    ///     a.arity(1, 1)?;
    ///     Ok(Value::Float(a.num(0)?.powi(2)))
    /// });
    /// r.mark_pure(&["square"]);
    /// ```
    pub fn mark_pure(&self, names: &[&str]) {
        for name in names {
            if let Some(Value::Func(f)) = self.g.prelude_get(Sym::new(name)) {
                if let Func::Native(n) = &*f {
                    n.pure.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// Opens a namespace, creating it if needed, to add methods and values to it:
    /// the builtin `number`, `string`, `array`, `time`, a native object's namespace
    /// ([`NativeObject::namespace`]), or any other (importable with `import`).
    pub fn namespace(&self, name: &str) -> NamespaceRegistry {
        let builtin = self.g.namespaces.get(name).is_none_or(|ns| ns.builtin);
        NamespaceRegistry {
            ns: self.g.namespaces.open(name, builtin),
        }
    }

    /// Looks up an existing namespace by name.
    pub fn find_namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.g.namespaces.get(name)
    }

    /// The interpreter's shared state.
    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }

    /// Subscribes `handler` to a process signal (9.2 item 9; numbers in [`signals`]).
    /// Handlers run on the interpreter's signal thread (not in signal context: they may
    /// lock and allocate), in subscription order, and *before* the runtime's own
    /// handling: when the interpreter owns the process
    /// ([`RunOptions::handle_signals`]), SIGINT and
    /// SIGTERM still flush output and exit with 130/143 afterwards (D66).
    ///
    /// Subscribing installs a handler for the signal in the process (through
    /// `signal-hook`, which chains with handlers installed earlier); the default
    /// action of the signal (e.g. termination for SIGINT when the runtime does not
    /// handle it) is then no longer taken. Fails for signals that cannot be handled
    /// (SIGKILL, SIGSTOP, SIGSEGV, ...).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use streem::ext::signals::SIGWINCH;
    /// use streem::Interpreter;
    ///
    /// let interp = Interpreter::new();
    /// let resized = Arc::new(AtomicUsize::new(0));
    /// let r = resized.clone();
    /// let id = interp.registry()
    ///     .on_signal(SIGWINCH, move || { r.fetch_add(1, Ordering::SeqCst); })
    ///     .unwrap();
    /// unsafe { libc::raise(SIGWINCH) };
    /// for _ in 0..500 {
    ///     if resized.load(Ordering::SeqCst) > 0 { break; }
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    /// }
    /// assert_eq!(resized.load(Ordering::SeqCst), 1);
    /// assert!(interp.registry().remove_signal(id));
    /// ```
    pub fn on_signal<F>(&self, signal: i32, handler: F) -> std::io::Result<SignalId>
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.g.signals.subscribe(signal, Arc::new(handler))
    }

    /// Removes a subscription made with [`on_signal`](Registry::on_signal); `false`
    /// if it was already removed.
    pub fn remove_signal(&self, id: SignalId) -> bool {
        self.g.signals.unsubscribe(id)
    }
}

/// Adds native methods and values to one namespace (from [`Registry::namespace`]).
pub struct NamespaceRegistry {
    ns: Arc<Namespace>,
}

impl NamespaceRegistry {
    /// A method: reachable by dispatch on the receiver (`x.name(...)` and
    /// `name(x, ...)`, 3.5), which is the first argument (`vals[0]`); not copied by
    /// `import`. A script may override it once (D70).
    pub fn define_method<F>(&self, name: &str, f: F) -> &Self
    where
        F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError>
            + Send
            + Sync
            + 'static,
    {
        let _ = self.ns.define(
            Sym::new(name),
            Binding {
                value: native_fn(name, false, f),
                is_method: true,
                native: true,
            },
        );
        self
    }

    /// A string method that only reads its receiver's bytes: `f` gets them and the
    /// arguments after the receiver (`args.bytes(0)` is argument 1 in messages);
    /// `min..=max` is the arity counting the receiver, as [`Args::arity`] counts it.
    ///
    /// It is a method like [`define_method`](Self::define_method)'s, declared pure,
    /// and more: a `map`, `filter` or `flatmap` whose function is one call of it
    /// (`{line -> line.length()}`, `{l -> l.contains("x")}`) and that reads the lines
    /// of a reader calls it on each line in the reader's buffer, without making a
    /// string of every line. Define it in the `string` namespace.
    ///
    /// ```
    /// use streem::ext::{Capture, Value};
    /// use streem::{Interpreter, RunOptions};
    ///
    /// let interp = Interpreter::new();
    /// interp.registry().namespace("string").define_bytes_method("vowels", 1, 1, |s, _args| {
    ///     Ok(Value::Int(s.iter().filter(|b| b"aeiou".contains(b)).count() as i64))
    /// });
    /// let out = Capture::new();
    /// interp.set_stdout(out.clone());
    /// let program = r#"["banana", "sky"] | map{w -> w.vowels()} | stdout"#;
    /// assert_eq!(interp.run_str("-e", program, vec![], &RunOptions::default()), 0);
    /// assert_eq!(out.text(), "3\n0\n");
    /// ```
    pub fn define_bytes_method<F>(&self, name: &str, min: usize, max: usize, f: F) -> &Self
    where
        F: Fn(&[u8], &Args<'_>) -> Result<Value, RuntimeError> + Send + Sync + 'static,
    {
        self.define_bytes_method_as(name, min, max, crate::eval::func::BytesKind::Other, f)
    }

    /// [`define_bytes_method`](Self::define_bytes_method), telling the runtime what
    /// it computes (builtins only).
    pub(crate) fn define_bytes_method_as<F>(
        &self,
        name: &str,
        min: usize,
        max: usize,
        kind: crate::eval::func::BytesKind,
        f: F,
    ) -> &Self
    where
        F: Fn(&[u8], &Args<'_>) -> Result<Value, RuntimeError> + Send + Sync + 'static,
    {
        let f: Arc<crate::eval::func::BytesMethodPtr> = Arc::new(f);
        let g = f.clone();
        let owned = name.to_owned();
        let value_form = move |_cx: &mut CallContext<'_>, vals: &[Value]| {
            let a = Args::method(&owned, vals);
            a.arity(min, max)?;
            let receiver = a.bytes(0)?;
            g(
                receiver,
                &Args {
                    name: &owned,
                    vals: &vals[1..],
                    base: 1,
                },
            )
        };
        let value = Value::Func(Arc::new(Func::Native(NativeFn {
            name: name.to_owned(),
            stage_constructor: false,
            f: Box::new(value_form),
            pure: std::sync::atomic::AtomicBool::new(true),
            bytes: Some(crate::eval::func::BytesMethod { min, max, f, kind }),
        })));
        let _ = self.ns.define(
            Sym::new(name),
            Binding {
                value,
                is_method: true,
                native: true,
            },
        );
        self
    }

    /// A function or constant that `import` copies into the importing scope.
    pub fn define_value(&self, name: &str, value: Value) -> &Self {
        let _ = self.ns.define(
            Sym::new(name),
            Binding {
                value,
                is_method: false,
                native: true,
            },
        );
        self
    }

    /// Declares the native methods and functions `names` of this namespace free of
    /// side effects (see [`Registry::mark_pure`]).
    pub fn mark_pure(&self, names: &[&str]) -> &Self {
        for name in names {
            if let Some(Value::Func(f)) = self.ns.get(Sym::new(name)) {
                if let Func::Native(n) = &*f {
                    n.pure.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }
}

/// Wraps a Rust closure as a function value named `name` (printed `<cfunc:NAME>`);
/// `stage_constructor` marks it as building a stage (D32).
pub fn native_fn<F>(name: &str, stage_constructor: bool, f: F) -> Value
where
    F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError> + Send + Sync + 'static,
{
    Value::Func(Arc::new(Func::Native(NativeFn {
        name: name.to_owned(),
        stage_constructor,
        f: Box::new(f),
        pure: std::sync::atomic::AtomicBool::new(false),
        bytes: None,
    })))
}

/// A shared in-memory sink for an interpreter's output
/// ([`Interpreter::set_stdout`]): clone it, hand one
/// clone to the interpreter and read the other.
///
/// ```
/// use std::io::Write;
/// use streem::ext::Capture;
///
/// let c = Capture::new();
/// let mut w = c.clone();
/// w.write_all(b"line\n").unwrap();
/// assert_eq!(c.text(), "line\n");
/// ```
#[derive(Clone, Default)]
pub struct Capture(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Capture {
    /// An empty capture.
    pub fn new() -> Capture {
        Capture::default()
    }

    /// What has been written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().clone()
    }

    /// What has been written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }

    /// Empties the capture.
    pub fn clear(&self) {
        self.0.lock().clear();
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
