//! The evaluator: walks the compiled program (`ir`) with slots, never names.

use std::sync::Arc;

use smallvec::SmallVec;

use super::error::RuntimeError;
use super::func::{Frame, Func};
use super::ir::{
    self, Arg, Arith, Block, Clause, Expr, FnBody, FnCode, Pat, PatList, Stmt, VarRef,
};
use super::namespace::{Binding, Namespace, BUILTIN_OPERATOR_OVERRIDDEN, NAMESPACE_GENERATION};
use super::ops;
use super::symbol::Sym;
use super::value::{Array, Fields, Str, Value};
use crate::ext::CallContext;
use crate::syntax::ast::UnOp;
use crate::syntax::{Source, Span};

/// How deep calls may nest (D72 asks for at least 10,000).
pub const MAX_CALL_DEPTH: u32 = 200_000;
/// Below this much remaining native stack a call fails with `stack level too deep`
/// instead of risking an overflow.
const STACK_RED_ZONE: usize = 256 * 1024;

thread_local! {
    /// Lowest stack address calls on this thread may reach.
    static STACK_FLOOR: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Non-local exits of evaluation: errors (including `skip`) and `return`.
pub(crate) enum Ctrl {
    Err(RuntimeError),
    Return(Value),
}

impl From<RuntimeError> for Ctrl {
    fn from(e: RuntimeError) -> Ctrl {
        Ctrl::Err(e)
    }
}

type R = Result<Value, Ctrl>;
type Args = SmallVec<[Value; 4]>;

/// The variables of a running scope: on the Rust stack when nothing can capture
/// them, otherwise a heap [`Frame`].
pub(crate) enum Locals<'a> {
    Stack(&'a mut [Option<Value>]),
    Heap(&'a Arc<Frame>),
}

/// One running scope.
pub(crate) struct Act<'a> {
    pub locals: Locals<'a>,
    /// The frame the running function was defined in.
    pub env: Option<&'a Arc<Frame>>,
    pub source: &'a Arc<Source>,
}

/// Statements that change something outside the running function (checked when a
/// function runs on several cores at once).
fn has_side_effect(stmt: &Stmt) -> bool {
    match stmt {
        Stmt::Bind { slot, ns, .. } => !matches!(slot, VarRef::Local(_)) || ns.is_some(),
        Stmt::Method { .. } | Stmt::Namespace { .. } | Stmt::Import { .. } | Stmt::Emit(..) => true,
        Stmt::Expr(_) | Stmt::Skip(_) | Stmt::Return(..) => false,
    }
}

fn located(e: RuntimeError, source: &Arc<Source>, span: Span) -> Ctrl {
    Ctrl::Err(e.at(source, span))
}

impl<'a> CallContext<'a> {
    // ----- statements -------------------------------------------------------------

    pub(crate) fn exec_block(&mut self, act: &mut Act, block: &Block) -> R {
        let mut last = Value::Nil;
        for stmt in block {
            last = self.exec_stmt(act, stmt)?;
        }
        Ok(last)
    }

    fn exec_stmt(&mut self, act: &mut Act, stmt: &Stmt) -> R {
        if self.parallel && has_side_effect(stmt) {
            return Err(Ctrl::Err(RuntimeError::impure()));
        }
        match stmt {
            Stmt::Expr(e) => self.eval(act, e),
            Stmt::Bind {
                slot,
                name,
                value,
                ns,
                span,
            } => {
                let v = self.eval(act, value)?;
                self.bind(act, *slot, *name, v.clone(), *span)?;
                if let Some(ns) = ns {
                    self.define_in_namespace(*ns, *name, v.clone(), false, act.source, *span)?;
                }
                Ok(v)
            }
            Stmt::Method {
                ns,
                name,
                value,
                span,
            } => {
                let v = self.eval(act, value)?;
                match ns {
                    Some(ns) => {
                        self.define_in_namespace(*ns, *name, v.clone(), true, act.source, *span)?
                    }
                    None => unreachable!("top-level methods compile to bindings"),
                }
                Ok(v)
            }
            Stmt::Namespace {
                name,
                is_class: _,
                body,
                span: _,
            } => {
                let globals = self.globals().clone();
                globals.namespaces.open(name.name(), false);
                let parent = match &act.locals {
                    Locals::Heap(f) => Some((*f).clone()),
                    Locals::Stack(_) => None,
                };
                let frame = Frame::permanent(body.frame.nslots as usize, parent);
                let mut inner = Act {
                    locals: Locals::Heap(&frame),
                    env: None,
                    source: &body.source,
                };
                if let FnBody::Plain { body: stmts, .. } = &body.body {
                    match self.exec_block(&mut inner, stmts) {
                        Ok(_) | Err(Ctrl::Return(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Value::Nil)
            }
            Stmt::Import {
                name,
                targets,
                ns,
                span,
            } => {
                let Some(nsp) = self.globals().namespaces.get(name.name()) else {
                    return Err(located(
                        RuntimeError::new(format!("no such namespace '{}'", name.name())),
                        act.source,
                        *span,
                    ));
                };
                for (sym, slot) in targets {
                    if let Some(b) = nsp.binding(*sym) {
                        if b.is_method {
                            continue;
                        }
                        self.bind(act, *slot, *sym, b.value.clone(), *span)?;
                        if let Some(ns) = ns {
                            self.define_in_namespace(
                                *ns,
                                *sym,
                                b.value.clone(),
                                false,
                                act.source,
                                *span,
                            )?;
                        }
                    }
                }
                Ok(Value::Nil)
            }
            Stmt::Skip(span) => {
                if self.in_stage() {
                    Err(Ctrl::Err(RuntimeError::skip().at(act.source, *span)))
                } else {
                    Err(located(
                        RuntimeError::new("skip outside a pipeline stage"),
                        act.source,
                        *span,
                    ))
                }
            }
            Stmt::Emit(args, span) => {
                if !self.in_stage() {
                    return Err(located(
                        RuntimeError::new("emit outside a pipeline stage"),
                        act.source,
                        *span,
                    ));
                }
                let vals = self.eval_args(act, args)?;
                for v in vals {
                    self.emit(v).map_err(|e| located(e, act.source, *span))?;
                }
                Ok(Value::Nil)
            }
            Stmt::Return(args, fields, _span) => {
                let mut vals = self.eval_args(act, args)?;
                let v = if fields.is_some() {
                    Value::Array(Arc::new(Array {
                        items: vals.into_vec(),
                        fields: fields.clone(),
                        class: None,
                    }))
                } else if args.len() == 1 && matches!(args[0], Arg::Pos(_)) {
                    vals.pop().unwrap_or_default()
                } else if args.is_empty() {
                    Value::Nil
                } else {
                    Value::array(vals.into_vec())
                };
                Err(Ctrl::Return(v))
            }
        }
    }

    fn define_in_namespace(
        &mut self,
        ns: Sym,
        name: Sym,
        v: Value,
        is_method: bool,
        source: &Arc<Source>,
        span: Span,
    ) -> Result<(), Ctrl> {
        let nsp = self.globals().namespaces.open(ns.name(), false);
        nsp.define(
            name,
            Binding {
                value: v,
                is_method,
                native: false,
            },
        )
        .map_err(|_| {
            located(
                RuntimeError::new(format!(
                    "'{}' is already defined in namespace {}",
                    name.name(),
                    ns.name()
                )),
                source,
                span,
            )
        })
    }

    fn bind(
        &mut self,
        act: &mut Act,
        slot: VarRef,
        name: Sym,
        v: Value,
        span: Span,
    ) -> Result<(), Ctrl> {
        let ok = match slot {
            VarRef::Local(i) => match &mut act.locals {
                Locals::Stack(slots) => {
                    let s = &mut slots[i as usize];
                    if s.is_some() {
                        false
                    } else {
                        *s = Some(v);
                        true
                    }
                }
                Locals::Heap(f) => Frame::set(f, i, v).is_ok(),
            },
            VarRef::Global(i) => Frame::set(self.top(), i, v).is_ok(),
            VarRef::Up(d, i) => match act.env.and_then(|e| Frame::ancestor(e, d)) {
                Some(f) => Frame::set(f, i, v).is_ok(),
                None => false,
            },
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(located(
                RuntimeError::new(format!("'{}' is already defined", name.name())),
                act.source,
                span,
            ))
        }
    }

    // ----- expressions ------------------------------------------------------------

    /// Evaluates an expression. The hot cases are handled here with a small stack
    /// frame (deep recursion and call cost depend on it); the rest in `eval_cold`.
    #[inline]
    pub(crate) fn eval(&mut self, act: &mut Act, e: &Expr) -> R {
        match e {
            Expr::Const(v, _) => Ok(v.clone()),
            Expr::Var { var, name, span } => match self.read_var(act, *var, *name) {
                Some(v) => Ok(v),
                None => Err(self.undefined(act, *name, *span)),
            },
            Expr::Binary {
                op, lhs, rhs, span, ..
            } => {
                if let Some(r) = int_binary(act, *op, lhs, rhs) {
                    return Ok(r);
                }
                let a = self.operand(act, lhs)?;
                let b = self.operand(act, rhs)?;
                if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
                    // The commonest case, without the general dispatch of `ops::arith`.
                    if !BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Some(r) = int_op(*op, *x, *y) {
                            return Ok(r);
                        }
                    }
                }
                if let (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) = (&a, &b)
                {
                    if !BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
                        return ops::arith(*op, &a, &b).map_err(|e| located(e, act.source, *span));
                    }
                }
                self.binary_slow(act, e, a, b)
            }
            Expr::Equal {
                negate, lhs, rhs, ..
            } => {
                if let Some(x) = int_expr(act, lhs) {
                    if let Some(y) = int_expr(act, rhs) {
                        return Ok(Value::Bool((x == y) != *negate));
                    }
                }
                let a = self.operand(act, lhs)?;
                let b = self.operand(act, rhs)?;
                // Numbers and strings have no namespace `==`: compare directly.
                match (&a, &b) {
                    (Value::Int(x), Value::Int(y)) => Ok(Value::Bool((x == y) != *negate)),
                    (Value::Str(x), Value::Str(y)) => Ok(Value::Bool((x == y) != *negate)),
                    _ => self.equal_slow(act, e, a, b),
                }
            }
            Expr::If { cond, then, els } => {
                if self.eval(act, cond)?.truthy() {
                    self.exec_block(act, then)
                } else if let Some(els) = els {
                    self.exec_block(act, els)
                } else {
                    Ok(Value::Nil)
                }
            }
            Expr::Call {
                name,
                var,
                args,
                span,
            } => {
                if let Some(borrowed) = borrow_args(act, args) {
                    return self.call_named(act, *name, *var, &borrowed, *span);
                }
                let vals = self.eval_args(act, args)?;
                self.call_named(act, *name, *var, &vals, *span)
            }
            _ => self.eval_cold(act, e),
        }
    }

    /// Evaluates an operand, reading constants and stack locals without a call to
    /// `eval` (operands are mostly such leaves).
    #[inline(always)]
    fn operand(&mut self, act: &mut Act, e: &Expr) -> R {
        match e {
            Expr::Const(v, _) => Ok(v.clone()),
            Expr::Var {
                var: VarRef::Local(i),
                name,
                span,
            } => {
                let v = match &act.locals {
                    Locals::Stack(slots) => slots[*i as usize].clone(),
                    Locals::Heap(f) => Frame::get(f, *i),
                };
                match v {
                    Some(v) => Ok(v),
                    None => Err(self.undefined(act, *name, *span)),
                }
            }
            _ => self.eval(act, e),
        }
    }

    #[inline(never)]
    fn undefined(&self, act: &Act, name: Sym, span: Span) -> Ctrl {
        located(
            RuntimeError::new(format!("undefined variable '{}'", name.name())),
            act.source,
            span,
        )
    }

    #[inline(never)]
    fn binary_slow(&mut self, act: &mut Act, e: &Expr, a: Value, b: Value) -> R {
        let Expr::Binary {
            op,
            name,
            var,
            span,
            ..
        } = e
        else {
            unreachable!()
        };
        // Two numbers reach here only when a builtin operator was overridden.
        let args: Args = smallvec::smallvec![a, b];
        self.call_operator(act, *name, *var, args, *span, Some(*op))
    }

    #[inline(never)]
    fn equal_slow(&mut self, act: &mut Act, e: &Expr, a: Value, b: Value) -> R {
        let Expr::Equal {
            negate,
            name,
            var,
            span,
            ..
        } = e
        else {
            unreachable!()
        };
        let custom = match &a {
            Value::Array(arr) => arr.class.as_ref().and_then(|c| c.get(*name)),
            Value::Native(_) => self.namespace_of(&a).and_then(|ns| ns.get(*name)),
            _ => None,
        };
        match custom {
            Some(f) => self
                .call_value(&f, &[a, b])
                .map_err(|e| located(e, act.source, *span)),
            None => {
                // A user may also rebind `==` lexically; honour it.
                if !matches!(var, VarRef::Prelude) {
                    if let Some(f) = self.read_var(act, *var, *name) {
                        return self
                            .call_value(&f, &[a, b])
                            .map_err(|e| located(e, act.source, *span));
                    }
                }
                Ok(Value::Bool(ops::equals(&a, &b) != *negate))
            }
        }
    }

    #[inline(never)]
    fn eval_cold(&mut self, act: &mut Act, e: &Expr) -> R {
        match e {
            Expr::Const(..)
            | Expr::Var { .. }
            | Expr::Binary { .. }
            | Expr::Equal { .. }
            | Expr::If { .. }
            | Expr::Call { .. } => {
                unreachable!("handled in eval")
            }
            Expr::And(l, r) => {
                let a = self.eval(act, l)?;
                if a.truthy() {
                    self.eval(act, r)
                } else {
                    Ok(a)
                }
            }
            Expr::Or(l, r) => {
                let a = self.eval(act, l)?;
                if a.truthy() {
                    Ok(a)
                } else {
                    self.eval(act, r)
                }
            }
            Expr::Unary {
                op,
                name,
                var,
                operand,
                span,
            } => {
                let a = self.eval(act, operand)?;
                match op {
                    UnOp::Not => Ok(Value::Bool(!a.truthy())),
                    UnOp::BitNot => match a {
                        Value::Int(i) => Ok(Value::Int(!i)),
                        other => Err(located(
                            RuntimeError::new(format!(
                                "~ requires an integer, got {} {}",
                                other.type_name(),
                                super::print::inspect_plain(&other)
                            )),
                            act.source,
                            *span,
                        )),
                    },
                    UnOp::Neg => {
                        if !BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed)
                            && a.is_number()
                        {
                            return Ok(ops::negate(&a));
                        }
                        let args: Args = smallvec::smallvec![a];
                        self.call_operator(act, *name, *var, args, *span, None)
                    }
                }
            }
            Expr::CallValue { callee, args, span } => {
                let f = self.eval(act, callee)?;
                let vals = self.eval_args(act, args)?;
                self.call_value(&f, &vals)
                    .map_err(|e| located(e, act.source, *span))
            }
            Expr::Closure(code) => {
                let env = match &act.locals {
                    Locals::Heap(f) => Some((*f).clone()),
                    Locals::Stack(_) => act.env.cloned(),
                };
                Ok(Value::Func(Arc::new(Func::Closure {
                    code: code.clone(),
                    env,
                })))
            }
            Expr::Generic { name, var, span: _ } => {
                // Re-express the lexical binding relative to the captured frame.
                let (var, env) = match (&act.locals, *var) {
                    (Locals::Heap(f), VarRef::Local(i)) => (VarRef::Up(0, i), Some((*f).clone())),
                    (Locals::Heap(f), VarRef::Up(d, i)) => {
                        (VarRef::Up(d + 1, i), Some((*f).clone()))
                    }
                    (Locals::Heap(f), v) => (v, Some((*f).clone())),
                    (Locals::Stack(_), VarRef::Local(_)) => (VarRef::Unbound, None),
                    (Locals::Stack(_), v) => (v, act.env.cloned()),
                };
                Ok(Value::Func(Arc::new(Func::Generic {
                    name: *name,
                    var,
                    env,
                })))
            }
            Expr::Array {
                elems,
                fields,
                span: _,
            } => {
                let vals = self.eval_args(act, elems)?;
                if fields.is_none() {
                    return Ok(Value::array(vals.into_vec()));
                }
                Ok(Value::Array(Arc::new(Array {
                    items: vals.into_vec(),
                    fields: fields.clone(),
                    class: None,
                })))
            }
            Expr::New {
                class,
                elems,
                fields,
                span,
            } => {
                let Some(ns) = self.globals().namespaces.get(class.name()) else {
                    return Err(located(
                        RuntimeError::new(format!("undefined class {}", class.name())),
                        act.source,
                        *span,
                    ));
                };
                if ns.builtin {
                    return Err(located(
                        RuntimeError::new(format!(
                            "cannot instantiate builtin class {}",
                            class.name()
                        )),
                        act.source,
                        *span,
                    ));
                }
                let vals = self.eval_args(act, elems)?;
                Ok(Value::Array(Arc::new(Array {
                    items: vals.into_vec(),
                    fields: fields.clone(),
                    class: Some(ns),
                })))
            }
            Expr::AmpChain {
                items,
                name,
                var,
                span,
            } => {
                let first = self.eval(act, &items[0])?;
                let pairwise = self
                    .namespace_of(&first)
                    .is_some_and(|ns| ns.get(*name).is_some());
                if pairwise {
                    let mut acc = first;
                    for item in &items[1..] {
                        let b = self.eval(act, item)?;
                        let args: Args = smallvec::smallvec![acc, b];
                        acc = self.call_operator(act, *name, *var, args, *span, None)?;
                    }
                    Ok(acc)
                } else {
                    let mut args: Args = SmallVec::with_capacity(items.len());
                    args.push(first);
                    for item in &items[1..] {
                        args.push(self.eval(act, item)?);
                    }
                    self.call_named(act, *name, *var, &args, *span)
                }
            }
        }
    }

    fn eval_args(&mut self, act: &mut Act, args: &[Arg]) -> Result<Args, Ctrl> {
        let mut out = Args::with_capacity(args.len());
        for a in args {
            match a {
                Arg::Pos(e) => out.push(self.operand(act, e)?),
                Arg::Splat(e) => match self.eval(act, e)? {
                    Value::Array(arr) => out.extend(arr.items.iter().cloned()),
                    other => {
                        return Err(located(
                            RuntimeError::new(format!(
                                "splat requires array, got {} {}",
                                other.type_name(),
                                super::print::inspect_plain(&other)
                            )),
                            act.source,
                            expr_span(e),
                        ))
                    }
                },
            }
        }
        Ok(out)
    }

    // ----- variables --------------------------------------------------------------

    #[inline]
    pub(crate) fn read_var(&mut self, act: &Act, var: VarRef, name: Sym) -> Option<Value> {
        match var {
            VarRef::Local(i) => match &act.locals {
                Locals::Stack(slots) => slots[i as usize].clone(),
                Locals::Heap(f) => Frame::get(f, i),
            },
            VarRef::Up(d, i) => Frame::get(Frame::ancestor(act.env?, d)?, i),
            VarRef::Global(i) => {
                Frame::get(self.top(), i).or_else(|| self.globals().prelude_get(name))
            }
            VarRef::Prelude => self.globals().prelude_get(name),
            VarRef::Unbound => None,
        }
    }

    fn read_var_env(&mut self, env: Option<&Arc<Frame>>, var: VarRef, name: Sym) -> Option<Value> {
        match var {
            VarRef::Up(d, i) => Frame::get(Frame::ancestor(env?, d)?, i),
            VarRef::Global(i) => {
                Frame::get(self.top(), i).or_else(|| self.globals().prelude_get(name))
            }
            VarRef::Prelude => self.globals().prelude_get(name),
            VarRef::Local(_) | VarRef::Unbound => None,
        }
    }

    // ----- calls ------------------------------------------------------------------

    /// The namespace of a value (3.5 step 1).
    pub fn namespace_of(&self, v: &Value) -> Option<Arc<Namespace>> {
        let g = self.globals();
        match v {
            Value::Int(_) | Value::Float(_) => Some(g.ns_number.clone()),
            Value::Str(_) => Some(g.ns_string.clone()),
            Value::Array(a) => Some(a.class.clone().unwrap_or_else(|| g.ns_array.clone())),
            Value::Time(_) => Some(g.ns_time.clone()),
            Value::Native(n) => g.namespaces.get(n.0.namespace()),
            _ => None,
        }
    }

    /// Finds what `name(args...)` calls by dispatch on the first argument (3.5, D18):
    /// `Ok(Some(f))` a function to call, `Err(v)` a field value that is the result.
    fn dispatch(&self, name: Sym, a0: &Value, nargs: usize) -> Result<Option<Value>, Value> {
        if let Value::Array(arr) = a0 {
            if let Some(class) = &arr.class {
                if let Some(f) = class.get(name) {
                    return Ok(Some(f));
                }
            }
            if arr.fields.is_some() {
                if let Some(v) = arr.field(name.name().as_bytes()) {
                    if nargs == 1 {
                        return Err(v.clone());
                    }
                    if let Some(f) = self.globals().ns_array.get(name) {
                        return Ok(Some(f));
                    }
                    return Ok(Some(v.clone()));
                }
            }
            return Ok(self.globals().ns_array.get(name));
        }
        if !name.in_namespace() {
            return Ok(None);
        }
        // Borrow the builtin namespaces: cloning their `Arc` on every call would make
        // all workers write the same reference count.
        let g = self.globals();
        let ns = match a0 {
            Value::Int(_) | Value::Float(_) => &g.ns_number,
            Value::Str(_) => &g.ns_string,
            Value::Time(_) => &g.ns_time,
            Value::Native(_) => return Ok(self.namespace_of(a0).and_then(|ns| ns.get(name))),
            _ => return Ok(None),
        };
        Ok(ns.get(name))
    }

    fn call_named(
        &mut self,
        act: &mut Act,
        name: Sym,
        var: VarRef,
        args: &[Value],
        span: Span,
    ) -> R {
        // Methods of the builtin namespaces are called straight from the namespace's
        // table, without cloning the function value.
        if name.in_namespace() {
            let g = self.g;
            let (ns, kind) = match args.first() {
                Some(Value::Int(_) | Value::Float(_)) => (Some(&g.ns_number), 1),
                Some(Value::Str(_)) => (Some(&g.ns_string), 2),
                Some(Value::Time(_)) => (Some(&g.ns_time), 3),
                _ => (None, 0),
            };
            if let Some(ns) = ns {
                if let Some(c) = self.cached_method(ns, name, kind) {
                    let r = self.call_value(&c.f, args);
                    self.method_cache = Some(c);
                    return r.map_err(|e| located(e, act.source, span));
                }
            }
        }
        let f = match args.first() {
            Some(a0) => match self.dispatch(name, a0, args.len()) {
                Ok(Some(f)) => Some(f),
                Ok(None) => None,
                Err(field) => return Ok(field),
            },
            None => None,
        };
        let f = match f {
            Some(f) => f,
            None => {
                if let VarRef::Global(i) = var {
                    // Call a top-level function without cloning it: the top frame
                    // outlives this call and its slots never change once set.
                    if let Some(fv) = self.top().get_ref(i) {
                        let fv: *const Value = fv;
                        // SAFETY: `fv` points into a slot of the top-level frame, which
                        // `self` keeps alive for the whole call and which is never
                        // written again once bound (OnceLock).
                        let r = self.call_value(unsafe { &*fv }, args);
                        return match r {
                            Ok(Value::Stream(s)) => {
                                s.set_location(act.source, span);
                                Ok(Value::Stream(s))
                            }
                            Ok(v) => Ok(v),
                            Err(e) => Err(located(e, act.source, span)),
                        };
                    }
                }
                match self.read_var(act, var, name) {
                    Some(f) => f,
                    None => return Err(located(no_function(name, args), act.source, span)),
                }
            }
        };
        match self.call_value(&f, args) {
            Ok(Value::Stream(s)) => {
                s.set_location(act.source, span);
                Ok(Value::Stream(s))
            }
            Ok(v) => Ok(v),
            Err(e) => Err(located(e, act.source, span)),
        }
    }

    fn call_operator(
        &mut self,
        act: &mut Act,
        name: Sym,
        var: VarRef,
        args: Args,
        span: Span,
        op: Option<Arith>,
    ) -> R {
        let f = match self.dispatch(name, &args[0], args.len()) {
            Ok(Some(f)) => Some(f),
            Ok(None) => self.read_var(act, var, name),
            Err(field) => Some(field),
        };
        match f {
            Some(f) => match self.call_value(&f, &args) {
                Ok(Value::Stream(s)) => {
                    s.set_location(act.source, span);
                    Ok(Value::Stream(s))
                }
                Ok(v) => Ok(v),
                Err(e) => Err(located(e, act.source, span)),
            },
            None => {
                let e = match op {
                    Some(op) if args.len() == 2 => ops::type_error(op, &args[0], &args[1]),
                    _ if args.len() == 1 => RuntimeError::new(format!(
                        "cannot negate {} {}",
                        args[0].type_name(),
                        super::print::inspect_plain(&args[0])
                    )),
                    _ => no_function(name, &args),
                };
                Err(located(e, act.source, span))
            }
        }
    }

    /// Calls any callable value (4.6): lambdas, case lambdas, natives, generic
    /// functions and arrays (indexing, D19).
    pub fn call_value(&mut self, f: &Value, args: &[Value]) -> Result<Value, RuntimeError> {
        match f {
            Value::Func(func) => match &**func {
                Func::Closure { code, env } => self.call_closure(code, env.as_ref(), args),
                Func::Native(n) => {
                    if self.parallel && !n.is_pure() {
                        return Err(RuntimeError::impure());
                    }
                    (n.f)(self, args)
                }
                Func::Generic { name, var, env } => {
                    let fv = match args.first() {
                        Some(a0) => match self.dispatch(*name, a0, args.len()) {
                            Ok(Some(f)) => Some(f),
                            Ok(None) => None,
                            Err(field) => return Ok(field),
                        },
                        None => None,
                    };
                    let fv = match fv {
                        Some(f) => f,
                        None => match self.read_var_env(env.as_ref(), *var, *name) {
                            Some(f) => f,
                            None => return Err(no_function(*name, args)),
                        },
                    };
                    self.call_value(&fv, args)
                }
            },
            Value::Array(arr) => index_array(arr, args),
            other => Err(RuntimeError::new(format!(
                "not a function: {} {}",
                other.type_name(),
                super::print::inspect_plain(other)
            ))),
        }
    }

    #[inline]
    fn enter(&mut self) -> Result<(), RuntimeError> {
        self.depth += 1;
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        if self.stack_floor == 0 {
            // Measured once per thread: comparing addresses is much cheaper than asking
            // for the remaining stack on every call.
            self.stack_floor = STACK_FLOOR.with(|floor| {
                if floor.get() == 0 {
                    let remaining = stacker::remaining_stack().unwrap_or(8 << 20);
                    floor.set(sp.saturating_sub(remaining) + STACK_RED_ZONE);
                }
                floor.get()
            });
        }
        if self.depth > MAX_CALL_DEPTH || sp < self.stack_floor {
            self.depth -= 1;
            return Err(RuntimeError::new("stack level too deep"));
        }
        Ok(())
    }

    /// Calls a closure with one argument, moved into its first slot: the call a
    /// stage makes for every element.
    pub(crate) fn call_closure_one(
        &mut self,
        code: &Arc<FnCode>,
        env: Option<&Arc<Frame>>,
        v: Value,
    ) -> Result<Value, RuntimeError> {
        if let FnBody::Plain { params: 1, body } = &code.body {
            if let Value::Int(x) = v {
                if let Some(p) = code.pure_int.get_or_init(|| compile_int_lambda(code)) {
                    if let Some(r) = run_int_prog(p, x) {
                        return Ok(r);
                    }
                }
            }
            let v = match code.shape.get_or_init(|| lambda_shape(code)) {
                ir::Shape::Method => match self.call_method_lambda(code, body, v) {
                    Ok(r) => return r,
                    Err(v) => v,
                },
                ir::Shape::Array => return Ok(array_lambda(body, v)),
                ir::Shape::Arith(p) => match run_num_prog(p, &v) {
                    Some(r) => return Ok(r),
                    None => v,
                },
                ir::Shape::General => v,
            };
            let layout = code.frame;
            if !layout.heap {
                // Slot arrays of the exact size: dropping unused slots costs too.
                match layout.nslots {
                    1 => return self.run_one::<1>(code, env, body, v),
                    2 => return self.run_one::<2>(code, env, body, v),
                    3 | 4 => return self.run_one::<4>(code, env, body, v),
                    _ => {}
                }
            }
            return self.call_closure(code, env, std::slice::from_ref(&v));
        }
        self.call_closure(code, env, std::slice::from_ref(&v))
    }

    /// Method `name` of builtin namespace `ns` (`kind`: 1 number, 2 string, 3 time):
    /// the one this context called last if it is the same and no definition came
    /// since, else looked up. The caller puts it back into `method_cache` after the
    /// call.
    fn cached_method(&mut self, ns: &Namespace, name: Sym, kind: u8) -> Option<MethodCache> {
        let generation = NAMESPACE_GENERATION.load(std::sync::atomic::Ordering::Acquire);
        match self.method_cache.take() {
            Some(c) if c.name == name && c.kind == kind && c.generation == generation => Some(c),
            _ => ns.with_value(name, |f| {
                f.map(|f| MethodCache {
                    name,
                    kind,
                    generation,
                    f: f.clone(),
                })
            }),
        }
    }

    /// A method lambda (`ir::Shape::Method`) called with `v`: the method is
    /// found by dispatch on `v` exactly as `call_named` would (a builtin namespace,
    /// through the method cache) and called with `v` and the constants, without a
    /// frame. `Err(v)` when `v` or the name needs the general path (nothing was done).
    fn call_method_lambda(
        &mut self,
        code: &FnCode,
        body: &Block,
        v: Value,
    ) -> Result<Result<Value, RuntimeError>, Value> {
        let [Stmt::Expr(Expr::Call {
            name, args, span, ..
        })] = &body[..]
        else {
            return Err(v);
        };
        let name = *name;
        if !name.in_namespace() {
            return Err(v);
        }
        let g = self.g;
        let (ns, kind) = match &v {
            Value::Int(_) | Value::Float(_) => (&g.ns_number, 1),
            Value::Str(_) => (&g.ns_string, 2),
            Value::Time(_) => (&g.ns_time, 3),
            _ => return Err(v),
        };
        let Some(c) = self.cached_method(ns, name, kind) else {
            return Err(v);
        };
        let mut call: std::mem::ManuallyDrop<SmallVec<[Value; 4]>> = Default::default();
        call.push(v);
        for a in &args[1..] {
            if let Arg::Pos(Expr::Const(k, _)) = a {
                // SAFETY: as in `borrow_args`: a constant of the code, which outlives
                // the call, copied without counting a reference and never dropped.
                call.push(unsafe { std::ptr::read(k) });
            }
        }
        let r = self.call_value(&c.f, &call);
        self.method_cache = Some(c);
        // The receiver was owned: drop it (the constants are only borrowed).
        // SAFETY: element 0 is the moved-in `v`, read out once and never used again.
        drop(unsafe { std::ptr::read(&call[0]) });
        Ok(r.map_err(|e| e.at(&code.source, *span)))
    }

    /// `f` as a function of a string's bytes, when it is a method lambda
    /// (`{line -> line.length()}`) whose method, dispatched on a string as
    /// `call_method_lambda` would, has a bytes form: then it can be called on a line
    /// that is still in a reader's buffer. `None` otherwise.
    pub(crate) fn bytes_lambda(&mut self, f: &Value) -> Option<BytesLambda> {
        let (code, body, ir::Shape::Method) = shaped_lambda(f)? else {
            return None;
        };
        let [Stmt::Expr(Expr::Call {
            name, args, span, ..
        })] = &body[..]
        else {
            return None;
        };
        if !name.in_namespace() {
            return None;
        }
        let c = self.cached_method(&self.g.ns_string, *name, 2)?;
        let method = match &c.f {
            Value::Func(m) if matches!(&**m, Func::Native(n) if n.bytes.is_some()) => m.clone(),
            _ => None?,
        };
        self.method_cache = Some(c);
        let rest = args[1..]
            .iter()
            .filter_map(|a| match a {
                Arg::Pos(Expr::Const(k, _)) => Some(k.clone()),
                _ => None,
            })
            .collect();
        Some(BytesLambda {
            method,
            rest,
            source: code.source.clone(),
            span: *span,
        })
    }

    #[inline(always)]
    fn run_one<const N: usize>(
        &mut self,
        code: &Arc<FnCode>,
        env: Option<&Arc<Frame>>,
        body: &Block,
        v: Value,
    ) -> Result<Value, RuntimeError> {
        self.enter()?;
        let mut slots: [Option<Value>; N] = std::array::from_fn(|_| None);
        slots[0] = Some(v);
        let mut act = Act {
            locals: Locals::Stack(&mut slots[..code.frame.nslots as usize]),
            env,
            source: &code.source,
        };
        let r = match &body[..] {
            [Stmt::Expr(e)] => finish(self.eval(&mut act, e)),
            _ => finish(self.exec_block(&mut act, body)),
        };
        self.depth -= 1;
        r
    }

    pub(crate) fn call_closure(
        &mut self,
        code: &Arc<FnCode>,
        env: Option<&Arc<Frame>>,
        args: &[Value],
    ) -> Result<Value, RuntimeError> {
        self.enter()?;
        let r = self.call_closure_inner(code, env, args);
        self.depth -= 1;
        r
    }

    fn call_closure_inner(
        &mut self,
        code: &Arc<FnCode>,
        env: Option<&Arc<Frame>>,
        args: &[Value],
    ) -> Result<Value, RuntimeError> {
        match &code.body {
            FnBody::Plain { params, body } => {
                if args.len() != *params as usize {
                    return Err(RuntimeError::new(format!(
                        "wrong number of arguments (given {}, expected {})",
                        args.len(),
                        params
                    )));
                }
                if *params > 1 {
                    // `{k, a, b -> a + b}`, `{a, b -> b(1) - a(1)}`: without a frame.
                    if let Some(p) = code.pure_int.get_or_init(|| compile_int_lambda(code)) {
                        if let Some(r) = run_int_prog_args(p, args) {
                            return Ok(r);
                        }
                    }
                }
                let layout = code.frame;
                if layout.heap {
                    let frame = Frame::new(layout.nslots as usize, env.cloned());
                    for (i, a) in args.iter().enumerate() {
                        let _ = Frame::set(&frame, i as u32, a.clone());
                    }
                    let mut act = Act {
                        locals: Locals::Heap(&frame),
                        env,
                        source: &code.source,
                    };
                    finish(self.exec_block(&mut act, body))
                } else if layout.nslots <= 4 {
                    // The common small function: slots in a plain array, and a body of
                    // one expression evaluated without the statement loop.
                    let mut slots: [Option<Value>; 4] = [None, None, None, None];
                    for (s, a) in slots.iter_mut().zip(args) {
                        *s = Some(a.clone());
                    }
                    let mut act = Act {
                        locals: Locals::Stack(&mut slots[..layout.nslots as usize]),
                        env,
                        source: &code.source,
                    };
                    match &body[..] {
                        [Stmt::Expr(e)] => finish(self.eval(&mut act, e)),
                        _ => finish(self.exec_block(&mut act, body)),
                    }
                } else {
                    let mut slots: SmallVec<[Option<Value>; 8]> =
                        smallvec::smallvec![None; layout.nslots as usize];
                    for (s, a) in slots.iter_mut().zip(args) {
                        *s = Some(a.clone());
                    }
                    let mut act = Act {
                        locals: Locals::Stack(&mut slots),
                        env,
                        source: &code.source,
                    };
                    finish(self.exec_block(&mut act, body))
                }
            }
            FnBody::Case { clauses, else_body } => {
                for clause in clauses {
                    if let Some(v) = self.try_clause(code, clause, env, args)? {
                        return Ok(v);
                    }
                }
                if let Some((body, layout)) = else_body {
                    return self
                        .run_in_frame(code, *layout, env, |cx, act| cx.exec_block(act, body));
                }
                Err(RuntimeError::new(format!(
                    "match failure for {}",
                    describe_args(args)
                )))
            }
        }
    }

    fn run_in_frame(
        &mut self,
        code: &Arc<FnCode>,
        layout: ir::FrameLayout,
        env: Option<&Arc<Frame>>,
        f: impl FnOnce(&mut Self, &mut Act) -> R,
    ) -> Result<Value, RuntimeError> {
        if layout.heap {
            let frame = Frame::new(layout.nslots as usize, env.cloned());
            let mut act = Act {
                locals: Locals::Heap(&frame),
                env,
                source: &code.source,
            };
            finish(f(self, &mut act))
        } else {
            let mut slots: SmallVec<[Option<Value>; 8]> =
                smallvec::smallvec![None; layout.nslots as usize];
            let mut act = Act {
                locals: Locals::Stack(&mut slots),
                env,
                source: &code.source,
            };
            finish(f(self, &mut act))
        }
    }

    /// Tries one case clause: `Ok(None)` when its pattern or guard rejects the call.
    fn try_clause(
        &mut self,
        code: &Arc<FnCode>,
        clause: &Clause,
        env: Option<&Arc<Frame>>,
        args: &[Value],
    ) -> Result<Option<Value>, RuntimeError> {
        let mut matched = false;
        let v = self.run_in_frame(code, clause.frame, env, |cx, act| {
            let ok = match &clause.pattern {
                PatList::Struct { .. } => {
                    args.len() == 1 && cx.match_list_value(act, &clause.pattern, &args[0])?
                }
                PatList::Seq { .. } => cx.match_list(act, &clause.pattern, args)?,
            };
            if !ok {
                return Ok(Value::Nil);
            }
            if let Some(g) = &clause.guard {
                if !cx.eval(act, g)?.truthy() {
                    return Ok(Value::Nil);
                }
            }
            matched = true;
            cx.exec_block(act, &clause.body)
        })?;
        Ok(if matched { Some(v) } else { None })
    }

    // ----- patterns ---------------------------------------------------------------

    fn match_list(&mut self, act: &mut Act, list: &PatList, items: &[Value]) -> Result<bool, Ctrl> {
        match list {
            PatList::Seq {
                before,
                rest,
                after,
            } => {
                let fixed = before.len() + after.len();
                if rest.is_none() && items.len() != fixed || items.len() < fixed {
                    return Ok(false);
                }
                for (p, v) in before.iter().zip(items) {
                    if !self.match_pat(act, p, v)? {
                        return Ok(false);
                    }
                }
                let tail = &items[items.len() - after.len()..];
                if let Some(r) = rest {
                    let middle = items[before.len()..items.len() - after.len()].to_vec();
                    if !self.match_pat(act, r, &Value::array(middle))? {
                        return Ok(false);
                    }
                }
                for (p, v) in after.iter().zip(tail) {
                    if !self.match_pat(act, p, v)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            PatList::Struct { .. } => Ok(false),
        }
    }

    /// Matches a bracketed pattern list against one array value.
    fn match_list_value(&mut self, act: &mut Act, list: &PatList, v: &Value) -> Result<bool, Ctrl> {
        let Value::Array(arr) = v else {
            return Ok(false);
        };
        match list {
            PatList::Seq { .. } => self.match_list(act, list, &arr.items),
            PatList::Struct { fields, rest } => {
                let Some(names) = &arr.fields else {
                    return Ok(false);
                };
                let mut used = vec![false; arr.items.len()];
                for (label, p) in fields {
                    let Some(i) = names
                        .iter()
                        .position(|n| n.as_ref().is_some_and(|n| n.as_bytes() == &label[..]))
                    else {
                        return Ok(false);
                    };
                    used[i] = true;
                    if !self.match_pat(act, p, &arr.items[i])? {
                        return Ok(false);
                    }
                }
                if let Some(r) = rest {
                    let mut items = Vec::new();
                    let mut rest_names = Vec::new();
                    for (i, u) in used.iter().enumerate() {
                        if !u {
                            items.push(arr.items[i].clone());
                            rest_names.push(names[i].clone());
                        }
                    }
                    let rest_val = Value::Array(Arc::new(Array {
                        items,
                        fields: Some(Fields::from(rest_names)),
                        class: None,
                    }));
                    if !self.match_pat(act, r, &rest_val)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    fn match_pat(&mut self, act: &mut Act, p: &Pat, v: &Value) -> Result<bool, Ctrl> {
        Ok(match p {
            Pat::Wildcard => true,
            Pat::Bind(slot) => {
                match &mut act.locals {
                    Locals::Stack(slots) => slots[*slot as usize] = Some(v.clone()),
                    Locals::Heap(f) => {
                        let _ = Frame::set(f, *slot, v.clone());
                    }
                }
                true
            }
            Pat::Same(slot) => {
                let old = match &act.locals {
                    Locals::Stack(slots) => slots[*slot as usize].clone(),
                    Locals::Heap(f) => Frame::get(f, *slot),
                };
                old.is_some_and(|o| ops::equals(&o, v))
            }
            Pat::Num(n) => v.as_f64().is_some_and(|x| x == *n),
            Pat::Str(s) => v.as_bytes().is_some_and(|b| b == &s[..]),
            Pat::Nil => v.is_nil(),
            Pat::Bool(b) => matches!(v, Value::Bool(x) if x == b),
            Pat::Array { class, list } => {
                if let Some((name, span)) = class {
                    if !self.namespace_is(act, v, *name, *span)? {
                        return Ok(false);
                    }
                }
                self.match_list_value(act, list, v)?
            }
            Pat::TypeTest(inner, name, span) => {
                self.namespace_is(act, v, *name, *span)? && self.match_pat(act, inner, v)?
            }
        })
    }

    fn namespace_is(&mut self, act: &Act, v: &Value, name: Sym, span: Span) -> Result<bool, Ctrl> {
        let Some(want) = self.globals().namespaces.get(name.name()) else {
            return Err(located(
                RuntimeError::new(format!("undefined namespace {}", name.name())),
                act.source,
                span,
            ));
        };
        Ok(self
            .namespace_of(v)
            .is_some_and(|ns| Arc::ptr_eq(&ns, &want)))
    }
}

/// A method of a builtin namespace found by name, kept by a [`CallContext`] for the
/// next call: valid while no namespace has changed since (`generation`).
pub(crate) struct MethodCache {
    name: Sym,
    /// Which builtin namespace: 1 number, 2 string, 3 time.
    kind: u8,
    generation: u64,
    f: Value,
}

/// Arguments that are all constants or bound locals, as bitwise copies that are never
/// dropped: the call borrows them without touching reference counts (which, for a
/// line just read on another core, costs a cache miss each way).
struct BorrowedArgs(std::mem::ManuallyDrop<SmallVec<[Value; 4]>>);

impl std::ops::Deref for BorrowedArgs {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

/// The [`ir::Shape`] of a lambda: `{x -> x.name(constants...)}` (at most 3
/// constants) or `{x -> [x or constants...]}`.
fn lambda_shape(code: &FnCode) -> ir::Shape {
    let FnBody::Plain { params: 1, body } = &code.body else {
        return ir::Shape::General;
    };
    if code.parameterless || code.frame.heap || code.frame.nslots != 1 {
        return ir::Shape::General;
    }
    let param_or_const = |a: &Arg| {
        matches!(
            a,
            Arg::Pos(Expr::Const(..))
                | Arg::Pos(Expr::Var {
                    var: VarRef::Local(0),
                    ..
                })
        )
    };
    match &body[..] {
        [Stmt::Expr(Expr::Call { args, .. })]
            if matches!(
                args.first(),
                Some(Arg::Pos(Expr::Var {
                    var: VarRef::Local(0),
                    ..
                }))
            ) && args.len() <= 4
                && args[1..]
                    .iter()
                    .all(|a| matches!(a, Arg::Pos(Expr::Const(..)))) =>
        {
            ir::Shape::Method
        }
        [Stmt::Expr(Expr::Array {
            elems,
            fields: None,
            ..
        })] if elems.iter().all(param_or_const) => ir::Shape::Array,
        [Stmt::Expr(e @ Expr::Binary { .. })] => match num_prog(e) {
            Some(p) if p.1 => ir::Shape::Arith(p.0),
            _ => ir::Shape::General,
        },
        _ => ir::Shape::General,
    }
}

/// Compiles arithmetic over the parameter, its fields and number constants; the
/// flag says whether a field is read (without one, `pure_int` or the general path
/// does as well).
fn num_prog(e: &Expr) -> Option<(ir::NumProg, bool)> {
    use ir::NumProg;
    match e {
        Expr::Const(c @ (Value::Int(_) | Value::Float(_)), _) => {
            Some((NumProg::C(c.clone()), false))
        }
        Expr::Var {
            var: VarRef::Local(0),
            ..
        } => Some((NumProg::X, false)),
        Expr::Call { name, args, .. }
            if matches!(
                &args[..],
                [Arg::Pos(Expr::Var {
                    var: VarRef::Local(0),
                    ..
                })]
            ) =>
        {
            Some((NumProg::Field(*name), true))
        }
        Expr::Binary { op, lhs, rhs, .. }
            if matches!(
                op,
                Arith::Add | Arith::Sub | Arith::Mul | Arith::Div | Arith::Mod
            ) =>
        {
            let (l, fl) = num_prog(lhs)?;
            let (r, fr) = num_prog(rhs)?;
            Some((NumProg::Op(*op, Box::new(l), Box::new(r)), fl || fr))
        }
        _ => None,
    }
}

/// Runs a [`ir::Shape::Arith`] program on `v`. `None` (not a plain struct, a missing
/// field, a non-number, an error, an overridden operator) sends the call down the
/// general path, which then gives its answer or error.
fn run_num_prog(p: &ir::NumProg, v: &Value) -> Option<Value> {
    run_num_prog_fields(p, v, &mut |name| {
        // As dispatch (3.5) would: a plain struct's field; a class could define a
        // method of that name first.
        let Value::Array(a) = v else { return None };
        if a.class.is_some() {
            return None;
        }
        a.field(name.name().as_bytes()).cloned()
    })
}

/// Runs a [`ir::Shape::Arith`] program with `x` as the parameter and `field(name)`
/// giving the parameter's fields; `None` when a value is not a number (the general
/// path then decides).
pub(crate) fn run_num_prog_fields(
    p: &ir::NumProg,
    x: &Value,
    field: &mut dyn FnMut(Sym) -> Option<Value>,
) -> Option<Value> {
    use ir::NumProg;
    if BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    fn num(p: &NumProg, x: &Value, field: &mut dyn FnMut(Sym) -> Option<Value>) -> Option<Value> {
        let r = match p {
            NumProg::X => x.clone(),
            NumProg::C(c) => c.clone(),
            NumProg::Field(name) => field(*name)?,
            NumProg::Op(op, l, r) => {
                return ops::arith(*op, &num(l, x, field)?, &num(r, x, field)?).ok()
            }
        };
        matches!(r, Value::Int(_) | Value::Float(_)).then_some(r)
    }
    num(p, x, field)
}

/// Runs a [`ir::Shape::Arith`] program whose parameter is a record: `field(name)`
/// gives a field when it is a number. `None` when the general path must decide (a
/// field that is not a number, the parameter itself, an error); otherwise exactly
/// what [`run_num_prog`] gives on the record's row.
pub(crate) fn run_num_prog_nums(
    p: &ir::NumProg,
    field: &mut dyn FnMut(Sym) -> Option<ops::Num>,
) -> Option<Value> {
    use ir::NumProg;
    if BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    fn num(p: &NumProg, field: &mut dyn FnMut(Sym) -> Option<ops::Num>) -> Option<ops::Num> {
        match p {
            NumProg::X => None,
            NumProg::C(c) => ops::Num::of(c),
            NumProg::Field(name) => field(*name),
            NumProg::Op(op, l, r) => ops::num_arith(*op, num(l, field)?, num(r, field)?),
        }
    }
    // `num_prog` takes only + - * / %, whose results are numbers (an error, such as
    // a remainder by zero, is `None`: the general path reports it).
    num(p, field).map(ops::Num::value)
}

/// The program of a function of [`ir::Shape::Arith`] (`{row -> row.price * row.qty}`).
pub(crate) fn arith_lambda(f: &Value) -> Option<&ir::NumProg> {
    match shaped_lambda(f)? {
        (_, _, ir::Shape::Arith(p)) => Some(p),
        _ => None,
    }
}

/// A lambda of one parameter with its code, body and shape (`lambda_shape`).
fn shaped_lambda(f: &Value) -> Option<(&Arc<FnCode>, &Block, &ir::Shape)> {
    let Value::Func(func) = f else { return None };
    let Func::Closure { code, .. } = &**func else {
        return None;
    };
    let FnBody::Plain { params: 1, body } = &code.body else {
        return None;
    };
    Some((code, body, code.shape.get_or_init(|| lambda_shape(code))))
}

/// A method lambda over a string's bytes (`CallContext::bytes_lambda`).
pub(crate) struct BytesLambda {
    /// The native method; it has a bytes form.
    method: Arc<Func>,
    /// The constant arguments after the receiver.
    rest: SmallVec<[Value; 3]>,
    source: Arc<Source>,
    span: Span,
}

impl BytesLambda {
    /// Whether the lambda is `{l -> l.split()}` (or `split(" ")`): the words of `l`.
    pub(crate) fn splits_words(&self) -> bool {
        let Func::Native(n) = &*self.method else {
            return false;
        };
        n.bytes
            .as_ref()
            .is_some_and(|b| b.kind == super::func::BytesKind::Split)
            && match &self.rest[..] {
                [] => true,
                [Value::Str(s)] => s.as_bytes() == b" ",
                _ => false,
            }
    }

    /// The needle when the lambda is `{l -> l.contains(needle)}` with a needle a
    /// match of which lies within one line (not empty, no CR or newline).
    pub(crate) fn contains_needle(&self) -> Option<&[u8]> {
        let Func::Native(n) = &*self.method else {
            return None;
        };
        let kind = n.bytes.as_ref()?.kind;
        match (kind, &self.rest[..]) {
            (super::func::BytesKind::Contains, [Value::Str(s)])
                if !s.as_bytes().is_empty()
                    && !s.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n') =>
            {
                Some(s.as_bytes())
            }
            _ => None,
        }
    }

    /// The lambda's result for the string `s`, errors located at the call.
    #[inline]
    pub(crate) fn call(&self, s: &[u8]) -> Result<Value, RuntimeError> {
        let Func::Native(n) = &*self.method else {
            unreachable!("bytes_lambda takes native methods only")
        };
        let b = n
            .bytes
            .as_ref()
            .expect("bytes_lambda checked the bytes form");
        b.call(&n.name, s, &self.rest)
            .map_err(|e| e.at(&self.source, self.span))
    }
}

/// An array lambda (`ir::Shape::Array`) called with `v`.
fn array_lambda(body: &Block, v: Value) -> Value {
    let [Stmt::Expr(Expr::Array { elems, .. })] = &body[..] else {
        unreachable!("checked by lambda_shape")
    };
    let items = elems
        .iter()
        .map(|a| match a {
            Arg::Pos(Expr::Const(c, _)) => c.clone(),
            _ => v.clone(),
        })
        .collect();
    Value::array(items)
}

/// The elements of an array lambda (`{w -> [w, 1]}`, `ir::Shape::Array`): `None` for
/// the parameter, the constant otherwise. `None` for any other function.
pub(crate) fn array_lambda_parts(f: &Value) -> Option<SmallVec<[Option<Value>; 4]>> {
    let (_, body, ir::Shape::Array) = shaped_lambda(f)? else {
        return None;
    };
    let [Stmt::Expr(Expr::Array { elems, .. })] = &body[..] else {
        return None;
    };
    Some(
        elems
            .iter()
            .map(|a| match a {
                Arg::Pos(Expr::Const(c, _)) => Some(c.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// `None` when some argument is anything else (then they are evaluated as usual).
#[inline]
fn borrow_args(act: &Act, args: &[Arg]) -> Option<BorrowedArgs> {
    if args.len() > 4 {
        return None;
    }
    let mut out: std::mem::ManuallyDrop<SmallVec<[Value; 4]>> = Default::default();
    for a in args {
        let v: &Value = match a {
            Arg::Pos(Expr::Const(v, _)) => v,
            Arg::Pos(Expr::Var {
                var: VarRef::Local(i),
                ..
            }) => {
                let v = match &act.locals {
                    Locals::Stack(slots) => slots[*i as usize].as_ref(),
                    Locals::Heap(f) => f.get_ref(*i),
                };
                v?
            }
            _ => return None,
        };
        // SAFETY: the copy shares the original's reference without counting it. The
        // original (a constant of the code, or a single-assignment slot of the
        // running scope) outlives the call, nothing can take it out of its slot
        // meanwhile, and the copy is never dropped (`ManuallyDrop`, and at most 4
        // values so the vector never spills to the heap). Callees get `&[Value]`:
        // they can only clone it, which counts a real reference.
        out.push(unsafe { std::ptr::read(v) });
    }
    Some(BorrowedArgs(out))
}

/// The integer program of a one-parameter lambda such as `{x -> x * 2}` (see
/// [`FnCode::pure_int`]), for stages that run it over a whole batch of integers
/// without a call per value.
pub(crate) fn int_lambda(f: &Value) -> Option<&ir::IntProg> {
    let Value::Func(func) = f else { return None };
    let Func::Closure { code, .. } = &**func else {
        return None;
    };
    if code.parameterless || !matches!(code.body, FnBody::Plain { params: 1, .. }) {
        return None;
    }
    code.pure_int
        .get_or_init(|| compile_int_lambda(code))
        .as_ref()
}

/// Values an [`int_lambda`] program takes at once.
const INT_KERNEL: usize = 256;

/// Runs an [`int_lambda`] program over the leading integers of `vals`, a run of at
/// most [`INT_KERNEL`] at a time, one tree node over the whole run (so the loops are
/// vectorised and the tree is walked per run, not per value). `results(start, out)`
/// receives each run's results. Returns how many values were done: it stops at the
/// first value that is not an integer or that the program gives up on.
pub(crate) fn int_lambda_runs(
    p: &ir::IntProg,
    vals: &[Value],
    mut results: impl FnMut(usize, &[Value]),
) -> usize {
    if BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
        return 0;
    }
    let mut xs = [0i64; INT_KERNEL];
    let mut ys = [0i64; INT_KERNEL];
    let mut out: Vec<Value> = Vec::with_capacity(INT_KERNEL);
    let mut done = 0;
    while done < vals.len() {
        let mut n = 0;
        while n < INT_KERNEL && done + n < vals.len() {
            let Value::Int(x) = vals[done + n] else { break };
            xs[n] = x;
            n += 1;
        }
        if n == 0 {
            break;
        }
        out.clear();
        match int_prog_batch(p, &xs[..n], &mut ys) {
            Some(false) => out.extend(ys[..n].iter().map(|&y| Value::Int(y))),
            Some(true) => out.extend(ys[..n].iter().map(|&y| Value::Bool(y != 0))),
            None => {
                // Some value of the run needs the general path: the ones before it
                // are done one by one.
                for &x in &xs[..n] {
                    match run_int_prog(p, x) {
                        Some(r) => out.push(r),
                        None => break,
                    }
                }
                let k = out.len();
                results(done, &out);
                return done + k;
            }
        }
        results(done, &out);
        done += n;
    }
    done
}

/// [`run_int_prog`] over a run of values (at most [`INT_KERNEL`]) into `out`:
/// `Some(false)` when `out` holds integers, `Some(true)` when it holds booleans (0/1),
/// `None` when some value needs the general path (overflow, remainder by zero, a
/// comparison used as a number).
fn int_prog_batch(p: &ir::IntProg, xs: &[i64], out: &mut [i64; INT_KERNEL]) -> Option<bool> {
    use ir::IntProg;
    let n = xs.len();
    match p {
        IntProg::X => {
            out[..n].copy_from_slice(xs);
            Some(false)
        }
        IntProg::C(c) => {
            out[..n].fill(*c);
            Some(false)
        }
        IntProg::XC(op, c) => int_op_batch(*op, xs, |_| *c, &mut out[..n]),
        // Only lambdas of several parameters use these (not run in batches).
        IntProg::P(_) | IntProg::Idx { .. } => None,
        IntProg::Op(op, l, r) => {
            let mut a = [0i64; INT_KERNEL];
            let mut b = [0i64; INT_KERNEL];
            if int_prog_batch(l, xs, &mut a)? || int_prog_batch(r, xs, &mut b)? {
                return None;
            }
            int_op_batch(*op, &a[..n], |i| b[i], &mut out[..n])
        }
    }
}

/// [`int_op`] over a run: `a[i] op b(i)` into `out[i]` (see [`int_prog_batch`]).
#[inline(always)]
fn int_op_batch(
    op: ir::IntOp,
    a: &[i64],
    b: impl Fn(usize) -> i64,
    out: &mut [i64],
) -> Option<bool> {
    use ir::IntOp;
    let n = a.len().min(out.len());
    let mut bad = false;
    macro_rules! each {
        ($i:ident => $e:expr) => {
            for $i in 0..n {
                out[$i] = $e;
            }
        };
    }
    match op {
        IntOp::Arith(Arith::Add) => {
            each!(i => { let (r, o) = a[i].overflowing_add(b(i)); bad |= o; r })
        }
        IntOp::Arith(Arith::Sub) => {
            each!(i => { let (r, o) = a[i].overflowing_sub(b(i)); bad |= o; r })
        }
        IntOp::Arith(Arith::Mul) => {
            each!(i => { let (r, o) = a[i].overflowing_mul(b(i)); bad |= o; r })
        }
        IntOp::Arith(Arith::Mod) => each!(i => {
            let d = b(i);
            bad |= d == 0;
            a[i].wrapping_rem(if d == 0 { 1 } else { d })
        }),
        IntOp::Arith(Arith::Lt) => {
            each!(i => (a[i] < b(i)) as i64);
            return Some(true);
        }
        IntOp::Arith(Arith::Le) => {
            each!(i => (a[i] <= b(i)) as i64);
            return Some(true);
        }
        IntOp::Arith(Arith::Gt) => {
            each!(i => (a[i] > b(i)) as i64);
            return Some(true);
        }
        IntOp::Arith(Arith::Ge) => {
            each!(i => (a[i] >= b(i)) as i64);
            return Some(true);
        }
        IntOp::Eq(negate) => {
            each!(i => ((a[i] == b(i)) != negate) as i64);
            return Some(true);
        }
        IntOp::Arith(_) => return None,
    }
    (!bad).then_some(false)
}

/// Compiles `code` to an [`ir::IntProg`] when it is `{x -> E}` with `E` made only of
/// `x`, integer constants, `+ - * %`, and at the top a comparison or `==`/`!=`: then,
/// given an integer, it runs without a frame.
fn compile_int_lambda(code: &FnCode) -> Option<ir::IntProg> {
    let FnBody::Plain { params, body } = &code.body else {
        return None;
    };
    let params = *params;
    if params == 0 || code.frame.heap || code.frame.nslots != params {
        return None;
    }
    // A one-parameter lambda takes an integer (`X` only); one with several takes any
    // values, of which the ones it uses must be integers or arrays indexed by a
    // constant (`{k, a, b -> a + b}`, `{a, b -> b(1) - a(1)}`).
    match &body[..] {
        [Stmt::Expr(e)] => int_node(e, true, params),
        _ => None,
    }
}

/// One node of [`compile_int_lambda`]; comparisons give booleans, so only the
/// outermost operation (`top`) may be one.
fn int_node(e: &Expr, top: bool, params: u32) -> Option<ir::IntProg> {
    use ir::{IntOp, IntProg};
    let (op, lhs, rhs) = match e {
        Expr::Const(Value::Int(c), _) => return Some(IntProg::C(*c)),
        Expr::Var {
            var: VarRef::Local(0),
            ..
        } => return Some(IntProg::X),
        Expr::Var {
            var: VarRef::Local(i),
            ..
        } if params > 1 && *i < params => return Some(IntProg::P(*i)),
        Expr::Call {
            name,
            var: VarRef::Local(i),
            args,
            ..
        } if params > 1 && *i < params => {
            return match &args[..] {
                [Arg::Pos(Expr::Const(Value::Int(index), _))] => Some(IntProg::Idx {
                    param: *i,
                    index: *index,
                    name: *name,
                }),
                _ => None,
            }
        }
        Expr::Binary { op, lhs, rhs, .. } => match op {
            Arith::Add | Arith::Sub | Arith::Mul | Arith::Mod => (IntOp::Arith(*op), lhs, rhs),
            Arith::Lt | Arith::Le | Arith::Gt | Arith::Ge if top => (IntOp::Arith(*op), lhs, rhs),
            _ => return None,
        },
        Expr::Equal {
            negate, lhs, rhs, ..
        } if top => (IntOp::Eq(*negate), lhs, rhs),
        _ => return None,
    };
    Some(
        match (int_node(lhs, false, params)?, int_node(rhs, false, params)?) {
            (IntProg::X, IntProg::C(c)) => IntProg::XC(op, c),
            (l, r) => IntProg::Op(op, Box::new(l), Box::new(r)),
        },
    )
}

/// Arguments by position: owned (`[Value]`) or borrowed (`[&Value]`).
trait ArgList {
    fn at(&self, i: usize) -> Option<&Value>;
}

impl ArgList for [Value] {
    #[inline]
    fn at(&self, i: usize) -> Option<&Value> {
        self.get(i)
    }
}

impl ArgList for [&Value] {
    #[inline]
    fn at(&self, i: usize) -> Option<&Value> {
        self.get(i).copied()
    }
}

/// Calls `f` without a frame when it is a lambda of several parameters compiled to an
/// integer program (`FnCode::pure_int`: `{a, b -> a + b}`, `{a, b -> b(1) - a(1)}`)
/// and `args` suit it; `None` otherwise (nothing was done: call it as usual). For
/// the stages that call one function per value (`reduce`, `reduce_by_key`, `sort`).
pub(crate) fn int_call(f: &Value, args: &[&Value]) -> Option<Value> {
    let Value::Func(func) = f else { return None };
    let Func::Closure { code, .. } = &**func else {
        return None;
    };
    match &code.body {
        FnBody::Plain { params, .. } if *params as usize == args.len() && *params > 1 => {}
        _ => return None,
    }
    let p = code
        .pure_int
        .get_or_init(|| compile_int_lambda(code))
        .as_ref()?;
    run_int_prog_args(p, args)
}

/// Runs an [`ir::IntProg`] of a lambda with several parameters on `args` (the
/// parameters it uses must be integers, or arrays for `Idx`). `None` sends the call
/// down the general path.
fn run_int_prog_args<A: ArgList + ?Sized>(p: &ir::IntProg, args: &A) -> Option<Value> {
    use ir::{IntOp, IntProg};
    fn arg<A: ArgList + ?Sized>(args: &A, i: u32) -> Option<i64> {
        match args.at(i as usize)? {
            Value::Int(x) => Some(*x),
            _ => None,
        }
    }
    fn int<A: ArgList + ?Sized>(p: &IntProg, args: &A) -> Option<i64> {
        match p {
            IntProg::X => arg(args, 0),
            IntProg::P(i) => arg(args, *i),
            IntProg::Idx { param, index, name } => {
                let Value::Array(a) = args.at(*param as usize)? else {
                    return None;
                };
                if name.in_namespace() {
                    return None;
                }
                let n = a.items.len() as i64;
                let i = if *index < 0 { index + n } else { *index };
                match a.items.get(usize::try_from(i).ok()?)? {
                    Value::Int(x) => Some(*x),
                    _ => None,
                }
            }
            IntProg::C(c) => Some(*c),
            IntProg::XC(op, c) => match apply(*op, arg(args, 0)?, *c)? {
                Value::Int(v) => Some(v),
                _ => None,
            },
            IntProg::Op(op, l, r) => match apply(*op, leaf(l, args)?, leaf(r, args)?)? {
                Value::Int(v) => Some(v),
                _ => None,
            },
        }
    }
    /// A parameter or constant without a recursive call (the operands of most
    /// operations); anything else through `int`.
    #[inline(always)]
    fn leaf<A: ArgList + ?Sized>(p: &IntProg, args: &A) -> Option<i64> {
        match p {
            IntProg::X => arg(args, 0),
            IntProg::P(i) => arg(args, *i),
            IntProg::C(c) => Some(*c),
            _ => int(p, args),
        }
    }
    #[inline]
    fn apply(op: IntOp, a: i64, b: i64) -> Option<Value> {
        match op {
            IntOp::Arith(op) => int_op(op, a, b),
            IntOp::Eq(negate) => Some(Value::Bool((a == b) != negate)),
        }
    }
    if BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    match p {
        IntProg::XC(op, c) => apply(*op, arg(args, 0)?, *c),
        IntProg::Op(op, l, r) => apply(*op, leaf(l, args)?, leaf(r, args)?),
        other => int(other, args).map(Value::Int),
    }
}

/// Runs a one-parameter [`ir::IntProg`] on `x`. `None` (overflow, remainder by
/// zero, an overridden operator) sends the call down the general path, which then
/// gives the answer or error it always gives.
#[inline]
fn run_int_prog(p: &ir::IntProg, x: i64) -> Option<Value> {
    run_int_prog_args(p, std::slice::from_ref(&Value::Int(x)))
}

/// An integer arithmetic operand, evaluated without `Value`s when it is made only of
/// integer constants, integer locals and `+ - * %` (pure, so the general path may
/// evaluate it again when this gives up with `None`).
#[inline(always)]
fn int_expr(act: &Act, e: &Expr) -> Option<i64> {
    match e {
        Expr::Const(Value::Int(x), _) => Some(*x),
        Expr::Var {
            var: VarRef::Local(i),
            ..
        } => match &act.locals {
            Locals::Stack(slots) => match &slots[*i as usize] {
                Some(Value::Int(x)) => Some(*x),
                _ => None,
            },
            Locals::Heap(f) => match f.get_ref(*i) {
                Some(Value::Int(x)) => Some(*x),
                _ => None,
            },
        },
        Expr::Binary { op, lhs, rhs, .. } => int_arith(act, *op, lhs, rhs),
        _ => None,
    }
}

#[inline(never)]
fn int_arith(act: &Act, op: Arith, lhs: &Expr, rhs: &Expr) -> Option<i64> {
    if BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    match int_op(op, int_expr(act, lhs)?, int_expr(act, rhs)?)? {
        Value::Int(v) => Some(v),
        _ => None,
    }
}

/// `lhs op rhs` on integers without `Value`s, or `None` for the general path.
#[inline]
fn int_binary(act: &Act, op: Arith, lhs: &Expr, rhs: &Expr) -> Option<Value> {
    if BUILTIN_OPERATOR_OVERRIDDEN.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    int_op(op, int_expr(act, lhs)?, int_expr(act, rhs)?)
}

/// `x op y` for the integer operations every fast path shares; `None` on overflow,
/// a remainder by zero or another operator (the general path, `ops::arith`, then
/// gives the float result or the error).
#[inline(always)]
fn int_op(op: Arith, x: i64, y: i64) -> Option<Value> {
    match op {
        Arith::Add => x.checked_add(y).map(Value::Int),
        Arith::Sub => x.checked_sub(y).map(Value::Int),
        Arith::Mul => x.checked_mul(y).map(Value::Int),
        Arith::Mod if y != 0 => Some(Value::Int(x.wrapping_rem(y))),
        Arith::Lt => Some(Value::Bool(x < y)),
        Arith::Le => Some(Value::Bool(x <= y)),
        Arith::Gt => Some(Value::Bool(x > y)),
        Arith::Ge => Some(Value::Bool(x >= y)),
        _ => None,
    }
}

fn finish(r: R) -> Result<Value, RuntimeError> {
    match r {
        Ok(v) | Err(Ctrl::Return(v)) => Ok(v),
        Err(Ctrl::Err(e)) => Err(e),
    }
}

/// Converts the result of running top-level code.
pub(crate) fn finish_top(r: R) -> Result<Value, RuntimeError> {
    finish(r)
}

fn describe_args(args: &[Value]) -> String {
    match args.len() {
        0 => "no arguments".to_string(),
        1 => format!(
            "{} {}",
            args[0].type_name(),
            super::print::inspect_plain(&args[0])
        ),
        _ => format!(
            "({})",
            args.iter()
                .map(super::print::inspect_plain)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn no_function(name: Sym, args: &[Value]) -> RuntimeError {
    match args.first() {
        None => RuntimeError::new(format!("no function '{}'", name.name())),
        Some(a0) => RuntimeError::new(format!(
            "no function '{}' for {} {}",
            name.name(),
            a0.type_name(),
            super::print::inspect_plain(a0)
        )),
    }
}

/// Calling an array indexes it (D19).
fn index_array(arr: &Array, args: &[Value]) -> Result<Value, RuntimeError> {
    if args.len() != 1 {
        return Err(RuntimeError::new(format!(
            "wrong number of arguments for array index (given {}, expected 1)",
            args.len()
        )));
    }
    match &args[0] {
        Value::Int(_) | Value::Float(_) => {
            let Some(i) = args[0].as_int() else {
                return Ok(Value::Nil);
            };
            let n = arr.items.len() as i64;
            let i = if i < 0 { i + n } else { i };
            if i < 0 || i >= n {
                Ok(Value::Nil)
            } else {
                Ok(arr.items[i as usize].clone())
            }
        }
        Value::Str(s) => Ok(arr.field(s.as_bytes()).cloned().unwrap_or_default()),
        other => Err(RuntimeError::new(format!(
            "array index must be a number or a string, got {} {}",
            other.type_name(),
            super::print::inspect_plain(other)
        ))),
    }
}

pub(crate) fn expr_span(e: &Expr) -> Span {
    match e {
        Expr::Var { span, .. }
        | Expr::Array { span, .. }
        | Expr::New { span, .. }
        | Expr::Call { span, .. }
        | Expr::CallValue { span, .. }
        | Expr::Generic { span, .. }
        | Expr::Binary { span, .. }
        | Expr::Equal { span, .. }
        | Expr::Unary { span, .. }
        | Expr::AmpChain { span, .. } => *span,
        Expr::Closure(code) => code.span,
        Expr::And(a, b) | Expr::Or(a, b) => expr_span(a).to(expr_span(b)),
        Expr::If { cond, .. } => expr_span(cond),
        Expr::Const(_, span) => *span,
    }
}

#[allow(dead_code)]
fn _assert_str(_: Str) {}
