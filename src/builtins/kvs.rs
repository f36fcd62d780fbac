//! The in-memory key-value store `kvs` (spec 6.14, D64).
//!
//! A store is a hash map from key strings (4.12 printed form) to values plus a global
//! version counter, behind one `parking_lot` lock, so stages running on several
//! threads can share it. Every entry remembers the version that last wrote it:
//! `update` re-runs its function when the entry changed while the function ran, and a
//! transaction compares the store's version with the snapshot it started from.
//!
//! Transactions are optimistic: every attempt gets a fresh `kvs_txn` object with an
//! empty private write set and a snapshot of the store version. Reads see the private
//! writes first, then the store; a read that finds the store changed since the snapshot
//! restarts the attempt immediately (the error unwinds through the script function and
//! is recognised by the flag it leaves on the transaction object). At commit the
//! version is checked again and the writes are applied atomically, or the attempt is
//! discarded and the function run again (at most 10 restarts).

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::ext::{Args, CallContext, NativeObject, Registry, RuntimeError, Str, Value};

/// `update` runs its function at most this many times.
const UPDATE_ATTEMPTS: usize = 10;
/// A transaction is restarted at most this many times.
const TXN_RESTARTS: usize = 10;

struct Entry {
    value: Value,
    version: u64,
}

#[derive(Default)]
struct Store {
    map: FxHashMap<Str, Entry>,
    /// Incremented by every committed change.
    version: u64,
}

/// The shared state of one store.
struct KvsInner {
    store: Mutex<Store>,
    closed: AtomicBool,
}

impl KvsInner {
    fn check_open(&self) -> Result<(), RuntimeError> {
        if self.closed.load(Ordering::Acquire) {
            Err(RuntimeError::new("kvs is closed"))
        } else {
            Ok(())
        }
    }
}

/// The value returned by `kvs()`.
pub struct Kvs {
    inner: Arc<KvsInner>,
}

impl NativeObject for Kvs {
    fn namespace(&self) -> &str {
        "kvs"
    }
    fn display(&self) -> String {
        "<kvs>".into()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct TxnState {
    /// False once the transaction function has returned.
    active: bool,
    /// Store version when this attempt started.
    snapshot: u64,
    /// Private writes, in the order of first write.
    writes: FxHashMap<Str, Value>,
    /// Set when a read noticed a concurrent change: the attempt must restart.
    restart: bool,
}

/// The object passed to a transaction function (one per attempt).
pub struct KvsTxn {
    db: Arc<KvsInner>,
    state: Mutex<TxnState>,
}

impl NativeObject for KvsTxn {
    fn namespace(&self) -> &str {
        "kvs_txn"
    }
    fn display(&self) -> String {
        "<kvs_txn>".into()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The key string of any value (4.12): `1` and `"1"` are the same key.
fn key_of(cx: &mut CallContext, v: &Value) -> Result<Str, RuntimeError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        _ => Ok(Str::new(&cx.to_display_string(v)?)),
    }
}

fn no_value(key: &Str) -> RuntimeError {
    RuntimeError::new(format!("kvs: no value for key {}", key.to_str_lossy()))
}

fn receiver<'v, T: 'static>(a: &Args<'v>, what: &str) -> Result<&'v T, RuntimeError> {
    match a.value(0)? {
        Value::Native(n) => {
            n.0.as_any()
                .downcast_ref::<T>()
                .ok_or_else(|| a.error(0, &format!("{what} required")))
        }
        _ => Err(a.error(0, &format!("{what} required"))),
    }
}

fn db_of<'v>(a: &Args<'v>) -> Result<&'v Arc<KvsInner>, RuntimeError> {
    let k: &Kvs = receiver(a, "kvs")?;
    k.inner.check_open()?;
    Ok(&k.inner)
}

fn txn_of<'v>(a: &Args<'v>) -> Result<&'v KvsTxn, RuntimeError> {
    let t: &KvsTxn = receiver(a, "kvs_txn")?;
    t.db.check_open()?;
    if !t.state.lock().active {
        return Err(RuntimeError::new("invalid transaction"));
    }
    Ok(t)
}

fn put(db: &KvsInner, key: Str, value: Value) {
    let mut st = db.store.lock();
    st.version += 1;
    let version = st.version;
    st.map.insert(key, Entry { value, version });
}

/// `db.update(key, f)` (D64): re-runs `f` when the entry changed while it ran.
fn update(cx: &mut CallContext, db: &KvsInner, key: Str, f: &Value) -> Result<Value, RuntimeError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let (old, version) = {
            let st = db.store.lock();
            match st.map.get(&key) {
                Some(e) => (e.value.clone(), e.version),
                None => return Err(no_value(&key)),
            }
        };
        let new = cx.call_with_element(f, old)?;
        db.check_open()?;
        let mut st = db.store.lock();
        let current = match st.map.get(&key) {
            Some(e) => e.version,
            None => return Err(no_value(&key)),
        };
        if current == version {
            st.version += 1;
            let v = st.version;
            st.map.insert(
                key,
                Entry {
                    value: new.clone(),
                    version: v,
                },
            );
            return Ok(new);
        }
    }
    Err(RuntimeError::new("too many update retries"))
}

/// Signals a conflict from inside a transaction: flags the attempt and unwinds.
fn conflict(st: &mut TxnState) -> RuntimeError {
    st.restart = true;
    RuntimeError::new("kvs: transaction conflict (restarting)")
}

/// A transactional read: private writes first, then the store if unchanged.
fn txn_read(t: &KvsTxn, key: &Str) -> Result<Option<Value>, RuntimeError> {
    let mut st = t.state.lock();
    if let Some(v) = st.writes.get(key) {
        return Ok(Some(v.clone()));
    }
    let store = t.db.store.lock();
    if store.version != st.snapshot {
        drop(store);
        return Err(conflict(&mut st));
    }
    Ok(store.map.get(key).map(|e| e.value.clone()))
}

/// `db.txn(f)`: optimistic transaction with restarts (D64).
fn txn(cx: &mut CallContext, db: &Arc<KvsInner>, f: &Value) -> Result<Value, RuntimeError> {
    for _ in 0..=TXN_RESTARTS {
        db.check_open()?;
        let snapshot = db.store.lock().version;
        let tv = Value::native(KvsTxn {
            db: db.clone(),
            state: Mutex::new(TxnState {
                active: true,
                snapshot,
                writes: FxHashMap::default(),
                restart: false,
            }),
        });
        let r = cx.call_with_element(f, tv.clone());
        let Value::Native(n) = &tv else {
            unreachable!("a native value")
        };
        let Some(txn) = n.0.as_any().downcast_ref::<KvsTxn>() else {
            unreachable!("a kvs_txn")
        };
        let mut st = txn.state.lock();
        st.active = false;
        match r {
            Err(_) if st.restart => continue,
            Err(e) => return Err(e),
            Ok(result) => {
                if st.writes.is_empty() {
                    return Ok(result);
                }
                db.check_open()?;
                let mut store = db.store.lock();
                if store.version != st.snapshot {
                    continue;
                }
                store.version += 1;
                let version = store.version;
                for (k, value) in std::mem::take(&mut st.writes) {
                    store.map.insert(k, Entry { value, version });
                }
                return Ok(result);
            }
        }
    }
    Err(RuntimeError::new("too many transaction retries"))
}

pub fn register(r: &Registry) {
    r.define_fn("kvs", |_cx, vals| {
        Args::new("kvs", vals).arity(0, 0)?;
        Ok(Value::native(Kvs {
            inner: Arc::new(KvsInner {
                store: Mutex::new(Store::default()),
                closed: AtomicBool::new(false),
            }),
        }))
    });

    let ns = r.namespace("kvs");
    ns.define_method("get", |cx, vals| {
        let a = Args::method("kvs.get", vals);
        a.arity(2, 2)?;
        let db = db_of(&a)?;
        let key = key_of(cx, &vals[1])?;
        let st = db.store.lock();
        Ok(st.map.get(&key).map_or(Value::Nil, |e| e.value.clone()))
    });
    ns.define_method("put", |cx, vals| {
        let a = Args::method("kvs.put", vals);
        a.arity(3, 3)?;
        let db = db_of(&a)?;
        let key = key_of(cx, &vals[1])?;
        put(db, key, vals[2].clone());
        Ok(vals[2].clone())
    });
    ns.define_method("update", |cx, vals| {
        let a = Args::method("kvs.update", vals);
        a.arity(3, 3)?;
        let db = db_of(&a)?;
        let key = key_of(cx, &vals[1])?;
        let f = a.func(2)?;
        update(cx, db, key, f)
    });
    ns.define_method("txn", |cx, vals| {
        let a = Args::method("kvs.txn", vals);
        a.arity(2, 2)?;
        let db = db_of(&a)?;
        let f = a.func(1)?;
        txn(cx, db, f)
    });
    ns.define_method("close", |_cx, vals| {
        let a = Args::method("kvs.close", vals);
        a.arity(1, 1)?;
        let db = db_of(&a)?;
        db.closed.store(true, Ordering::Release);
        std::mem::take(&mut db.store.lock().map);
        Ok(Value::Nil)
    });
    ns.define_method("string", |_cx, vals| {
        let a = Args::method("kvs.string", vals);
        a.arity(1, 1)?;
        let _: &Kvs = receiver(&a, "kvs")?;
        Ok(Value::str("<kvs>"))
    });

    let ns = r.namespace("kvs_txn");
    ns.define_method("get", |cx, vals| {
        let a = Args::method("kvs_txn.get", vals);
        a.arity(2, 2)?;
        let t = txn_of(&a)?;
        let key = key_of(cx, &vals[1])?;
        Ok(txn_read(t, &key)?.unwrap_or(Value::Nil))
    });
    ns.define_method("put", |cx, vals| {
        let a = Args::method("kvs_txn.put", vals);
        a.arity(3, 3)?;
        let t = txn_of(&a)?;
        let key = key_of(cx, &vals[1])?;
        t.state.lock().writes.insert(key, vals[2].clone());
        Ok(vals[2].clone())
    });
    ns.define_method("update", |cx, vals| {
        let a = Args::method("kvs_txn.update", vals);
        a.arity(3, 3)?;
        let t = txn_of(&a)?;
        let key = key_of(cx, &vals[1])?;
        let f = a.func(2)?;
        let old = txn_read(t, &key)?.ok_or_else(|| no_value(&key))?;
        let new = cx.call_with_element(f, old)?;
        let mut st = t.state.lock();
        if !st.active {
            return Err(RuntimeError::new("invalid transaction"));
        }
        st.writes.insert(key, new.clone());
        Ok(new)
    });
    ns.define_method("string", |_cx, vals| {
        let a = Args::method("kvs_txn.string", vals);
        a.arity(1, 1)?;
        let _: &KvsTxn = receiver(&a, "kvs_txn")?;
        Ok(Value::str("<kvs_txn>"))
    });
}
