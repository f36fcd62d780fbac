//! Namespaces (spec 3.3, 3.5): the tables method dispatch looks names up in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
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

pub struct Namespace {
    pub name: String,
    /// Builtin namespaces (number, string, ...) cannot be instantiated with `new`.
    pub builtin: bool,
    has_string: AtomicBool,
    table: RwLock<FxHashMap<Sym, Binding>>,
}

/// Set when user code overrides an operator of a builtin namespace, which turns
/// off the evaluator's arithmetic fast paths.
pub static BUILTIN_OPERATOR_OVERRIDDEN: AtomicBool = AtomicBool::new(false);

impl Namespace {
    pub fn new(name: &str, builtin: bool) -> Namespace {
        Namespace {
            name: name.to_owned(),
            builtin,
            has_string: AtomicBool::new(false),
            table: RwLock::new(FxHashMap::default()),
        }
    }

    #[inline]
    pub fn get(&self, name: Sym) -> Option<Value> {
        if !name.in_namespace() {
            return None;
        }
        self.table.read().get(&name).map(|b| b.value.clone())
    }

    pub fn binding(&self, name: Sym) -> Option<Binding> {
        self.table.read().get(&name).cloned()
    }

    /// Binds a name. Returns the existing binding instead when the name is already
    /// bound by user code (D11); a native binding may be overridden (D70).
    pub fn define(&self, name: Sym, binding: Binding) -> Result<(), Binding> {
        let mut table = self.table.write();
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
        Ok(())
    }

    /// Whether the namespace binds `string` (4.12 step 1), without a lookup.
    #[inline]
    pub fn has_string(&self) -> bool {
        self.has_string.load(Ordering::Relaxed)
    }

    /// Bindings that `import` copies (not methods).
    pub fn importable(&self) -> Vec<(Sym, Value)> {
        let mut v: Vec<(Sym, Value)> = self
            .table
            .read()
            .iter()
            .filter(|(_, b)| !b.is_method)
            .map(|(k, b)| (*k, b.value.clone()))
            .collect();
        v.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        v
    }

    pub fn names(&self) -> Vec<Sym> {
        self.table.read().keys().copied().collect()
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
