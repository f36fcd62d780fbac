//! The compiler: syntax tree to [`ir`](super::ir), resolving every name to a slot.
//!
//! It also performs the checks that can be made before running (D11 rebinding in
//! one scope, D16/D17 labels) so that such programs are rejected like syntax errors.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::interp::Globals;
use super::ir::{self, Arith, FnBody, FnCode, FrameLayout, Pat, PatList, VarRef};
use super::symbol::Sym;
use super::value::{Fields, Str, Time, TimeOffset, Value};
use crate::syntax::ast::{self, Arg, BinOp, Body, ExprKind, PatElem, PatKind, StmtKind};
use crate::syntax::diagnostic::Diagnostic;
use crate::syntax::{Source, Span};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ScopeKind {
    Top,
    Namespace(Sym),
    Function,
}

struct Scope {
    kind: ScopeKind,
    slots: FxHashMap<Sym, u32>,
    nslots: u32,
    heap: bool,
    /// Names bound so far in program order, with where (D11).
    bound: FxHashMap<Sym, Span>,
}

impl Scope {
    fn new(kind: ScopeKind) -> Scope {
        Scope {
            kind,
            slots: FxHashMap::default(),
            nslots: 0,
            heap: matches!(kind, ScopeKind::Top | ScopeKind::Namespace(_)),
            bound: FxHashMap::default(),
        }
    }

    fn slot(&mut self, name: Sym) -> u32 {
        if let Some(s) = self.slots.get(&name) {
            return *s;
        }
        let s = self.nslots;
        self.nslots += 1;
        self.slots.insert(name, s);
        s
    }

    fn layout(&self) -> FrameLayout {
        FrameLayout {
            nslots: self.nslots,
            heap: self.heap,
        }
    }
}

struct Compiler<'g> {
    g: &'g Globals,
    source: Arc<Source>,
    scopes: Vec<Scope>,
    errors: Vec<Diagnostic>,
    /// Non-method names bound in each namespace body of the program (for `import`).
    ns_names: FxHashMap<String, Vec<Sym>>,
}

/// Compiles a whole program into the code of its top level.
pub fn compile_program(
    program: &ast::Program,
    source: Arc<Source>,
    g: &Globals,
) -> Result<Arc<FnCode>, Vec<Diagnostic>> {
    compile_top(program, source, g, &mut TopLevel::default())
}

/// The top-level scope of an interactive session, kept between inputs.
#[derive(Default)]
pub struct TopLevel {
    slots: FxHashMap<Sym, u32>,
    nslots: u32,
    ns_names: FxHashMap<String, Vec<Sym>>,
    /// Whether names bound by earlier inputs may be bound again (the REPL): a new
    /// binding gets a new slot and shadows the old one from then on.
    pub rebind: bool,
}

impl TopLevel {
    /// The top level of an interactive session, where inputs may rebind names.
    pub fn interactive() -> TopLevel {
        TopLevel {
            rebind: true,
            ..Default::default()
        }
    }

    /// Slots the top-level frame needs.
    pub fn nslots(&self) -> u32 {
        self.nslots
    }

    /// Names bound at top level so far (for completion).
    pub fn names(&self) -> Vec<String> {
        self.slots.keys().map(|s| s.name().to_owned()).collect()
    }
}

/// Compiles one program, or one input of a session, against its top-level scope.
pub fn compile_top(
    program: &ast::Program,
    source: Arc<Source>,
    g: &Globals,
    top: &mut TopLevel,
) -> Result<Arc<FnCode>, Vec<Diagnostic>> {
    let mut scope = Scope::new(ScopeKind::Top);
    scope.slots = top.slots.clone();
    scope.nslots = top.nslots;
    let mut c = Compiler {
        g,
        source: source.clone(),
        scopes: vec![scope],
        errors: Vec::new(),
        ns_names: std::mem::take(&mut top.ns_names),
    };
    c.collect_namespace_names(&program.stmts);
    if top.rebind {
        // Earlier inputs' names that this input binds again get fresh slots.
        let in_ns = false;
        for s in &program.stmts {
            if let Some(name) = binding_name(s, in_ns) {
                let sym = Sym::new(&name.name);
                if top.slots.contains_key(&sym) {
                    let scope = c.scope();
                    if scope.slots.get(&sym) == top.slots.get(&sym) {
                        let slot = scope.nslots;
                        scope.nslots += 1;
                        scope.slots.insert(sym, slot);
                    }
                }
            }
        }
    }
    c.prescan(&program.stmts);
    let body = c.stmts(&program.stmts);
    let scope = c.scopes.pop().expect("top scope");
    if !c.errors.is_empty() {
        top.ns_names = c.ns_names;
        return Err(c.errors);
    }
    top.slots = scope.slots.clone();
    top.nslots = scope.nslots;
    top.ns_names = c.ns_names;
    Ok(Arc::new(FnCode {
        pure_int: std::sync::OnceLock::new(),
        shape: std::sync::OnceLock::new(),
        name: None,
        body: FnBody::Plain { params: 0, body },
        frame: scope.layout(),
        parameterless: true,
        source,
        span: Span::default(),
    }))
}

fn binding_name(stmt: &ast::Stmt, in_namespace: bool) -> Option<&ast::Ident> {
    match &stmt.kind {
        StmtKind::Assign { name, .. } | StmtKind::RightAssign { name, .. } => Some(name),
        StmtKind::Def { name, .. } => Some(name),
        StmtKind::Method { name, .. } if !in_namespace => Some(name),
        _ => None,
    }
}

impl Compiler<'_> {
    fn error(&mut self, message: impl Into<String>, span: Span) {
        self.errors.push(Diagnostic::error(message, Some(span)));
    }

    fn scope(&mut self) -> &mut Scope {
        self.scopes.last_mut().expect("scope")
    }

    fn collect_namespace_names(&mut self, stmts: &[ast::Stmt]) {
        for s in stmts {
            if let StmtKind::Namespace { name, body, .. } = &s.kind {
                let names: Vec<Sym> = body
                    .iter()
                    .filter_map(|b| binding_name(b, true))
                    .map(|i| Sym::new(&i.name))
                    .collect();
                self.ns_names
                    .entry(name.name.clone())
                    .or_default()
                    .extend(names);
                self.collect_namespace_names(body);
            }
        }
    }

    /// Names an `import NAME` may bind.
    fn import_names(&self, name: &str) -> Vec<Sym> {
        let mut out: Vec<Sym> = Vec::new();
        let mut seen = FxHashSet::default();
        if let Some(ns) = self.g.namespaces.get(name) {
            for (s, _) in ns.importable() {
                if seen.insert(s) {
                    out.push(s);
                }
            }
        }
        if let Some(names) = self.ns_names.get(name) {
            for s in names {
                if seen.insert(*s) {
                    out.push(*s);
                }
            }
        }
        out
    }

    /// Gives a slot to every name the statements bind in the current scope, so that
    /// references before the binding (forward references, D21) resolve to it.
    fn prescan(&mut self, stmts: &[ast::Stmt]) {
        let in_ns = matches!(self.scope().kind, ScopeKind::Namespace(_));
        for s in stmts {
            if let Some(name) = binding_name(s, in_ns) {
                let sym = Sym::new(&name.name);
                self.scope().slot(sym);
            }
            match &s.kind {
                StmtKind::Import(name) => {
                    for sym in self.import_names(&name.name) {
                        self.scope().slot(sym);
                    }
                }
                StmtKind::Expr(e)
                | StmtKind::Assign { value: e, .. }
                | StmtKind::RightAssign { value: e, .. } => self.prescan_expr(e),
                StmtKind::Emit(args) | StmtKind::Return(args) => {
                    for a in args {
                        self.prescan_arg(a);
                    }
                }
                _ => {}
            }
        }
    }

    fn prescan_arg(&mut self, a: &Arg) {
        match a {
            Arg::Pos(e) | Arg::Labeled(_, e) | Arg::Splat(e) => self.prescan_expr(e),
        }
    }

    /// Inlined `if` blocks bind in the enclosing scope; find them.
    fn prescan_expr(&mut self, e: &ast::Expr) {
        match &e.kind {
            ExprKind::If { cond, then, els } => {
                self.prescan_expr(cond);
                for b in std::iter::once(then).chain(els.iter()) {
                    match &**b {
                        ast::Branch::Block(stmts, _) => self.prescan(stmts),
                        ast::Branch::Expr(e) => self.prescan_expr(e),
                        ast::Branch::Emit(args, _) | ast::Branch::Return(args, _) => {
                            for a in args {
                                self.prescan_arg(a);
                            }
                        }
                        ast::Branch::Skip(_) => {}
                    }
                }
            }
            ExprKind::Array(args) | ExprKind::New { args, .. } | ExprKind::Call { args, .. } => {
                for a in args {
                    self.prescan_arg(a);
                }
            }
            ExprKind::MethodCall { recv, args, .. }
            | ExprKind::CallValue { callee: recv, args } => {
                self.prescan_expr(recv);
                for a in args {
                    self.prescan_arg(a);
                }
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                self.prescan_expr(lhs);
                self.prescan_expr(rhs);
            }
            ExprKind::AmpChain(items) => {
                for i in items {
                    self.prescan_expr(i);
                }
            }
            ExprKind::Unary { operand, .. } | ExprKind::Paren(operand) => {
                self.prescan_expr(operand)
            }
            _ => {}
        }
    }

    /// Records a binding of `name` in the current scope, reporting a rebinding (D11).
    fn declare(&mut self, name: &ast::Ident) -> VarRef {
        let sym = Sym::new(&name.name);
        let source = self.source.clone();
        let scope = self.scope();
        if let Some(first) = scope.bound.get(&sym).copied() {
            let (line, _) = source.line_col(first.start as usize);
            self.error(
                format!(
                    "'{}' is already defined (at {}:{})",
                    name.name, source.name, line
                ),
                name.span,
            );
        } else {
            scope.bound.insert(sym, name.span);
        }
        let kind = self.scope().kind;
        let slot = self.scope().slot(sym);
        match kind {
            ScopeKind::Top => VarRef::Global(slot),
            _ => VarRef::Local(slot),
        }
    }

    /// Lexical resolution of a name from the current scope outwards.
    fn resolve(&self, name: Sym) -> VarRef {
        let n = self.scopes.len();
        for (i, scope) in self.scopes.iter().enumerate().rev() {
            if let Some(&slot) = scope.slots.get(&name) {
                if scope.kind == ScopeKind::Top {
                    return VarRef::Global(slot);
                }
                let depth = n - 1 - i;
                return if depth == 0 {
                    VarRef::Local(slot)
                } else {
                    VarRef::Up(depth as u32 - 1, slot)
                };
            }
        }
        if self.g.prelude_has(name.name()) {
            VarRef::Prelude
        } else {
            VarRef::Unbound
        }
    }

    fn resolve_str(&self, name: &str) -> VarRef {
        self.resolve(Sym::new(name))
    }

    // ----- statements -------------------------------------------------------------

    fn stmts(&mut self, stmts: &[ast::Stmt]) -> ir::Block {
        stmts.iter().filter_map(|s| self.stmt(s)).collect()
    }

    fn current_ns(&self) -> Option<Sym> {
        match self.scopes.last().map(|s| s.kind) {
            Some(ScopeKind::Namespace(n)) => Some(n),
            _ => None,
        }
    }

    fn stmt(&mut self, s: &ast::Stmt) -> Option<ir::Stmt> {
        Some(match &s.kind {
            StmtKind::Expr(e) => ir::Stmt::Expr(self.expr(e)),
            StmtKind::Assign { name, value } | StmtKind::RightAssign { value, name } => {
                let value = self.expr(value);
                let slot = self.declare(name);
                ir::Stmt::Bind {
                    slot,
                    name: Sym::new(&name.name),
                    value,
                    ns: self.current_ns(),
                    span: name.span,
                }
            }
            StmtKind::Def { name, params, body } => {
                let slot = self.declare(name);
                let params = params.clone().unwrap_or_default();
                let code = self.function(Some(&name.name), &params, body, false, s.span);
                ir::Stmt::Bind {
                    slot,
                    name: Sym::new(&name.name),
                    value: ir::Expr::Closure(code),
                    ns: self.current_ns(),
                    span: name.span,
                }
            }
            StmtKind::Method { name, params, body } => {
                let mut all = vec![ast::Ident {
                    name: "self".into(),
                    span: name.span,
                }];
                all.extend(params.iter().cloned());
                match self.scope().kind {
                    ScopeKind::Namespace(ns) => {
                        let code = self.function(Some(&name.name), &all, body, false, s.span);
                        ir::Stmt::Method {
                            ns: Some(ns),
                            name: Sym::new(&name.name),
                            value: ir::Expr::Closure(code),
                            span: name.span,
                        }
                    }
                    ScopeKind::Top => {
                        let slot = self.declare(name);
                        let code = self.function(Some(&name.name), &all, body, false, s.span);
                        ir::Stmt::Bind {
                            slot,
                            name: Sym::new(&name.name),
                            value: ir::Expr::Closure(code),
                            ns: None,
                            span: name.span,
                        }
                    }
                    ScopeKind::Function => {
                        self.error(
                            "`method` is allowed only at top level or in a namespace or class body",
                            s.span,
                        );
                        return None;
                    }
                }
            }
            StmtKind::Namespace {
                name,
                is_class,
                body,
            } => {
                if self.scope().kind == ScopeKind::Function {
                    self.error(
                        "`namespace` and `class` are allowed only at top level or in a namespace body",
                        s.span,
                    );
                    return None;
                }
                let sym = Sym::new(&name.name);
                self.scopes.push(Scope::new(ScopeKind::Namespace(sym)));
                self.prescan(body);
                let stmts = self.stmts(body);
                let scope = self.scopes.pop().expect("namespace scope");
                ir::Stmt::Namespace {
                    name: sym,
                    is_class: *is_class,
                    body: Arc::new(FnCode {
                        pure_int: std::sync::OnceLock::new(),
                        shape: std::sync::OnceLock::new(),
                        name: Some(sym),
                        body: FnBody::Plain {
                            params: 0,
                            body: stmts,
                        },
                        frame: scope.layout(),
                        parameterless: true,
                        source: self.source.clone(),
                        span: s.span,
                    }),
                    span: s.span,
                }
            }
            StmtKind::Import(name) => {
                if self.scope().kind == ScopeKind::Function {
                    self.error(
                        "`import` is allowed only at top level or in a namespace body",
                        s.span,
                    );
                    return None;
                }
                let targets = self
                    .import_names(&name.name)
                    .into_iter()
                    .map(|sym| (sym, self.resolve(sym)))
                    .collect();
                ir::Stmt::Import {
                    name: Sym::new(&name.name),
                    targets,
                    ns: self.current_ns(),
                    span: s.span,
                }
            }
            StmtKind::Skip => ir::Stmt::Skip(s.span),
            StmtKind::Emit(args) => ir::Stmt::Emit(self.call_args(args), s.span),
            StmtKind::Return(args) => {
                let (elems, fields) = self.array_args(args, s.span);
                ir::Stmt::Return(elems, fields, s.span)
            }
        })
    }

    /// Compiles a lambda-like function in a new scope.
    fn function(
        &mut self,
        name: Option<&str>,
        params: &[ast::Ident],
        body: &Body,
        parameterless: bool,
        span: Span,
    ) -> Arc<FnCode> {
        self.scope().heap = true;
        self.scopes.push(Scope::new(ScopeKind::Function));
        for p in params {
            self.declare(p);
        }
        let stmts = match body {
            Body::Expr(e) => {
                self.prescan_expr(e);
                vec![ir::Stmt::Expr(self.expr(e))]
            }
            Body::Block(stmts) => {
                self.prescan(stmts);
                self.stmts(stmts)
            }
        };
        let scope = self.scopes.pop().expect("function scope");
        Arc::new(FnCode {
            pure_int: std::sync::OnceLock::new(),
            shape: std::sync::OnceLock::new(),
            name: name.map(Sym::new),
            body: FnBody::Plain {
                params: params.len() as u32,
                body: stmts,
            },
            frame: scope.layout(),
            parameterless,
            source: self.source.clone(),
            span,
        })
    }

    fn case_lambda(&mut self, cl: &ast::CaseLambda, span: Span) -> Arc<FnCode> {
        self.scope().heap = true;
        let mut clauses = Vec::new();
        for c in &cl.clauses {
            self.scopes.push(Scope::new(ScopeKind::Function));
            let mut names = FxHashMap::default();
            let pattern = self.pat_list(&c.pattern, &mut names, true);
            self.prescan(&c.body);
            let guard = c.guard.as_ref().map(|g| self.expr(g));
            let body = self.stmts(&c.body);
            let scope = self.scopes.pop().expect("clause scope");
            clauses.push(ir::Clause {
                pattern,
                guard,
                body,
                frame: scope.layout(),
                span: c.span,
            });
        }
        let else_body = cl.else_body.as_ref().map(|stmts| {
            self.scopes.push(Scope::new(ScopeKind::Function));
            self.prescan(stmts);
            let body = self.stmts(stmts);
            let scope = self.scopes.pop().expect("else scope");
            (body, scope.layout())
        });
        Arc::new(FnCode {
            pure_int: std::sync::OnceLock::new(),
            shape: std::sync::OnceLock::new(),
            name: None,
            body: FnBody::Case { clauses, else_body },
            frame: FrameLayout::default(),
            parameterless: false,
            source: self.source.clone(),
            span,
        })
    }

    // ----- patterns ---------------------------------------------------------------

    fn pat_list(
        &mut self,
        elems: &[PatElem],
        names: &mut FxHashMap<String, u32>,
        top: bool,
    ) -> PatList {
        let _ = top;
        let has_fields = elems.iter().any(|e| matches!(e, PatElem::Field(..)));
        if has_fields {
            let mut fields = Vec::new();
            let mut rest = None;
            for e in elems {
                match e {
                    PatElem::Field(label, p) => {
                        fields.push((label.name.as_bytes().to_vec(), self.pat(p, names)))
                    }
                    PatElem::Rest(p) => {
                        if rest.is_some() {
                            self.error("only one rest pattern (*name) is allowed", p.span);
                        }
                        rest = Some(Box::new(self.pat(p, names)));
                    }
                    PatElem::Pos(p) => {
                        self.error(
                            "a struct pattern cannot mix labeled and unlabeled elements",
                            p.span,
                        );
                    }
                }
            }
            return PatList::Struct { fields, rest };
        }
        let mut before = Vec::new();
        let mut rest = None;
        let mut after = Vec::new();
        for e in elems {
            match e {
                PatElem::Pos(p) => {
                    let p = self.pat(p, names);
                    if rest.is_some() {
                        after.push(p);
                    } else {
                        before.push(p);
                    }
                }
                PatElem::Rest(p) => {
                    if rest.is_some() {
                        self.error("only one rest pattern (*name) is allowed", p.span);
                    }
                    rest = Some(Box::new(self.pat(p, names)));
                }
                PatElem::Field(..) => unreachable!(),
            }
        }
        PatList::Seq {
            before,
            rest,
            after,
        }
    }

    fn pat(&mut self, p: &ast::Pat, names: &mut FxHashMap<String, u32>) -> Pat {
        match &p.kind {
            PatKind::Bind(name) => {
                if let Some(slot) = names.get(name) {
                    return Pat::Same(*slot);
                }
                let sym = Sym::new(name);
                let slot = self.scope().slot(sym);
                self.scope().bound.insert(sym, p.span);
                names.insert(name.clone(), slot);
                Pat::Bind(slot)
            }
            PatKind::Wildcard => Pat::Wildcard,
            PatKind::Int(i) => Pat::Num(*i as f64),
            PatKind::Float(f) => Pat::Num(*f),
            PatKind::Str(s) => Pat::Str(s.clone()),
            PatKind::Nil => Pat::Nil,
            PatKind::True => Pat::Bool(true),
            PatKind::False => Pat::Bool(false),
            PatKind::Array { class, elems } => Pat::Array {
                class: class.as_ref().map(|c| (Sym::new(&c.name), c.span)),
                list: self.pat_list(elems, names, false),
            },
            PatKind::TypeTest(inner, ns) => Pat::TypeTest(
                Box::new(self.pat(inner, names)),
                Sym::new(&ns.name),
                ns.span,
            ),
        }
    }

    // ----- expressions ------------------------------------------------------------

    fn call_args(&mut self, args: &[Arg]) -> Vec<ir::Arg> {
        args.iter()
            .filter_map(|a| match a {
                Arg::Pos(e) => Some(ir::Arg::Pos(self.expr(e))),
                Arg::Splat(e) => Some(ir::Arg::Splat(self.expr(e))),
                Arg::Labeled(label, _) => {
                    self.error("labeled arguments are not supported", label.span);
                    None
                }
            })
            .collect()
    }

    /// Elements of an array literal (or `return`): labels make field names (D16).
    fn array_args(&mut self, args: &[Arg], span: Span) -> (Vec<ir::Arg>, Option<Fields>) {
        let has_label = args.iter().any(|a| matches!(a, Arg::Labeled(..)));
        let has_splat = args.iter().any(|a| matches!(a, Arg::Splat(_)));
        if has_label && has_splat {
            self.error("label(s) and splat(s) in an array", span);
        }
        let mut names = Vec::new();
        let elems = args
            .iter()
            .map(|a| match a {
                Arg::Pos(e) => {
                    names.push(None);
                    ir::Arg::Pos(self.expr(e))
                }
                Arg::Labeled(l, e) => {
                    names.push(Some(Str::from(l.name.as_str())));
                    ir::Arg::Pos(self.expr(e))
                }
                Arg::Splat(e) => ir::Arg::Splat(self.expr(e)),
            })
            .collect();
        let fields = if has_label && !has_splat {
            Some(Fields::from(names))
        } else {
            None
        };
        (elems, fields)
    }

    fn branch(&mut self, b: &ast::Branch) -> ir::Block {
        match b {
            ast::Branch::Expr(e) => vec![ir::Stmt::Expr(self.expr(e))],
            ast::Branch::Block(stmts, _) => self.stmts(stmts),
            ast::Branch::Skip(span) => vec![ir::Stmt::Skip(*span)],
            ast::Branch::Emit(args, span) => vec![ir::Stmt::Emit(self.call_args(args), *span)],
            ast::Branch::Return(args, span) => {
                let (elems, fields) = self.array_args(args, *span);
                vec![ir::Stmt::Return(elems, fields, *span)]
            }
        }
    }

    fn op_call(&self, name: &str) -> (Sym, VarRef) {
        (Sym::new(name), self.resolve_str(name))
    }

    fn expr(&mut self, e: &ast::Expr) -> ir::Expr {
        let span = e.span;
        match &e.kind {
            ExprKind::Nil => ir::Expr::Const(Value::Nil, span),
            ExprKind::True => ir::Expr::Const(Value::Bool(true), span),
            ExprKind::False => ir::Expr::Const(Value::Bool(false), span),
            ExprKind::Int(i) => ir::Expr::Const(Value::Int(*i), span),
            ExprKind::Float(f) => ir::Expr::Const(Value::Float(*f), span),
            ExprKind::Str(s) => ir::Expr::Const(Value::bytes(s), span),
            ExprKind::Time(t) => match time_literal(t) {
                Some(v) => ir::Expr::Const(v, span),
                None => {
                    self.error("bad time format", span);
                    ir::Expr::Const(Value::Nil, span)
                }
            },
            ExprKind::Var(id) => {
                let sym = Sym::new(&id.name);
                let var = self.resolve(sym);
                if let VarRef::Prelude = var {
                    if let Some(v) = self.g.prelude_get(sym) {
                        return ir::Expr::Const(v, span);
                    }
                }
                ir::Expr::Var {
                    var,
                    name: sym,
                    span,
                }
            }
            ExprKind::Array(args) => {
                let (elems, fields) = self.array_args(args, span);
                ir::Expr::Array {
                    elems,
                    fields,
                    span,
                }
            }
            ExprKind::New { class, args } => {
                let (elems, fields) = self.array_args(args, span);
                ir::Expr::New {
                    class: Sym::new(&class.name),
                    elems,
                    fields,
                    span,
                }
            }
            ExprKind::Lambda(l) => {
                let parameterless = l.params.is_empty();
                ir::Expr::Closure(self.function(None, &l.params, &l.body, parameterless, span))
            }
            ExprKind::CaseLambda(cl) => ir::Expr::Closure(self.case_lambda(cl, span)),
            ExprKind::Call { name, args } => {
                let sym = Sym::new(&name.name);
                ir::Expr::Call {
                    name: sym,
                    var: self.resolve(sym),
                    args: self.call_args(args),
                    span,
                }
            }
            ExprKind::MethodCall { recv, name, args } => {
                let sym = Sym::new(&name.name);
                let mut all = vec![ir::Arg::Pos(self.expr(recv))];
                all.extend(self.call_args(args));
                ir::Expr::Call {
                    name: sym,
                    var: self.resolve(sym),
                    args: all,
                    span,
                }
            }
            ExprKind::CallValue { callee, args } => ir::Expr::CallValue {
                callee: Box::new(self.expr(callee)),
                args: self.call_args(args),
                span,
            },
            ExprKind::GenericFn(name) => {
                self.scope().heap = true;
                let sym = Sym::new(&name.name);
                ir::Expr::Generic {
                    name: sym,
                    var: self.resolve(sym),
                    span,
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let l = Box::new(self.expr(lhs));
                let r = Box::new(self.expr(rhs));
                let arith = match op {
                    BinOp::And => return ir::Expr::And(l, r),
                    BinOp::Or => return ir::Expr::Or(l, r),
                    BinOp::Eq | BinOp::Ne => {
                        let (name, var) = self.op_call(op.fname());
                        return ir::Expr::Equal {
                            negate: *op == BinOp::Ne,
                            name,
                            var,
                            lhs: l,
                            rhs: r,
                            span,
                        };
                    }
                    BinOp::Pipe => Arith::Pipe,
                    BinOp::Lt => Arith::Lt,
                    BinOp::Le => Arith::Le,
                    BinOp::Gt => Arith::Gt,
                    BinOp::Ge => Arith::Ge,
                    BinOp::Add => Arith::Add,
                    BinOp::Sub => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    BinOp::Div => Arith::Div,
                    BinOp::Mod => Arith::Mod,
                };
                let (name, var) = self.op_call(op.fname());
                ir::Expr::Binary {
                    op: arith,
                    name,
                    var,
                    lhs: l,
                    rhs: r,
                    span,
                }
            }
            ExprKind::AmpChain(items) => {
                let items = items.iter().map(|i| self.expr(i)).collect();
                let (name, var) = self.op_call("&");
                ir::Expr::AmpChain {
                    items,
                    name,
                    var,
                    span,
                }
            }
            ExprKind::Unary { op, operand } => {
                let (name, var) = self.op_call("-");
                ir::Expr::Unary {
                    op: *op,
                    name,
                    var,
                    operand: Box::new(self.expr(operand)),
                    span,
                }
            }
            ExprKind::Paren(inner) => self.expr(inner),
            ExprKind::If { cond, then, els } => {
                let cond = Box::new(self.expr(cond));
                // Bindings in the two branches are alternatives, not rebindings (D11).
                let before = self.scope().bound.clone();
                let then = self.branch(then);
                let after_then = std::mem::replace(&mut self.scope().bound, before.clone());
                let els = els.as_ref().map(|b| self.branch(b));
                let bound = &mut self.scope().bound;
                for (k, v) in after_then {
                    bound.entry(k).or_insert(v);
                }
                ir::Expr::If { cond, then, els }
            }
        }
    }
}

/// The value of a validated time literal (2.10, D8).
fn time_literal(t: &ast::TimeLit) -> Option<Value> {
    let days = super::print::days_from_civil(t.year as i64, t.month as u32, t.day as u32);
    let Some(tod) = t.time else {
        return Some(Value::time(Time {
            secs: days * 86_400,
            nanos: 0,
            offset: TimeOffset::DateOnly,
        }));
    };
    let civil = days * 86_400 + tod.hour as i64 * 3600 + tod.minute as i64 * 60 + tod.second as i64;
    let offset = match tod.zone {
        ast::TimeZoneLit::Offset(o) => o,
        ast::TimeZoneLit::Local => crate::builtins::time::local_offset_for_civil(civil)?,
    };
    Some(Value::time(Time {
        secs: civil - offset as i64,
        nanos: tod.nanosecond,
        offset: TimeOffset::Seconds(offset),
    }))
}
