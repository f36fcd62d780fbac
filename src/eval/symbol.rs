//! Interned names. Every name in a program or registered by native code is interned
//! once; the evaluator then compares and hashes pointers, never strings.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

pub struct SymInfo {
    name: &'static str,
    /// Set once any namespace binds this name: a call of a name that no namespace
    /// binds skips dispatch entirely (the common case for user functions).
    in_namespace: AtomicBool,
}

/// An interned name. Cheap to copy, compare and hash.
#[derive(Clone, Copy)]
pub struct Sym(&'static SymInfo);

static INTERNER: LazyLock<Mutex<HashMap<&'static str, Sym>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl Sym {
    pub fn new(name: &str) -> Sym {
        let mut table = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = table.get(name) {
            return *s;
        }
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let info: &'static SymInfo = Box::leak(Box::new(SymInfo {
            name,
            in_namespace: AtomicBool::new(false),
        }));
        let sym = Sym(info);
        table.insert(name, sym);
        sym
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    #[inline]
    pub fn in_namespace(self) -> bool {
        self.0.in_namespace.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_in_namespace(self) {
        self.0.in_namespace.store(true, Ordering::Relaxed)
    }
}

impl PartialEq for Sym {
    fn eq(&self, other: &Sym) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}
impl Eq for Sym {}

impl Hash for Sym {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0 as *const SymInfo as usize).hash(state)
    }
}

impl std::fmt::Debug for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}
