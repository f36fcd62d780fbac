//! Function values (spec 4.6) and the frames closures capture.

use std::fmt;
use std::sync::{Arc, OnceLock};

use super::error::RuntimeError;
use super::ir::{FnCode, VarRef};
use super::symbol::Sym;
use super::value::Value;
use crate::ext::{Args, CallContext};

/// What a frame slot stores. A closure stored into the frame it captures would form
/// a reference cycle (frame -> closure -> frame) and leak every call of a function
/// with a local recursive helper (D21); such closures are stored without their
/// environment and rebuilt on each read.
#[derive(Clone)]
pub(crate) enum Stored {
    Value(Value),
    SelfClosure(Arc<FnCode>),
}

/// A heap frame: the variables of one scope activation that closures can capture.
/// Bindings are single-assignment, so each slot is set at most once.
pub struct Frame {
    slots: Box<[OnceLock<Stored>]>,
    /// A function-call frame, freed when its call ends (unless captured): closures
    /// stored into it must not keep it alive. Top-level and namespace frames live as
    /// long as the program and store closures as they are.
    call: bool,
    pub(crate) parent: Option<Arc<Frame>>,
}

impl Frame {
    pub fn new(nslots: usize, parent: Option<Arc<Frame>>) -> Arc<Frame> {
        Frame::with_kind(nslots, parent, true)
    }

    /// A frame that lives as long as the program (top level, namespace bodies).
    pub fn permanent(nslots: usize, parent: Option<Arc<Frame>>) -> Arc<Frame> {
        Frame::with_kind(nslots, parent, false)
    }

    fn with_kind(nslots: usize, parent: Option<Arc<Frame>>, call: bool) -> Arc<Frame> {
        Arc::new(Frame {
            call,
            slots: (0..nslots).map(|_| OnceLock::new()).collect(),
            parent,
        })
    }

    /// Reads slot `i` of `this` frame.
    #[inline]
    pub(crate) fn get(this: &Arc<Frame>, i: u32) -> Option<Value> {
        match this.slots.get(i as usize)?.get()? {
            Stored::Value(v) => Some(v.clone()),
            Stored::SelfClosure(code) => Some(Value::Func(Arc::new(Func::Closure {
                code: code.clone(),
                env: Some(this.clone()),
            }))),
        }
    }

    /// A bound plain value of slot `i`, borrowed (closures stored as `SelfClosure` are
    /// not returned: they must be rebuilt).
    #[inline]
    pub(crate) fn get_ref(&self, i: u32) -> Option<&Value> {
        match self.slots.get(i as usize)?.get()? {
            Stored::Value(v) => Some(v),
            Stored::SelfClosure(_) => None,
        }
    }

    /// Binds slot `i`; `Err` if it is already bound.
    pub(crate) fn set(this: &Arc<Frame>, i: u32, v: Value) -> Result<(), ()> {
        let stored = match &v {
            Value::Func(f) => match &**f {
                Func::Closure {
                    code,
                    env: Some(env),
                } if this.call && Arc::ptr_eq(env, this) => Stored::SelfClosure(code.clone()),
                _ => Stored::Value(v),
            },
            _ => Stored::Value(v),
        };
        match this.slots.get(i as usize) {
            Some(slot) => slot.set(stored).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// A permanent frame with `nslots` slots holding the bindings of `old` (the
    /// top-level frame of a session grows with each input).
    pub(crate) fn grown(old: &Frame, nslots: usize) -> Arc<Frame> {
        let f = Frame::permanent(nslots.max(old.slots.len()), old.parent.clone());
        for (i, slot) in old.slots.iter().enumerate() {
            if let Some(v) = slot.get() {
                let _ = f.slots[i].set(v.clone());
            }
        }
        f
    }

    /// The `depth`-th ancestor (0 = this frame).
    #[inline]
    pub(crate) fn ancestor(this: &Arc<Frame>, depth: u32) -> Option<&Arc<Frame>> {
        let mut f = this;
        for _ in 0..depth {
            f = f.parent.as_ref()?;
        }
        Some(f)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The signature of a native function (spec 9.2 item 2).
pub type NativeFnPtr =
    dyn Fn(&mut CallContext<'_>, &[Value]) -> Result<Value, RuntimeError> + Send + Sync;

/// A builtin or extension function.
pub struct NativeFn {
    /// Registered name, printed as `<cfunc:NAME>`.
    pub name: String,
    /// A stage constructor (D32): used bare as a pipe destination it is called with
    /// no arguments to build the stage.
    pub stage_constructor: bool,
    /// The Rust closure.
    pub f: Box<NativeFnPtr>,
    /// Declared free of side effects ([`Registry::mark_pure`](crate::ext::Registry::mark_pure)).
    pub(crate) pure: std::sync::atomic::AtomicBool,
    /// The form of a string method that reads its receiver as bytes
    /// ([`NamespaceRegistry::define_bytes_method`](crate::ext::NamespaceRegistry::define_bytes_method)).
    pub(crate) bytes: Option<BytesMethod>,
}

/// The signature of a string method's bytes form: the receiver's bytes, and the
/// arguments after it (argument 1 in messages is the first of them).
pub type BytesMethodPtr = dyn Fn(&[u8], &Args<'_>) -> Result<Value, RuntimeError> + Send + Sync;

/// A string method callable on bytes that are not a string value yet (a line in a
/// reader's buffer): see `runtime::io::Lines`.
pub struct BytesMethod {
    /// Arity, the receiver included, as `Args::arity` counts it.
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) f: Arc<BytesMethodPtr>,
    /// What the runtime may assume about it.
    pub(crate) kind: BytesKind,
}

/// What a bytes method is known to compute, for shortcuts over whole blocks of lines.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BytesKind {
    /// Nothing known.
    Other,
    /// Whether its one argument, a string, occurs in the receiver (the builtin
    /// `contains`): a filter on it may search a block of lines at once.
    Contains,
    /// `split`: with no argument (or `" "`) the words of the receiver (runs of
    /// ASCII non-whitespace): a `flatmap` of it may split a block of lines at once.
    Split,
}

impl BytesMethod {
    /// Calls the method `name` on `receiver` with the arguments `rest`.
    pub(crate) fn call(
        &self,
        name: &str,
        receiver: &[u8],
        rest: &[Value],
    ) -> Result<Value, RuntimeError> {
        let n = rest.len() + 1;
        if n < self.min || n > self.max {
            // The message of the value form (which counts the receiver).
            let mut vals: smallvec::SmallVec<[Value; 4]> = smallvec::smallvec![Value::Nil];
            vals.extend(rest.iter().cloned());
            Args::method(name, &vals).arity(self.min, self.max)?;
        }
        (self.f)(
            receiver,
            &Args {
                name,
                vals: rest,
                base: 1,
            },
        )
    }
}

impl NativeFn {
    /// Whether the function was declared free of side effects, so that a `map` or
    /// `filter` calling it may run on several cores at once.
    pub fn is_pure(&self) -> bool {
        self.pure.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A callable value. Call any of them with [`CallContext::call`]; the fields of
/// `Closure` and `Generic` are internal (not part of the stable API).
#[non_exhaustive]
pub enum Func {
    /// A lambda or case lambda with the frame it was created in.
    Closure {
        #[doc(hidden)]
        code: Arc<FnCode>,
        #[doc(hidden)]
        env: Option<Arc<Frame>>,
    },
    /// A native function (builtin or extension).
    Native(NativeFn),
    /// `&name`: an ordinary call of `name` in the scope where it was written.
    Generic {
        #[doc(hidden)]
        name: Sym,
        /// Lexical binding relative to `env` (`Up(0, i)` is a slot of `env`).
        #[doc(hidden)]
        var: VarRef,
        #[doc(hidden)]
        env: Option<Arc<Frame>>,
    },
}

impl Func {
    /// The registered name of a native function.
    pub fn native_name(&self) -> Option<&str> {
        match self {
            Func::Native(n) => Some(&n.name),
            _ => None,
        }
    }
}

impl fmt::Debug for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Func::Closure { .. } => f.write_str("<lambda>"),
            Func::Native(n) => write!(f, "<cfunc:{}>", n.name),
            Func::Generic { name, .. } => write!(f, "<genfunc:&{}>", name.name()),
        }
    }
}
