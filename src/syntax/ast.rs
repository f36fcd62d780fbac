//! The abstract syntax tree: what the parser produces and the compiler consumes.
//!
//! The tree knows nothing about values or evaluation. Every node carries a byte
//! [`Span`] into the source text so that every later error can point at it.
//! Semantic checks (single assignment, labels in calls, ...) happen in the compiler,
//! not here: the parser accepts everything the grammar of spec 3.1 accepts.

use super::span::Span;

/// A whole program (or one REPL input): the top-level statements.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub stmts: Vec<Stmt>,
}

/// An identifier or an `fname` (spec 3.1: `IDENT | STRING`). String names are
/// decoded (escapes processed) and stored lossily as UTF-8.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// An expression statement.
    Expr(Expr),
    /// `name = expr`
    Assign { name: Ident, value: Expr },
    /// `expr => name`
    RightAssign { value: Expr, name: Ident },
    /// `def f(params) { stmts }`, `def f(params) = expr`, `def f = expr`.
    /// `params` is `None` for the parameterless form `def f = expr`, which defines a
    /// zero-argument function.
    Def {
        name: Ident,
        params: Option<Vec<Ident>>,
        body: Body,
    },
    /// `method f(params) { stmts }` / `method f(params) = expr`: like `def` with an
    /// implicit first parameter `self`. Only at top level or in a namespace body.
    Method {
        name: Ident,
        params: Vec<Ident>,
        body: Body,
    },
    /// `namespace NAME { ... }` or `class NAME { ... }` (synonyms).
    Namespace {
        name: Ident,
        is_class: bool,
        body: Vec<Stmt>,
    },
    /// `import NAME`
    Import(Ident),
    /// `skip`
    Skip,
    /// `emit args` (possibly no args)
    Emit(Vec<Arg>),
    /// `return args` (possibly no args)
    Return(Vec<Arg>),
}

/// The body of a `def`/`method`/lambda.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// `= expr` or `(x) -> expr`
    Expr(Box<Expr>),
    /// `{ stmts }`
    Block(Vec<Stmt>),
}

/// An element of an argument list, array literal, `emit` or `return`.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Pos(Expr),
    /// `label: expr` (the label is an identifier or a string literal)
    Labeled(Ident, Expr),
    /// `*expr`
    Splat(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Pipe,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinOp {
    /// The name of the function the operator calls (spec 3.4).
    pub fn fname(self) -> &'static str {
        match self {
            BinOp::Pipe => "|",
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-a` (calls `-` with one argument)
    Neg,
    /// `!a`
    Not,
    /// `~a`
    BitNot,
}

/// Zone of a time literal (spec 2.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeZoneLit {
    /// No zone given: local time.
    Local,
    /// `Z` or an explicit offset, in seconds east of UTC.
    Offset(i32),
}

/// A validated time literal (spec 2.10, D8). The lexer rejects impossible dates,
/// hours above 23, minutes/seconds above 59 and bad zones ("bad time format").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLit {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    /// `None` for a date-only literal.
    pub time: Option<TimeOfDay>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanosecond: u32,
    pub zone: TimeZoneLit,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Nil,
    True,
    False,
    Int(i64),
    Float(f64),
    /// A string literal or a symbol (`:foo` is the string `"foo"`), escapes processed.
    Str(Vec<u8>),
    Time(TimeLit),
    /// A variable reference.
    Var(Ident),
    /// `[args]`; `[]` has no elements.
    Array(Vec<Arg>),
    /// `new NAME[args]`
    New {
        class: Ident,
        args: Vec<Arg>,
    },
    /// A non-case lambda, every form of spec 3.4.
    Lambda(Box<Lambda>),
    /// `{ case ... }`
    CaseLambda(Box<CaseLambda>),
    /// `name(args)`, `name(args) { block }`, `name { block }`. A trailing block is
    /// appended to `args` as the last positional argument.
    Call {
        name: Ident,
        args: Vec<Arg>,
    },
    /// `recv.name(args)`, `recv.name`, `recv.name { block }`. Same call as
    /// `name(recv, args...)`.
    MethodCall {
        recv: Box<Expr>,
        name: Ident,
        args: Vec<Arg>,
    },
    /// `callee.(args)` (with optional trailing block appended to args).
    CallValue {
        callee: Box<Expr>,
        args: Vec<Arg>,
    },
    /// `&name`
    GenericFn(Ident),
    /// Binary operators other than `&` chains. `&&`/`||` short-circuit.
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// An unparenthesised chain `a & b & c ...` (two or more operands), kept as one
    /// node (D52): an n-ary zip, or pairwise bitwise and when the first operand's
    /// namespace defines `&`. `(a & b) & c` is a chain of two whose first operand
    /// is a `Paren`.
    AmpChain(Vec<Expr>),
    Unary {
        op: UnOp,
        operand: Box<Expr>,
    },
    /// `( expr )`; kept so that `(a & b) & c` is distinguishable from `a & b & c`.
    Paren(Box<Expr>),
    /// `if (cond) then [else else]`
    If {
        cond: Box<Expr>,
        then: Box<Branch>,
        els: Option<Box<Branch>>,
    },
}

/// A branch of `if` (spec 3.4, D15).
#[derive(Clone, Debug, PartialEq)]
pub enum Branch {
    Expr(Expr),
    /// `{ stmts }` without `->`: inlined into the enclosing scope.
    Block(Vec<Stmt>, Span),
    Skip(Span),
    Emit(Vec<Arg>, Span),
    Return(Vec<Arg>, Span),
}

/// A non-case lambda: `{ stmts }`, `{ -> stmts }`, `{ x, y -> stmts }`,
/// `(x, y) -> expr`, `(x, y) -> { stmts }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lambda {
    pub params: Vec<Ident>,
    pub body: Body,
    /// True for the `{ stmts }` form without `->` (a parameterless block).
    pub bare_block: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CaseLambda {
    pub clauses: Vec<CaseClause>,
    /// `else -> stmts`
    pub else_body: Option<Vec<Stmt>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CaseClause {
    /// The top-level pattern, matched against the argument list (3.6). Empty for
    /// `case ->` and `case if guard ->`.
    pub pattern: Vec<PatElem>,
    pub guard: Option<Expr>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// One element of a pattern list (top level or inside brackets).
#[derive(Clone, Debug, PartialEq)]
pub enum PatElem {
    Pos(Pat),
    /// `*pterm`
    Rest(Pat),
    /// `label: pterm`
    Field(Ident, Pat),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pat {
    pub kind: PatKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PatKind {
    /// `name`: binds (or must equal an earlier binding of the same pattern).
    Bind(String),
    /// `_`
    Wildcard,
    /// integer literal, possibly negated (`-1`)
    Int(i64),
    /// float literal, possibly negated
    Float(f64),
    /// string literal or symbol
    Str(Vec<u8>),
    Nil,
    True,
    False,
    /// `[ ... ]`, `[@NAME]`, `[@NAME ...]`
    Array {
        class: Option<Ident>,
        elems: Vec<PatElem>,
    },
    /// `pterm @NAME`
    TypeTest(Box<Pat>, Ident),
}
