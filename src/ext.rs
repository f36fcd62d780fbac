//! The public extension and embedding API (spec section 9.2).
//!
//! Every builtin of the standard library is registered through this module, exactly
//! as an extension would be: native functions receive a [`CallContext`] and their
//! arguments, extract them with [`Args`], and fail with [`RuntimeError`]; stages
//! implement [`Stage`]; names are installed with [`Registry`].

use std::sync::Arc;

pub use crate::eval::error::{err, RuntimeError};
pub use crate::eval::func::{Func, NativeFn};
pub use crate::eval::interp::Globals;
pub use crate::eval::namespace::Namespace;
pub use crate::eval::value::{Array, NativeObject, Str, Time, TimeOffset, Value};
pub use crate::runtime::io::{Io, IoBackend, IoMode, LineReader, Output};
pub use crate::runtime::stream::{
    BoxFuture, Inlet, Outlet, Produce, Role, Sink, Source, Stage, StageContext, Stream,
};

use crate::eval::func::Frame;
use crate::eval::namespace::Binding;
use crate::eval::symbol::Sym;

/// Receives the values a stage emits (the `emit` statement and [`CallContext::emit`]).
pub trait Emitter {
    fn emit(&mut self, v: Value) -> Result<(), RuntimeError>;
}

/// The top-level frame, borrowed from a running stage (no reference-count traffic per
/// value) or owned.
pub(crate) enum TopFrame<'a> {
    Owned(Arc<Frame>),
    Borrowed(&'a Arc<Frame>),
}

/// What a native function gets besides its arguments: the interpreter, and the stage
/// it runs in (if any), so that callbacks and `emit` work from native code.
pub struct CallContext<'a> {
    pub(crate) g: &'a Arc<Globals>,
    pub(crate) top: TopFrame<'a>,
    pub(crate) emitter: Option<&'a mut dyn Emitter>,
    pub(crate) depth: u32,
    /// Lowest native stack address calls may reach (0: not yet measured).
    pub(crate) stack_floor: usize,
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
        }
    }

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

    /// Emits from the stage whose callback is running (5.5). `nil` is not sent.
    pub fn emit(&mut self, v: Value) -> Result<(), RuntimeError> {
        if v.is_nil() {
            return Ok(());
        }
        match self.emitter.as_deref_mut() {
            Some(e) => e.emit(v),
            None => Err(RuntimeError::new("emit outside a pipeline stage")),
        }
    }

    /// Calls any callable value with arguments; emits inside it go to the current stage.
    pub fn call(&mut self, f: &Value, args: &[Value]) -> Result<Value, RuntimeError> {
        self.call_value(f, args)
    }

    /// Calls `f` with one element the way stages and `map`/`filter`/`each` do (6.0,
    /// D34): a parameterless lambda is called with no arguments.
    pub fn call_with_element(&mut self, f: &Value, v: Value) -> Result<Value, RuntimeError> {
        if let Value::Func(func) = f {
            if let Func::Closure { code, .. } = &**func {
                if code.parameterless {
                    return self.call_value(f, &[]);
                }
            }
        }
        self.call_value(f, &[v])
    }

    /// The text `print` writes for `v`.
    pub fn display(&mut self, v: &Value) -> Result<Vec<u8>, RuntimeError> {
        self.to_display_string(v)
    }
}

/// Argument accessors producing uniform errors that name the function and the argument
/// position (`sort_by: argument 1: function required`).
pub struct Args<'v> {
    pub name: &'v str,
    pub vals: &'v [Value],
    /// Position of `vals[0]` in messages: 1 for functions, 0 for methods (whose
    /// receiver is argument 0).
    pub base: usize,
}

impl<'v> Args<'v> {
    pub fn new(name: &'v str, vals: &'v [Value]) -> Args<'v> {
        Args {
            name,
            vals,
            base: 1,
        }
    }

    pub fn method(name: &'v str, vals: &'v [Value]) -> Args<'v> {
        Args {
            name,
            vals,
            base: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }

    pub fn error(&self, i: usize, what: &str) -> RuntimeError {
        RuntimeError::new(format!("{}: argument {}: {what}", self.name, i + self.base))
    }

    /// Fails unless `min <= len <= max`.
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

    pub fn get(&self, i: usize) -> Option<&'v Value> {
        self.vals.get(i)
    }

    pub fn value(&self, i: usize) -> Result<&'v Value, RuntimeError> {
        self.vals.get(i).ok_or_else(|| self.error(i, "missing"))
    }

    pub fn num(&self, i: usize) -> Result<f64, RuntimeError> {
        self.value(i)?
            .as_f64()
            .ok_or_else(|| self.error(i, "number required"))
    }

    /// A number kept as a value (integer or float).
    pub fn number(&self, i: usize) -> Result<&'v Value, RuntimeError> {
        let v = self.value(i)?;
        if v.is_number() {
            Ok(v)
        } else {
            Err(self.error(i, "number required"))
        }
    }

    /// A number truncated toward zero.
    pub fn int(&self, i: usize) -> Result<i64, RuntimeError> {
        match self.value(i)? {
            Value::Int(n) => Ok(*n),
            Value::Float(f) if f.is_finite() => Ok(f.trunc() as i64),
            Value::Float(_) => Err(self.error(i, "finite number required")),
            _ => Err(self.error(i, "number required")),
        }
    }

    pub fn bytes(&self, i: usize) -> Result<&'v [u8], RuntimeError> {
        self.value(i)?
            .as_bytes()
            .ok_or_else(|| self.error(i, "string required"))
    }

    pub fn str(&self, i: usize) -> Result<&'v Str, RuntimeError> {
        match self.value(i)? {
            Value::Str(s) => Ok(s),
            _ => Err(self.error(i, "string required")),
        }
    }

    pub fn array(&self, i: usize) -> Result<&'v Arc<Array>, RuntimeError> {
        self.value(i)?
            .as_array()
            .ok_or_else(|| self.error(i, "array required"))
    }

    pub fn boolean(&self, i: usize) -> Result<bool, RuntimeError> {
        match self.value(i)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.error(i, "boolean required")),
        }
    }

    /// Any callable value.
    pub fn func(&self, i: usize) -> Result<&'v Value, RuntimeError> {
        match self.value(i)? {
            v @ (Value::Func(_) | Value::Array(_)) => Ok(v),
            _ => Err(self.error(i, "function required")),
        }
    }
}

/// Installs globals, functions, namespaces and methods (9.2 item 5).
#[derive(Clone)]
pub struct Registry {
    pub(crate) g: Arc<Globals>,
}

impl Registry {
    /// Binds a global (prelude) value.
    pub fn define_global(&self, name: &str, value: Value) {
        self.g.prelude_define(Sym::new(name), value);
    }

    /// Binds a global native function.
    pub fn define_fn<F>(&self, name: &str, f: F)
    where
        F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError>
            + Send
            + Sync
            + 'static,
    {
        self.define_global(name, native_fn(name, false, f));
    }

    /// Binds a global stage constructor (D32): used bare as a pipe destination, it is
    /// called with no arguments.
    pub fn define_stage_fn<F>(&self, name: &str, f: F)
    where
        F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError>
            + Send
            + Sync
            + 'static,
    {
        self.define_global(name, native_fn(name, true, f));
    }

    /// Opens (creating if needed) a namespace to add methods to it.
    pub fn namespace(&self, name: &str) -> NamespaceRegistry {
        let builtin = self.g.namespaces.get(name).is_none_or(|ns| ns.builtin);
        NamespaceRegistry {
            ns: self.g.namespaces.open(name, builtin),
        }
    }

    /// Looks up a namespace by name.
    pub fn find_namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.g.namespaces.get(name)
    }

    pub fn globals(&self) -> &Arc<Globals> {
        &self.g
    }
}

/// Adds native methods and constants to one namespace.
pub struct NamespaceRegistry {
    ns: Arc<Namespace>,
}

impl NamespaceRegistry {
    /// A method: the receiver is the first argument.
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

    /// A function or constant that `import` copies.
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

    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }
}

/// Wraps a Rust closure as a function value.
pub fn native_fn<F>(name: &str, stage_constructor: bool, f: F) -> Value
where
    F: Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError> + Send + Sync + 'static,
{
    Value::Func(Arc::new(Func::Native(NativeFn {
        name: name.to_owned(),
        stage_constructor,
        f: Box::new(f),
    })))
}
