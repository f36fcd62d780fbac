//! The compiled program: the syntax tree with every name resolved to a slot.
//!
//! The compiler (`compile.rs`) produces it once; the evaluator (`exec.rs`) walks it
//! without ever looking a variable up by name.

use std::sync::Arc;

use super::symbol::Sym;
use super::value::{Fields, Value};
use crate::syntax::ast::UnOp;
use crate::syntax::{Source, Span};

/// Where a name lives, relative to the running activation.
#[derive(Clone, Copy, Debug)]
pub enum VarRef {
    /// A slot of the current scope's frame.
    Local(u32),
    /// A slot of an enclosing scope: `depth` 0 is the frame the running function
    /// was defined in, 1 its parent, and so on.
    Up(u32, u32),
    /// A slot of the top-level frame. When it is still unbound, the prelude binding
    /// of the same name (if any) is used: a top-level definition shadows a builtin
    /// only from the point it runs (D11).
    Global(u32),
    /// A prelude (builtin) binding.
    Prelude,
    /// Bound nowhere: reading it is `undefined variable`.
    Unbound,
}

#[derive(Debug)]
pub enum Arg {
    Pos(Expr),
    Splat(Expr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Lt,
    Le,
    Gt,
    Ge,
    Pipe,
}

#[derive(Debug)]
pub enum Expr {
    Const(Value, Span),
    Var {
        var: VarRef,
        name: Sym,
        span: Span,
    },
    Array {
        elems: Vec<Arg>,
        /// Field names when the literal has labels.
        fields: Option<Fields>,
        span: Span,
    },
    New {
        class: Sym,
        elems: Vec<Arg>,
        fields: Option<Fields>,
        span: Span,
    },
    /// A lambda or case lambda literal: creates a closure over the current frame.
    Closure(Arc<FnCode>),
    /// `name(args)`: dispatch on the first argument, then lexical `var` (3.5).
    Call {
        name: Sym,
        var: VarRef,
        args: Vec<Arg>,
        span: Span,
    },
    /// `callee.(args)`
    CallValue {
        callee: Box<Expr>,
        args: Vec<Arg>,
        span: Span,
    },
    /// `&name`
    Generic {
        name: Sym,
        var: VarRef,
        span: Span,
    },
    /// Binary operator calling a function by name, with fast paths for numbers.
    Binary {
        op: Arith,
        name: Sym,
        var: VarRef,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        span: Span,
    },
    /// `==` / `!=` (global functions, dispatched like other operators)
    Equal {
        negate: bool,
        name: Sym,
        var: VarRef,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        span: Span,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Unary {
        op: UnOp,
        name: Sym,
        var: VarRef,
        operand: Box<Expr>,
        span: Span,
    },
    /// `a & b & c ...` (D52)
    AmpChain {
        items: Vec<Expr>,
        name: Sym,
        var: VarRef,
        span: Span,
    },
    If {
        cond: Box<Expr>,
        then: Block,
        els: Option<Block>,
    },
}

/// Statements of an inlined block or a body; the value is the last statement's.
pub type Block = Vec<Stmt>;

#[derive(Debug)]
pub enum Stmt {
    Expr(Expr),
    /// Binds a slot (assignment, `def`, right assignment). `ns` is set inside a
    /// namespace body: the binding also goes into the namespace table.
    Bind {
        slot: VarRef,
        name: Sym,
        value: Expr,
        ns: Option<Sym>,
        span: Span,
    },
    /// `method` in a namespace body or at top level.
    Method {
        ns: Option<Sym>,
        name: Sym,
        value: Expr,
        span: Span,
    },
    Namespace {
        name: Sym,
        is_class: bool,
        body: Arc<FnCode>,
        span: Span,
    },
    /// `import NAME`: copies the namespace's bindings into the given slots.
    Import {
        name: Sym,
        /// The slots of names the program mentions; other bindings are copied into
        /// `extra` by name (reachable through dispatch-free lexical lookup only if
        /// the program names them, so they need no slot).
        targets: Vec<(Sym, VarRef)>,
        ns: Option<Sym>,
        span: Span,
    },
    Skip(Span),
    Emit(Vec<Arg>, Span),
    Return(Vec<Arg>, Option<Fields>, Span),
}

/// A compiled pattern (3.6).
#[derive(Debug)]
pub enum Pat {
    Bind(u32),
    /// A repeated variable: must equal the value already bound in this slot.
    Same(u32),
    Wildcard,
    Num(f64),
    Str(Vec<u8>),
    Nil,
    Bool(bool),
    Array {
        class: Option<(Sym, Span)>,
        list: PatList,
    },
    TypeTest(Box<Pat>, Sym, Span),
}

/// A list of patterns with an optional rest: `before..., *rest, after...`, or a
/// struct pattern.
#[derive(Debug)]
pub enum PatList {
    Seq {
        before: Vec<Pat>,
        rest: Option<Box<Pat>>,
        after: Vec<Pat>,
    },
    Struct {
        fields: Vec<(Vec<u8>, Pat)>,
        rest: Option<Box<Pat>>,
    },
}

#[derive(Debug)]
pub struct Clause {
    pub pattern: PatList,
    pub guard: Option<Expr>,
    pub body: Block,
    pub frame: FrameLayout,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FrameLayout {
    pub nslots: u32,
    /// The frame must live on the heap because closures capture it.
    pub heap: bool,
}

#[derive(Debug)]
pub enum FnBody {
    Plain {
        params: u32,
        body: Block,
    },
    Case {
        clauses: Vec<Clause>,
        else_body: Option<(Block, FrameLayout)>,
    },
}

/// A compiled function (lambda, case lambda, `def`, method, namespace body or the
/// top-level script).
#[derive(Debug)]
pub struct FnCode {
    pub name: Option<Sym>,
    pub body: FnBody,
    pub frame: FrameLayout,
    /// A parameterless `{ stmts }` / `{ -> stmts }` lambda: a stage or `map` calls it
    /// with no arguments (D34).
    pub parameterless: bool,
    pub source: Arc<Source>,
    pub span: Span,
    /// A lambda whose body is integer arithmetic and comparisons of its parameters
    /// and integer constants (`{x -> x * 2}`, `{x -> x % 3 == 0}`,
    /// `{k, a, b -> a + b}`, `{a, b -> b(1) - a(1)}`): called with integers (and
    /// arrays, for indexing) it is evaluated without a frame (`exec::int_lambda`,
    /// `exec::run_int_prog_args`). Compiled on first call.
    pub pure_int: std::sync::OnceLock<Option<IntProg>>,
    /// The shape of a one-parameter lambda that runs without a frame (see
    /// [`Shape`]). Decided on first call.
    pub shape: std::sync::OnceLock<Shape>,
}

/// One-parameter lambda bodies a stage calls without a frame.
#[derive(Debug)]
pub enum Shape {
    /// Anything else: the general path.
    General,
    /// One method call on the parameter with constant arguments
    /// (`{line -> line.length()}`, `{l -> l.contains("x")}`): with a string, number
    /// or time the method is dispatched and called directly
    /// (`exec::CallContext::call_method_lambda`).
    Method,
    /// An array literal of the parameter and constants (`{w -> [w, 1]}`).
    Array,
    /// Arithmetic over fields of the parameter, the parameter and number constants
    /// (`{row -> row.price * row.qty}`): with a struct whose fields are numbers it is
    /// computed directly (`exec::run_num_prog`).
    Arith(NumProg),
}

/// The body of a [`Shape::Arith`] lambda.
#[derive(Debug)]
pub enum NumProg {
    /// The parameter.
    X,
    /// A number constant.
    C(Value),
    /// `x.name` / `name(x)`: a field of the parameter.
    Field(Sym),
    Op(Arith, Box<NumProg>, Box<NumProg>),
}

/// An integer operation of an [`IntProg`]: an arithmetic operator or comparison
/// (`+ - * %`, `< <= > >=`), or `==` (`!=` when true).
#[derive(Debug, Clone, Copy)]
pub enum IntOp {
    Arith(Arith),
    Eq(bool),
}

/// The body of a pure integer lambda as a small tree over `i64` (see
/// `FnCode::pure_int`); the commonest shape, the parameter with a constant
/// (`x * 2`, `x % 3`), is one node.
#[derive(Debug)]
pub enum IntProg {
    X,
    /// Parameter `i` (1 and up; 0 is `X`) of a lambda with several parameters.
    P(u32),
    /// `p(index)` with `p` parameter `param` holding an array (D19), while no
    /// namespace defines a method `name` (which dispatch would call instead).
    Idx {
        param: u32,
        index: i64,
        name: Sym,
    },
    C(i64),
    XC(IntOp, i64),
    Op(IntOp, Box<IntProg>, Box<IntProg>),
}

impl FnCode {
    /// Number of parameters of a plain lambda, `None` for a case lambda.
    pub fn arity(&self) -> Option<usize> {
        match &self.body {
            FnBody::Plain { params, .. } => Some(*params as usize),
            FnBody::Case { .. } => None,
        }
    }

    /// Whether a case lambda has a clause that could accept exactly `n` arguments.
    pub fn case_accepts(&self, n: usize) -> bool {
        match &self.body {
            FnBody::Plain { params, .. } => *params as usize == n,
            FnBody::Case { clauses, else_body } => {
                else_body.is_some()
                    || clauses.iter().any(|c| match &c.pattern {
                        PatList::Seq {
                            before,
                            rest,
                            after,
                        } => {
                            if rest.is_some() {
                                before.len() + after.len() <= n
                            } else {
                                before.len() + after.len() == n
                            }
                        }
                        PatList::Struct { .. } => n == 1,
                    })
            }
        }
    }
}
