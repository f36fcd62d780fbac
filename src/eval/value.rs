//! The value model of spec section 4.
//!
//! `Value` is 16 bytes: scalars inline, everything else behind one thin `Arc`, so a
//! batch of values is compact and cloning is a reference-count increment.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use triomphe::ThinArc;

use super::func::Func;
use super::namespace::Namespace;
use crate::runtime::io::Io;
use crate::runtime::stream::Stream;

/// An immutable byte string (strings may hold any bytes, spec 4.4).
#[derive(Clone)]
pub struct Str(ThinArc<(), u8>);

impl Str {
    /// A string holding a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Str {
        Str(ThinArc::from_header_and_slice((), bytes))
    }

    /// The bytes of the string.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.slice
    }

    /// The text, with invalid UTF-8 replaced (for messages and names).
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Whether both are the same allocation.
    pub fn ptr_eq(a: &Str, b: &Str) -> bool {
        std::ptr::eq(a.0.as_ptr(), b.0.as_ptr())
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        Str::ptr_eq(self, other) || self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Str {}

impl std::hash::Hash for Str {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_str_lossy())
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str::new(s.as_bytes())
    }
}

impl From<&[u8]> for Str {
    fn from(s: &[u8]) -> Str {
        Str::new(s)
    }
}

/// Field names of a struct: one optional name per element (unlabeled elements of a
/// mixed literal have none). Shared between rows of one CSV file.
pub type Fields = Arc<[Option<Str>]>;

/// An array, struct (with field names) or object (with a class), spec 4.5.
pub struct Array {
    /// The elements.
    pub items: Vec<Value>,
    /// Field names of a struct (`[a: 1, b: 2]`), one per element.
    pub fields: Option<Fields>,
    /// The class of an object (made by `new`): methods dispatch to it.
    pub class: Option<Arc<Namespace>>,
}

impl Array {
    /// A plain array (no field names, no class).
    pub fn plain(items: Vec<Value>) -> Array {
        Array {
            items,
            fields: None,
            class: None,
        }
    }

    /// The value of the first field called `name`.
    pub fn field(&self, name: &[u8]) -> Option<&Value> {
        let fields = self.fields.as_ref()?;
        fields
            .iter()
            .position(|f| f.as_ref().is_some_and(|f| f.as_bytes() == name))
            .and_then(|i| self.items.get(i))
    }

    /// Whether this is a struct (has field names).
    pub fn has_fields(&self) -> bool {
        self.fields.is_some()
    }
}

/// How a time is displayed (spec 4.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeOffset {
    /// Created from a date without a time: prints `YYYY.MM.DD`, fields in UTC.
    DateOnly,
    /// Offset from UTC in seconds.
    Seconds(i32),
}

/// An instant with a display offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Sub-second part, 0..1e9.
    pub nanos: u32,
    /// How it is displayed.
    pub offset: TimeOffset,
}

impl Time {
    /// Total nanoseconds since the epoch (exact).
    pub fn total_nanos(&self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }
}

/// A value implemented natively by an extension or builtin (kvs, ...). Method calls
/// dispatch to the namespace it names (spec 3.5, 9.1 auxiliary objects).
pub trait NativeObject: Any + Send + Sync {
    /// Name of the namespace its methods live in.
    fn namespace(&self) -> &str;
    /// Printed form when its namespace defines no `string` (4.12 step 10).
    fn display(&self) -> String {
        format!("<obj:{}>", self.namespace())
    }
    /// Equality with another native object (4.9): `Some(answer)`, or `None` (the
    /// default) for identity.
    fn equals(&self, _other: &dyn NativeObject) -> Option<bool> {
        None
    }
    /// The object as `Any`, to downcast it (`Args::native` does): implement it as `self`.
    fn as_any(&self) -> &dyn Any;
}

/// Holder so that `Value::Native` is a thin pointer.
pub struct NativeBox(
    /// The object.
    pub Box<dyn NativeObject>,
);

/// A Streem value (spec 4.1): cloneable (a reference-count increment for heap
/// values), `Send + Sync`, 16 bytes.
///
/// ```
/// use streem::ext::{Value, inspect};
///
/// let row = Value::array(vec![Value::Int(1), 2.5.into(), "three".into(), Value::Nil]);
/// assert_eq!(inspect(&row), "[1, 2.5, \"three\", nil]");
/// let items = &row.as_array().unwrap().items;
/// assert_eq!(items[0].as_int(), Some(1));
/// assert_eq!(items[1].as_int(), Some(2));          // truncated
/// assert_eq!(items[2].as_bytes(), Some(&b"three"[..]));
/// assert!(!items[3].truthy() && Value::Int(0).truthy());   // D13
/// assert_eq!(items[2].type_name(), "string");
/// ```
#[derive(Clone, Default)]
pub enum Value {
    /// `nil`.
    #[default]
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (4.3).
    Int(i64),
    /// A float (4.3).
    Float(f64),
    /// A string (any bytes, 4.4).
    Str(Str),
    /// An array, struct or object (4.5).
    Array(Arc<Array>),
    /// A function: lambda, native function or `&name` (4.6).
    Func(Arc<Func>),
    /// A stream (a node of the graph).
    Stream(Arc<Stream>),
    /// An io object (4.7).
    Io(Arc<Io>),
    /// A time (4.8).
    Time(Arc<Time>),
    /// A native object of an extension or builtin ([`NativeObject`]).
    Native(Arc<NativeBox>),
}

const _: () = assert!(std::mem::size_of::<Value>() == 16);

impl Value {
    /// A string value (copied).
    pub fn str(s: &str) -> Value {
        Value::Str(Str::from(s))
    }

    /// A string value from any bytes (copied).
    pub fn bytes(b: &[u8]) -> Value {
        Value::Str(Str::new(b))
    }

    /// A plain array value.
    pub fn array(items: Vec<Value>) -> Value {
        Value::Array(Arc::new(Array::plain(items)))
    }

    /// A time value.
    pub fn time(t: Time) -> Value {
        Value::Time(Arc::new(t))
    }

    /// A native object value; its methods live in the namespace it names.
    pub fn native(obj: impl NativeObject) -> Value {
        Value::Native(Arc::new(NativeBox(Box::new(obj))))
    }

    /// Whether this is `nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// D13: only `nil` and `false` are falsy.
    #[inline]
    pub fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// A number as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A number truncated toward zero (spec 6.0 "integer").
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.is_finite() => Some(f.trunc() as i64),
            _ => None,
        }
    }

    /// The bytes of a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// An array, struct or object.
    pub fn as_array(&self) -> Option<&Arc<Array>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this is an integer or a float.
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }

    /// A native object of type `T`.
    pub fn as_native<T: NativeObject>(&self) -> Option<&T> {
        match self {
            Value::Native(n) => n.0.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }

    /// Short type name for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Array(a) => {
                if a.class.is_some() {
                    "object"
                } else if a.fields.is_some() {
                    "struct"
                } else {
                    "array"
                }
            }
            Value::Func(_) => "function",
            Value::Stream(_) => "stream",
            Value::Io(_) => "io",
            Value::Time(_) => "time",
            Value::Native(_) => "object",
        }
    }

    /// Identity of heap values (for `==` on opaque values).
    pub fn same_object(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Func(a), Value::Func(b)) => {
                Arc::ptr_eq(a, b)
                    || match (&**a, &**b) {
                        // A closure read back from its own frame is rebuilt on each
                        // read (see `Frame`): same code and frame is the same function.
                        (
                            Func::Closure { code: c1, env: e1 },
                            Func::Closure { code: c2, env: e2 },
                        ) => {
                            Arc::ptr_eq(c1, c2)
                                && match (e1, e2) {
                                    (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                                    (None, None) => true,
                                    _ => false,
                                }
                        }
                        _ => false,
                    }
            }
            (Value::Stream(a), Value::Stream(b)) => Arc::ptr_eq(a, b),
            (Value::Io(a), Value::Io(b)) => Arc::ptr_eq(a, b),
            (Value::Native(a), Value::Native(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::str(&s)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::array(v)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::print::inspect_plain(self))
    }
}
