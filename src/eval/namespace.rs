//! Namespaces (spec 3.3, 3.5): the tables method dispatch looks names up in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use super::symbol::Sym;
use super::value::Value;

#[derive(Clone)]
pub struct Binding {
    pub value: Value,
    /// Made by `method`: reachable by dispatch only, not copied by `import` (D70).
    pub is_method: bool,
    /// Registered by native code (a builtin); user code may override it once.
    pub native: bool,
}

/// A namespace: the methods and values of a type (`number`, `string`, `array`, `time`,
/// a native object's) or of a user namespace/class (3.3, 3.5).
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Builtin namespaces (number, string, ...) cannot be instantiated with `new`.
    pub builtin: bool,
    has_string: AtomicBool,
    /// Read on every method call, written almost never (definitions): readers load
    /// a snapshot without locking or touching a shared counter.
    table: ArcSwap<FxHashMap<Sym, Binding>>,
    writer: Mutex<()>,
}

/// Bumped whenever a namespace binds a name: method caches compare it.
pub static NAMESPACE_GENERATION: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Set when user code overrides an operator of a builtin namespace, which turns
/// off the evaluator's arithmetic fast paths.
pub static BUILTIN_OPERATOR_OVERRIDDEN: AtomicBool = AtomicBool::new(false);

impl Namespace {
    pub(crate) fn new(name: &str, builtin: bool) -> Namespace {
        Namespace {
            name: name.to_owned(),
            builtin,
            has_string: AtomicBool::new(false),
            table: ArcSwap::from_pointee(FxHashMap::default()),
            writer: Mutex::new(()),
        }
    }

    #[inline]
    pub(crate) fn get(&self, name: Sym) -> Option<Value> {
        if !name.in_namespace() {
            return None;
        }
        self.table.load().get(&name).map(|b| b.value.clone())
    }

    /// The value bound to `name` (a method or a value), if any.
    pub fn lookup(&self, name: &str) -> Option<Value> {
        self.get(Sym::new(name))
    }

    pub(crate) fn binding(&self, name: Sym) -> Option<Binding> {
        self.table.load().get(&name).cloned()
    }

    /// Binds a name. Returns the existing binding instead when the name is already
    /// bound by user code (D11); a native binding may be overridden (D70).
    pub(crate) fn define(&self, name: Sym, binding: Binding) -> Result<(), Binding> {
        let _writer = self.writer.lock();
        let mut table: FxHashMap<Sym, Binding> = (**self.table.load()).clone();
        if let Some(old) = table.get(&name) {
            if !old.native {
                return Err(old.clone());
            }
        }
        if self.builtin && !binding.native && is_operator(name.name()) {
            BUILTIN_OPERATOR_OVERRIDDEN.store(true, Ordering::Relaxed);
        }
        if name.name() == "string" {
            self.has_string.store(true, Ordering::Relaxed);
        }
        name.mark_in_namespace();
        table.insert(name, binding);
        self.table.store(std::sync::Arc::new(table));
        NAMESPACE_GENERATION.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Whether the namespace binds `string` (4.12 step 1), without a lookup.
    #[inline]
    pub fn has_string(&self) -> bool {
        self.has_string.load(Ordering::Relaxed)
    }

    /// Calls `f` with the binding of `name` without cloning it (the snapshot stays
    /// alive for the duration of `f`).
    #[inline]
    pub fn with_value<R>(&self, name: Sym, f: impl FnOnce(Option<&Value>) -> R) -> R {
        if !name.in_namespace() {
            return f(None);
        }
        let table = self.table.load();
        f(table.get(&name).map(|b| &b.value))
    }

    /// Bindings that `import` copies (not methods).
    pub(crate) fn importable(&self) -> Vec<(Sym, Value)> {
        let mut v: Vec<(Sym, Value)> = self
            .table
            .load()
            .iter()
            .filter(|(_, b)| !b.is_method)
            .map(|(k, b)| (*k, b.value.clone()))
            .collect();
        v.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        v
    }

    pub(crate) fn names(&self) -> Vec<Sym> {
        self.table.load().keys().copied().collect()
    }
}

fn is_operator(name: &str) -> bool {
    matches!(
        name,
        "+" | "-" | "*" | "/" | "%" | "<" | "<=" | ">" | ">=" | "==" | "!=" | "|" | "&"
    )
}

/// The global registry of namespaces by name.
#[derive(Default)]
pub struct Namespaces {
    map: RwLock<FxHashMap<String, Arc<Namespace>>>,
}

impl Namespaces {
    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.map.read().get(name).cloned()
    }

    /// Finds or creates a namespace.
    pub fn open(&self, name: &str, builtin: bool) -> Arc<Namespace> {
        let mut map = self.map.write();
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(Namespace::new(name, builtin)))
            .clone()
    }

    pub fn all_names(&self) -> Vec<String> {
        self.map.read().keys().cloned().collect()
    }
}
