//! Helper threads that take a share of a batch when the function of a `map` or
//! `filter` is pure, so that one expensive stage uses every core.
//!
//! A stage's callbacks never run concurrently (1.6), except as an unobservable
//! optimisation: the values of one batch are shared out only while the function
//! does nothing but compute. Every share runs in a [`CallContext`] marked
//! `parallel`, in which anything with a side effect (a native function not declared
//! pure with [`Registry::mark_pure`](crate::ext::Registry::mark_pure), `emit`, a
//! definition, a binding outside the function) gives up *before* acting. The stage
//! then runs the same values one at a time, as if the attempt never happened, and
//! never tries again. Results are put back in order and errors reported in order.

use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::eval::error::RuntimeError;
use crate::eval::func::Frame;
use crate::eval::interp::Globals;
use crate::eval::value::Value;
use crate::ext::{CallContext, Emitter};

type Job = Box<dyn FnOnce() + Send>;

/// One result per value of a batch, in order.
pub(crate) type Results = Vec<Result<Value, RuntimeError>>;

struct Pool {
    jobs: Sender<Job>,
    helpers: usize,
}

/// The helpers: one fewer than the worker threads (the stage's own thread runs a
/// share too); none with `STRM_WORKER_MAX=1`.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let wanted = super::stream::worker_count().saturating_sub(1);
        // `STRM_SHARE=0` turns sharing off (for measurement).
        if wanted == 0 || std::env::var("STRM_SHARE").is_ok_and(|v| v.trim() == "0") {
            return None;
        }
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut helpers = 0;
        for i in 0..wanted {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("streem-assist-{i}"))
                .stack_size(super::stream::WORKER_STACK_SIZE)
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panic drops the job's result sender: the stage sees the
                        // share as failed and runs the values itself.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                });
            if spawned.is_ok() {
                helpers += 1;
            }
        }
        (helpers > 0).then_some(Pool { jobs, helpers })
    })
    .as_ref()
}

/// Whether there is any helper thread (none with one worker).
pub(crate) fn available() -> bool {
    pool().is_some()
}

/// In a share, `emit` (from a native) is a side effect like any other.
struct NoEmit;

impl Emitter for NoEmit {
    fn emit(&mut self, _v: Value) -> Result<(), RuntimeError> {
        Err(RuntimeError::impure())
    }
}

/// Calls `f` on each value of `vals` with the batch shared out among this thread and
/// the helpers. `None` when `f` reached a side effect (nothing happened; the caller
/// runs the values one at a time) or there are no helpers.
pub(crate) fn call_shared(
    g: &Arc<Globals>,
    top: &Arc<Frame>,
    f: &Value,
    vals: &[Value],
) -> Option<Results> {
    let pool = pool()?;
    let shares = (pool.helpers + 1).min(vals.len());
    if shares < 2 {
        return None;
    }
    let size = vals.len().div_ceil(shares);
    let mut waiting = Vec::with_capacity(shares - 1);
    for part in vals.chunks(size).skip(1) {
        let (g, top, f, part) = (g.clone(), top.clone(), f.clone(), part.to_vec());
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(run_share(&g, &top, &f, part));
        });
        if pool.jobs.send(job).is_err() {
            return None;
        }
        waiting.push(rx);
    }
    let mut results = run_share(g, top, f, vals[..size].to_vec());
    for rx in waiting {
        match (rx.recv(), results.as_mut()) {
            (Ok(Some(more)), Some(r)) => r.extend(more),
            _ => results = None,
        }
    }
    results
}

fn run_share(g: &Arc<Globals>, top: &Arc<Frame>, f: &Value, part: Vec<Value>) -> Option<Results> {
    let mut no_emit = NoEmit;
    let mut cx = CallContext::with_top(g, top, Some(&mut no_emit));
    cx.parallel = true;
    let mut out = Vec::with_capacity(part.len());
    for v in part {
        let r = cx.call_with_element(f, v);
        if matches!(&r, Err(e) if e.is_impure()) {
            return None;
        }
        out.push(r);
    }
    Some(out)
}
