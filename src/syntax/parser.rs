//! The parser: tokens to syntax tree (spec 3.1, 3.2). Hand-written recursive descent
//! with precedence climbing for binary operators. Every recursive path goes through a
//! nesting counter, so no input can overflow the stack.

use super::ast::*;
use super::diagnostic::Diagnostic;
use super::lexer::{lex, LexError};
use super::span::Span;
use super::token::{Token, TokenKind};

/// Maximum nesting of brackets, blocks, expressions and patterns.
const MAX_DEPTH: u32 = 500;

/// A syntax error.
#[derive(Clone, Debug)]
pub struct ParseError {
    /// The message.
    pub message: String,
    /// Where.
    pub span: Span,
    /// The input ended while a construct was still open: a REPL should read another
    /// line and try again.
    pub incomplete: bool,
    /// Further lines of explanation.
    pub notes: Vec<String>,
}

impl ParseError {
    #[doc(hidden)]
    pub fn to_diagnostic(&self) -> Diagnostic {
        let mut d = Diagnostic::error(self.message.clone(), Some(self.span));
        d.notes = self.notes.clone();
        d
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

impl From<LexError> for ParseError {
    fn from(e: LexError) -> ParseError {
        ParseError {
            message: e.message,
            span: e.span,
            incomplete: e.incomplete,
            notes: Vec::new(),
        }
    }
}

type PResult<T> = Result<T, ParseError>;

/// Stack size of the thread the parser runs on. Recursion is bounded by
/// [`MAX_DEPTH`]; this leaves ample room for the deepest allowed nesting even in an
/// unoptimised build (where one nesting level can take ~20 KiB of stack). The memory
/// is only reserved, not committed, until used.
const PARSER_STACK: usize = 64 * 1024 * 1024;

/// Depth limit when no parser thread could be started and the parser runs on the
/// caller's stack, whose size is unknown.
const FALLBACK_MAX_DEPTH: u32 = 40;

/// Parses a whole program (or one REPL input).
///
/// The parser runs on a thread of its own with a known stack size, so the nesting
/// limit guarantees that no input overflows the stack, whatever the stack of the
/// calling thread is.
pub fn parse(src: &[u8]) -> Result<Program, ParseError> {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("streem-parser".to_string())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse_with_limit(src, MAX_DEPTH));
        match spawned {
            Ok(handle) => match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(_) => parse_with_limit(src, FALLBACK_MAX_DEPTH),
        }
    })
}

fn parse_with_limit(src: &[u8], max_depth: u32) -> Result<Program, ParseError> {
    let (toks, lex_err) = lex(src);
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        last_end: 0,
        depth: 0,
        max_depth,
        lex_err,
        no_lambda: false,
    };
    p.program()
}

/// 1-based line and 1-based column (in characters) of a byte offset.
fn line_col(src: &[u8], offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let start = memchr::memrchr(b'\n', before).map(|i| i + 1).unwrap_or(0);
    let col = String::from_utf8_lossy(&src[start..offset]).chars().count() + 1;
    (line, col)
}

struct Parser<'a> {
    src: &'a [u8],
    toks: Vec<Token>,
    pos: usize,
    /// End offset of the last consumed token.
    last_end: usize,
    depth: u32,
    max_depth: u32,
    lex_err: Option<LexError>,
    /// Set while parsing a case guard: `(x) ->` there is not a lambda (the `->` ends
    /// the guard). Cleared inside any bracket.
    no_lambda: bool,
}

fn can_start_expr(k: &TokenKind) -> bool {
    use TokenKind::*;
    matches!(
        k,
        Ident(_)
            | Int(_)
            | Float(_)
            | Str(_)
            | Symbol(_)
            | Time(_)
            | Nil
            | True
            | False
            | LParen
            | LBracket
            | LBrace
            | New
            | Amp
            | If
            | Plus
            | Minus
            | Bang
            | Tilde
    )
}

fn can_start_arg(k: &TokenKind) -> bool {
    matches!(k, TokenKind::Star | TokenKind::Label(_)) || can_start_expr(k)
}

impl<'a> Parser<'a> {
    // ----- token helpers -------------------------------------------------------

    fn peek(&self) -> &TokenKind {
        &self.toks[self.pos].kind
    }

    fn peek_at(&self, n: usize) -> &TokenKind {
        let i = (self.pos + n).min(self.toks.len() - 1);
        &self.toks[i].kind
    }

    fn kind_at(&self, i: usize) -> &TokenKind {
        &self.toks[i.min(self.toks.len() - 1)].kind
    }

    fn span(&self) -> Span {
        self.toks[self.pos].span
    }

    fn advance(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        self.last_end = t.span.end as usize;
        t
    }

    fn at(&self, k: &TokenKind) -> bool {
        self.peek() == k
    }

    fn eat(&mut self, k: &TokenKind) -> bool {
        if self.at(k) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn since(&self, start: Span) -> Span {
        Span::new(
            start.start as usize,
            self.last_end.max(start.start as usize),
        )
    }

    fn loc(&self, span: Span) -> String {
        let (l, c) = line_col(self.src, span.start as usize);
        format!("{l}:{c}")
    }

    /// Whether the current token is the end of input (or a newline right before it).
    fn at_end_of_input(&self) -> bool {
        match self.peek() {
            TokenKind::Eof => true,
            TokenKind::Newline => *self.peek_at(1) == TokenKind::Eof,
            _ => false,
        }
    }

    /// An error at the current token. If the current token is the lexer's error
    /// token, the lexical error is reported instead.
    fn err_here(&self, message: String) -> ParseError {
        if *self.peek() == TokenKind::Error {
            if let Some(e) = &self.lex_err {
                return e.clone().into();
            }
        }
        ParseError {
            message,
            span: self.span(),
            incomplete: self.at_end_of_input(),
            notes: Vec::new(),
        }
    }

    fn err_at(&self, message: String, span: Span) -> ParseError {
        ParseError {
            message,
            span,
            incomplete: false,
            notes: Vec::new(),
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        self.err_here(format!("expected {what}, found {}", self.peek().describe()))
    }

    fn expect(&mut self, k: TokenKind, what: &str) -> PResult<Token> {
        if self.at(&k) {
            Ok(self.advance())
        } else {
            Err(self.expected(what))
        }
    }

    /// Expects the closing bracket `close` of the bracket `open` at `open_span`.
    fn expect_close(&mut self, close: TokenKind, open_span: Span) -> PResult<Token> {
        if self.at(&close) {
            return Ok(self.advance());
        }
        let open = match close {
            TokenKind::RParen => "(",
            TokenKind::RBracket => "[",
            _ => "{",
        };
        Err(self.err_here(format!(
            "expected `{}` to close `{}` opened at {}, found {}",
            close.text(),
            open,
            self.loc(open_span),
            self.peek().describe()
        )))
    }

    fn expect_ident(&mut self, what: &str) -> PResult<Ident> {
        if let TokenKind::Ident(name) = self.peek() {
            let name = name.clone();
            let span = self.advance().span;
            Ok(Ident { name, span })
        } else {
            Err(self.expected(what))
        }
    }

    /// `fname = IDENT | STRING`
    fn fname(&mut self, what: &str) -> PResult<Ident> {
        match self.peek() {
            TokenKind::Ident(name) => {
                let name = name.clone();
                let span = self.advance().span;
                Ok(Ident { name, span })
            }
            TokenKind::Str(s) => {
                let name = String::from_utf8_lossy(s).into_owned();
                let span = self.advance().span;
                Ok(Ident { name, span })
            }
            _ => Err(self.expected(what)),
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(self.err_at("nesting too deep".to_string(), self.span()));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn with_lambda_ok<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        let saved = self.no_lambda;
        self.no_lambda = false;
        let r = f(self);
        self.no_lambda = saved;
        r
    }

    // ----- statements ------------------------------------------------------------

    fn program(&mut self) -> PResult<Program> {
        let stmts = self.stmts(true, false)?;
        if !self.at(&TokenKind::Eof) {
            return Err(self.err_here(format!("unexpected {}", self.peek().describe())));
        }
        Ok(Program { stmts })
    }

    /// A statement sequence, ending before `}` or end of input (or, in a case
    /// clause body, before `case`/`else`). `top`: top level or namespace body.
    fn stmts(&mut self, top: bool, in_case: bool) -> PResult<Vec<Stmt>> {
        let mut out = Vec::new();
        loop {
            while matches!(self.peek(), TokenKind::Newline | TokenKind::Semi) {
                self.advance();
            }
            match self.peek() {
                TokenKind::Eof | TokenKind::RBrace => break,
                TokenKind::Case | TokenKind::Else if in_case => break,
                _ => {}
            }
            out.push(self.stmt(top)?);
            match self.peek() {
                TokenKind::Newline | TokenKind::Semi | TokenKind::Eof | TokenKind::RBrace => {}
                TokenKind::Case | TokenKind::Else if in_case => {}
                TokenKind::Assign => {
                    return Err(self.err_here(
                        "unexpected `=`: assignment is a statement, not an expression \
                         (only `name = expr` is allowed)"
                            .to_string(),
                    ))
                }
                TokenKind::LParen => return Err(self.call_result_error()),
                _ => return Err(self.expected("newline or `;` after statement")),
            }
        }
        Ok(out)
    }

    fn stmt(&mut self, top: bool) -> PResult<Stmt> {
        self.enter()?;
        let r = self.stmt_inner(top);
        self.leave();
        r
    }

    fn stmt_inner(&mut self, top: bool) -> PResult<Stmt> {
        let start = self.span();
        let kind = match self.peek().clone() {
            TokenKind::Def => {
                self.advance();
                let name = self.fname("function name after `def`")?;
                if self.at(&TokenKind::LParen) {
                    let params = self.params()?;
                    let body = self.def_body()?;
                    StmtKind::Def {
                        name,
                        params: Some(params),
                        body,
                    }
                } else if self.eat(&TokenKind::Assign) {
                    let e = self.expr()?;
                    StmtKind::Def {
                        name,
                        params: None,
                        body: Body::Expr(Box::new(e)),
                    }
                } else {
                    return Err(self.expected("`(` or `=` after the function name"));
                }
            }
            k @ (TokenKind::Method
            | TokenKind::Namespace
            | TokenKind::Class
            | TokenKind::Import)
                if !top =>
            {
                return Err(self.err_here(format!(
                    "`{}` is only allowed at top level or directly inside a namespace/class body",
                    k.text()
                )));
            }
            TokenKind::Method => {
                self.advance();
                let name = self.fname("method name after `method`")?;
                if !self.at(&TokenKind::LParen) {
                    return Err(self.expected("`(` after the method name"));
                }
                let params = self.params()?;
                let body = self.def_body()?;
                StmtKind::Method { name, params, body }
            }
            k @ (TokenKind::Namespace | TokenKind::Class) => {
                self.advance();
                let name = self.expect_ident(&format!("name after `{}`", k.text()))?;
                let open = self.expect(TokenKind::LBrace, "`{`")?;
                let body = self.stmts(true, false)?;
                self.expect_close(TokenKind::RBrace, open.span)?;
                StmtKind::Namespace {
                    name,
                    is_class: k == TokenKind::Class,
                    body,
                }
            }
            TokenKind::Import => {
                self.advance();
                StmtKind::Import(self.expect_ident("namespace name after `import`")?)
            }
            TokenKind::Skip => {
                self.advance();
                StmtKind::Skip
            }
            TokenKind::Emit => {
                self.advance();
                StmtKind::Emit(self.opt_args()?)
            }
            TokenKind::Return => {
                self.advance();
                StmtKind::Return(self.opt_args()?)
            }
            TokenKind::Ident(name) if *self.peek_at(1) == TokenKind::Assign => {
                let span = self.advance().span;
                self.advance();
                let value = self.expr()?;
                StmtKind::Assign {
                    name: Ident { name, span },
                    value,
                }
            }
            _ => {
                let value = self.expr()?;
                if self.eat(&TokenKind::FatArrow) {
                    let name = self.expect_ident("a name after `=>`")?;
                    StmtKind::RightAssign { value, name }
                } else {
                    StmtKind::Expr(value)
                }
            }
        };
        Ok(Stmt {
            kind,
            span: self.since(start),
        })
    }

    /// `"(" [ IDENT { "," IDENT } ] ")"`
    fn params(&mut self) -> PResult<Vec<Ident>> {
        let open = self.expect(TokenKind::LParen, "`(`")?;
        let mut out = Vec::new();
        if self.eat(&TokenKind::RParen) {
            return Ok(out);
        }
        loop {
            out.push(self.expect_ident("parameter name")?);
            if self.eat(&TokenKind::Comma) {
                continue;
            }
            self.expect_close(TokenKind::RParen, open.span)?;
            return Ok(out);
        }
    }

    /// `"{" stmts "}"` or `"=" expr` after the parameters of `def`/`method`.
    fn def_body(&mut self) -> PResult<Body> {
        if self.at(&TokenKind::LBrace) {
            let open = self.advance();
            let stmts = self.stmts(false, false)?;
            self.expect_close(TokenKind::RBrace, open.span)?;
            Ok(Body::Block(stmts))
        } else if self.eat(&TokenKind::Assign) {
            Ok(Body::Expr(Box::new(self.expr()?)))
        } else {
            Err(self.expected("`{` or `=` after the parameters"))
        }
    }

    /// Arguments of `emit`/`return`: present when the next token can start one.
    fn opt_args(&mut self) -> PResult<Vec<Arg>> {
        let mut out = Vec::new();
        if !can_start_arg(self.peek()) {
            return Ok(out);
        }
        loop {
            out.push(self.arg()?);
            if !self.eat(&TokenKind::Comma) {
                return Ok(out);
            }
        }
    }

    fn arg(&mut self) -> PResult<Arg> {
        match self.peek().clone() {
            TokenKind::Star => {
                self.advance();
                Ok(Arg::Splat(self.expr()?))
            }
            TokenKind::Label(name) => {
                let sp = self.advance().span;
                let span = Span {
                    start: sp.start,
                    end: sp.end.saturating_sub(1).max(sp.start),
                };
                let e = self.expr()?;
                Ok(Arg::Labeled(Ident { name, span }, e))
            }
            _ => Ok(Arg::Pos(self.expr()?)),
        }
    }

    /// An argument list after its opening bracket, up to and including `close`.
    fn arg_list(&mut self, close: TokenKind, open_span: Span) -> PResult<Vec<Arg>> {
        self.with_lambda_ok(|p| {
            let mut out = Vec::new();
            if p.eat(&close) {
                return Ok(out);
            }
            loop {
                out.push(p.arg()?);
                if p.eat(&TokenKind::Comma) {
                    continue;
                }
                p.expect_close(close.clone(), open_span)?;
                return Ok(out);
            }
        })
    }

    // ----- expressions ---------------------------------------------------------

    fn expr(&mut self) -> PResult<Expr> {
        self.enter()?;
        let r = self.binary(0);
        self.leave();
        r
    }

    /// Precedence climbing over the binary operators of spec 3.2 (levels 4-11).
    fn binary(&mut self, min_bp: u8) -> PResult<Expr> {
        let mut lhs = self.unary()?;
        let mut last_eq: Option<TokenKind> = None;
        // every operator applied makes the tree one level deeper: count it too, so
        // that later passes over the tree (and its drop) cannot overflow the stack
        let mut chain = 0;
        let r = self.binary_loop(min_bp, &mut lhs, &mut last_eq, &mut chain);
        self.depth -= chain;
        r.map(|()| lhs)
    }

    fn binary_loop(
        &mut self,
        min_bp: u8,
        lhs_slot: &mut Expr,
        last_eq: &mut Option<TokenKind>,
        chain: &mut u32,
    ) -> PResult<()> {
        loop {
            let tok = self.peek().clone();
            let (bp, op) = match tok {
                TokenKind::Pipe => (4, Some(BinOp::Pipe)),
                TokenKind::Amp => (5, None),
                TokenKind::OrOr => (6, Some(BinOp::Or)),
                TokenKind::AndAnd => (7, Some(BinOp::And)),
                TokenKind::EqEq => (8, Some(BinOp::Eq)),
                TokenKind::NotEq => (8, Some(BinOp::Ne)),
                TokenKind::Lt => (9, Some(BinOp::Lt)),
                TokenKind::Le => (9, Some(BinOp::Le)),
                TokenKind::Gt => (9, Some(BinOp::Gt)),
                TokenKind::Ge => (9, Some(BinOp::Ge)),
                TokenKind::Plus => (10, Some(BinOp::Add)),
                TokenKind::Minus => (10, Some(BinOp::Sub)),
                TokenKind::Star => (11, Some(BinOp::Mul)),
                TokenKind::Slash => (11, Some(BinOp::Div)),
                TokenKind::Percent => (11, Some(BinOp::Mod)),
                _ => return Ok(()),
            };
            if bp < min_bp {
                return Ok(());
            }
            if bp == 8 {
                if let Some(prev) = &*last_eq {
                    return Err(self.err_at(
                        format!(
                            "`{}` is not associative: write (a {} b) {} c",
                            tok.text(),
                            prev.text(),
                            tok.text()
                        ),
                        self.span(),
                    ));
                }
            }
            self.enter()?;
            *chain += 1;
            self.advance();
            let lhs = std::mem::replace(
                lhs_slot,
                Expr {
                    kind: ExprKind::Nil,
                    span: Span::default(),
                },
            );
            *lhs_slot = match op {
                None => {
                    // an unparenthesised `&` chain is one n-ary node (D52)
                    let mut items = vec![lhs];
                    loop {
                        items.push(self.binary(bp + 1)?);
                        if !self.eat(&TokenKind::Amp) {
                            break;
                        }
                    }
                    let span = items[0].span.to(items[items.len() - 1].span);
                    Expr {
                        kind: ExprKind::AmpChain(items),
                        span,
                    }
                }
                Some(op) => {
                    let rhs = self.binary(bp + 1)?;
                    let span = lhs.span.to(rhs.span);
                    Expr {
                        kind: ExprKind::Binary {
                            op,
                            lhs: Box::new(lhs),
                            rhs: Box::new(rhs),
                        },
                        span,
                    }
                }
            };
            *last_eq = if bp == 8 { Some(tok) } else { None };
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        let op = match self.peek() {
            TokenKind::Plus => None,
            TokenKind::Minus => Some(UnOp::Neg),
            TokenKind::Bang => Some(UnOp::Not),
            TokenKind::Tilde => Some(UnOp::BitNot),
            _ => return self.postfix(),
        };
        self.enter()?;
        let start = self.advance().span;
        let operand = self.unary();
        self.leave();
        let operand = operand?;
        let span = start.to(operand.span);
        Ok(match op {
            // unary `+` is the identity and is dropped
            None => Expr {
                kind: operand.kind,
                span,
            },
            Some(op) => Expr {
                kind: ExprKind::Unary {
                    op,
                    operand: Box::new(operand),
                },
                span,
            },
        })
    }

    fn call_result_error(&self) -> ParseError {
        let mut e = self.err_here(
            "unexpected `(`: only a name can be called with `name(...)`; \
             call the value of an expression with `.(...)`"
                .to_string(),
        );
        e.notes
            .push("for example `make_adder(1).(2)`, not `make_adder(1)(2)`".to_string());
        e
    }

    /// Postfix operators: `.name`, `.name(...)`, `.(...)`, trailing blocks.
    fn postfix(&mut self) -> PResult<Expr> {
        let (e, postfix_ok) = self.primary()?;
        if !postfix_ok {
            return Ok(e);
        }
        let mut chain = 0;
        let r = self.postfix_loop(e, &mut chain);
        self.depth -= chain;
        r
    }

    fn postfix_loop(&mut self, mut e: Expr, chain: &mut u32) -> PResult<Expr> {
        loop {
            match self.peek() {
                TokenKind::Dot => {
                    // each postfix operation nests the tree one level deeper
                    self.enter()?;
                    *chain += 1;
                    self.advance();
                    match self.peek() {
                        TokenKind::LParen => {
                            let open = self.advance().span;
                            let mut args = self.arg_list(TokenKind::RParen, open)?;
                            self.opt_block(&mut args)?;
                            let span = self.since(e.span);
                            e = Expr {
                                kind: ExprKind::CallValue {
                                    callee: Box::new(e),
                                    args,
                                },
                                span,
                            };
                        }
                        TokenKind::Ident(_) | TokenKind::Str(_) => {
                            let name = self.fname("method name")?;
                            let mut args = Vec::new();
                            if self.at(&TokenKind::LParen) {
                                let open = self.advance().span;
                                args = self.arg_list(TokenKind::RParen, open)?;
                            }
                            self.opt_block(&mut args)?;
                            let span = self.since(e.span);
                            e = Expr {
                                kind: ExprKind::MethodCall {
                                    recv: Box::new(e),
                                    name,
                                    args,
                                },
                                span,
                            };
                        }
                        _ => return Err(self.expected("method name or `(` after `.`")),
                    }
                }
                TokenKind::LParen => return Err(self.call_result_error()),
                _ => return Ok(e),
            }
        }
    }

    /// A trailing block `{ ... }` appended to `args`.
    fn opt_block(&mut self, args: &mut Vec<Arg>) -> PResult<()> {
        if self.at(&TokenKind::LBrace) {
            let b = self.block()?;
            args.push(Arg::Pos(b));
        }
        Ok(())
    }

    /// A call of a name: `name(args) [block]` or `name block`.
    fn call(&mut self, name: Ident) -> PResult<Expr> {
        let mut args = Vec::new();
        if self.at(&TokenKind::LParen) {
            let open = self.advance().span;
            args = self.arg_list(TokenKind::RParen, open)?;
        }
        self.opt_block(&mut args)?;
        let span = self.since(name.span);
        Ok(Expr {
            kind: ExprKind::Call { name, args },
            span,
        })
    }

    /// `( [params] ) ->` ahead?
    fn lambda_ahead(&self) -> bool {
        let mut j = self.pos + 1;
        if *self.kind_at(j) == TokenKind::RParen {
            return *self.kind_at(j + 1) == TokenKind::Arrow;
        }
        loop {
            if !matches!(self.kind_at(j), TokenKind::Ident(_)) {
                return false;
            }
            match self.kind_at(j + 1) {
                TokenKind::Comma => j += 2,
                TokenKind::RParen => return *self.kind_at(j + 2) == TokenKind::Arrow,
                _ => return false,
            }
        }
    }

    /// `{ IDENT { , IDENT } ->` ahead, starting at token index `j` (after the `{`)?
    fn block_params_ahead(&self, mut j: usize) -> bool {
        loop {
            if !matches!(self.kind_at(j), TokenKind::Ident(_)) {
                return false;
            }
            match self.kind_at(j + 1) {
                TokenKind::Comma => j += 2,
                TokenKind::Arrow => return true,
                _ => return false,
            }
        }
    }

    /// Returns the expression and whether postfix operators may follow it.
    fn primary(&mut self) -> PResult<(Expr, bool)> {
        let start = self.span();
        let lit = |kind| Ok((Expr { kind, span: start }, true));
        match self.peek().clone() {
            TokenKind::Int(n) => {
                self.advance();
                lit(ExprKind::Int(n))
            }
            TokenKind::Float(f) => {
                self.advance();
                lit(ExprKind::Float(f))
            }
            TokenKind::Symbol(s) => {
                self.advance();
                lit(ExprKind::Str(s.into_bytes()))
            }
            TokenKind::Time(t) => {
                self.advance();
                lit(ExprKind::Time(t))
            }
            TokenKind::Nil => {
                self.advance();
                lit(ExprKind::Nil)
            }
            TokenKind::True => {
                self.advance();
                lit(ExprKind::True)
            }
            TokenKind::False => {
                self.advance();
                lit(ExprKind::False)
            }
            TokenKind::Str(s) => {
                if matches!(self.peek_at(1), TokenKind::LParen | TokenKind::LBrace) {
                    let name = self.fname("function name")?;
                    Ok((self.call(name)?, true))
                } else {
                    self.advance();
                    lit(ExprKind::Str(s))
                }
            }
            TokenKind::Ident(name) => {
                self.advance();
                let id = Ident { name, span: start };
                if matches!(self.peek(), TokenKind::LParen | TokenKind::LBrace) {
                    Ok((self.call(id)?, true))
                } else {
                    lit(ExprKind::Var(id))
                }
            }
            TokenKind::LParen => {
                if !self.no_lambda && self.lambda_ahead() {
                    return Ok((self.arrow_lambda()?, false));
                }
                let open = self.advance().span;
                let inner = self.with_lambda_ok(|p| p.expr())?;
                self.expect_close(TokenKind::RParen, open)?;
                Ok((
                    Expr {
                        kind: ExprKind::Paren(Box::new(inner)),
                        span: self.since(open),
                    },
                    true,
                ))
            }
            TokenKind::LBracket => {
                let open = self.advance().span;
                let args = self.arg_list(TokenKind::RBracket, open)?;
                Ok((
                    Expr {
                        kind: ExprKind::Array(args),
                        span: self.since(open),
                    },
                    true,
                ))
            }
            TokenKind::LBrace => Ok((self.block()?, true)),
            TokenKind::New => {
                self.advance();
                let class = self.expect_ident("class name after `new`")?;
                let open = self.expect(TokenKind::LBracket, "`[` after the class name")?;
                let args = self.arg_list(TokenKind::RBracket, open.span)?;
                Ok((
                    Expr {
                        kind: ExprKind::New { class, args },
                        span: self.since(start),
                    },
                    true,
                ))
            }
            TokenKind::Amp => {
                self.advance();
                let name = self.fname("function name after `&`")?;
                Ok((
                    Expr {
                        kind: ExprKind::GenericFn(name),
                        span: self.since(start),
                    },
                    true,
                ))
            }
            TokenKind::If => Ok((self.if_expr()?, false)),
            _ => Err(self.expected("expression")),
        }
    }

    /// `( params ) -> expr` or `( params ) -> { stmts }` (D10).
    fn arrow_lambda(&mut self) -> PResult<Expr> {
        let start = self.span();
        let params = self.params()?;
        self.expect(TokenKind::Arrow, "`->`")?;
        let body = if self.at(&TokenKind::LBrace) {
            let open = self.advance().span;
            let stmts = self.with_lambda_ok(|p| p.stmts(false, false))?;
            self.expect_close(TokenKind::RBrace, open)?;
            Body::Block(stmts)
        } else {
            Body::Expr(Box::new(self.expr()?))
        };
        Ok(Expr {
            kind: ExprKind::Lambda(Box::new(Lambda {
                params,
                body,
                bare_block: false,
            })),
            span: self.since(start),
        })
    }

    /// A brace block: bare block, lambda with `->`, or case lambda.
    fn block(&mut self) -> PResult<Expr> {
        self.with_lambda_ok(|p| p.block_inner())
    }

    fn block_inner(&mut self) -> PResult<Expr> {
        let open = self.expect(TokenKind::LBrace, "`{`")?.span;
        if self.at(&TokenKind::Case) {
            return self.case_lambda(open);
        }
        let (params, bare) = if self.eat(&TokenKind::Arrow) {
            (Vec::new(), false)
        } else if self.block_params_ahead(self.pos) {
            let mut params = Vec::new();
            loop {
                params.push(self.expect_ident("parameter name")?);
                if !self.eat(&TokenKind::Comma) {
                    break;
                }
            }
            self.expect(TokenKind::Arrow, "`->`")?;
            (params, false)
        } else {
            (Vec::new(), true)
        };
        let stmts = self.stmts(false, false)?;
        self.expect_close(TokenKind::RBrace, open)?;
        Ok(Expr {
            kind: ExprKind::Lambda(Box::new(Lambda {
                params,
                body: Body::Block(stmts),
                bare_block: bare,
            })),
            span: self.since(open),
        })
    }

    fn case_lambda(&mut self, open: Span) -> PResult<Expr> {
        let mut clauses = Vec::new();
        while self.at(&TokenKind::Case) {
            let start = self.advance().span;
            let mut pattern = Vec::new();
            let mut guard = None;
            if !self.at(&TokenKind::Arrow) {
                if !self.at(&TokenKind::If) {
                    pattern = self.pattern_list()?;
                }
                if self.eat(&TokenKind::If) {
                    let saved = self.no_lambda;
                    self.no_lambda = true;
                    let g = self.expr();
                    self.no_lambda = saved;
                    guard = Some(g?);
                }
            }
            if !self.at(&TokenKind::Arrow) {
                return Err(self.expected(if guard.is_none() {
                    "`->` (or `if` guard) after the case pattern"
                } else {
                    "`->` after the case guard"
                }));
            }
            self.advance();
            let body = self.stmts(false, true)?;
            clauses.push(CaseClause {
                pattern,
                guard,
                body,
                span: self.since(start),
            });
        }
        let mut else_body = None;
        if self.eat(&TokenKind::Else) {
            self.expect(TokenKind::Arrow, "`->` after `else`")?;
            else_body = Some(self.stmts(false, true)?);
        }
        self.expect_close(TokenKind::RBrace, open)?;
        Ok(Expr {
            kind: ExprKind::CaseLambda(Box::new(CaseLambda { clauses, else_body })),
            span: self.since(open),
        })
    }

    fn if_expr(&mut self) -> PResult<Expr> {
        let start = self.advance().span;
        let open = self.expect(TokenKind::LParen, "`(` after `if`")?.span;
        let cond = self.with_lambda_ok(|p| p.expr())?;
        self.expect_close(TokenKind::RParen, open)?;
        // D4: newlines after the condition are absorbed
        while self.at(&TokenKind::Newline) {
            self.advance();
        }
        let then = self.branch()?;
        let mut els = None;
        // `else ->` belongs to an enclosing case lambda
        if self.at(&TokenKind::Else) && *self.peek_at(1) != TokenKind::Arrow {
            self.advance();
            els = Some(Box::new(self.branch()?));
        }
        Ok(Expr {
            kind: ExprKind::If {
                cond: Box::new(cond),
                then: Box::new(then),
                els,
            },
            span: self.since(start),
        })
    }

    /// A branch of `if` (D15): `skip`, `emit args`, `return args`, an inlined brace
    /// block, or an expression.
    fn branch(&mut self) -> PResult<Branch> {
        let start = self.span();
        match self.peek() {
            TokenKind::Skip => {
                self.advance();
                Ok(Branch::Skip(start))
            }
            TokenKind::Emit => {
                self.advance();
                let args = self.opt_args()?;
                Ok(Branch::Emit(args, self.since(start)))
            }
            TokenKind::Return => {
                self.advance();
                let args = self.opt_args()?;
                Ok(Branch::Return(args, self.since(start)))
            }
            TokenKind::LBrace
                if !matches!(self.peek_at(1), TokenKind::Case | TokenKind::Arrow)
                    && !self.block_params_ahead(self.pos + 1) =>
            {
                self.enter()?;
                self.advance();
                let stmts = self.with_lambda_ok(|p| p.stmts(false, false));
                self.leave();
                let stmts = stmts?;
                self.expect_close(TokenKind::RBrace, start)?;
                Ok(Branch::Block(stmts, self.since(start)))
            }
            _ => Ok(Branch::Expr(self.expr()?)),
        }
    }

    // ----- patterns ------------------------------------------------------------

    /// A comma-separated pattern list (top level of a case clause or inside `[...]`).
    fn pattern_list(&mut self) -> PResult<Vec<PatElem>> {
        let mut out = Vec::new();
        let mut rest_seen: Option<Span> = None;
        let mut has_field = false;
        let mut has_pos = false;
        loop {
            let start = self.span();
            let elem = match self.peek().clone() {
                TokenKind::Star => {
                    self.advance();
                    if rest_seen.is_some() {
                        return Err(self.err_at(
                            "only one rest pattern (`*`) is allowed in a pattern list".to_string(),
                            start,
                        ));
                    }
                    rest_seen = Some(start);
                    PatElem::Rest(self.pterm()?)
                }
                TokenKind::Label(name) => {
                    let sp = self.advance().span;
                    if has_pos {
                        return Err(self.err_at(
                            "labeled and unlabeled patterns cannot be mixed".to_string(),
                            sp,
                        ));
                    }
                    if let Some(r) = rest_seen {
                        return Err(self.err_at(
                            "the rest pattern must come last in a struct pattern".to_string(),
                            r,
                        ));
                    }
                    has_field = true;
                    let span = Span {
                        start: sp.start,
                        end: sp.end.saturating_sub(1).max(sp.start),
                    };
                    PatElem::Field(Ident { name, span }, self.pterm()?)
                }
                _ => {
                    if has_field {
                        return Err(self.err_here(
                            "labeled and unlabeled patterns cannot be mixed".to_string(),
                        ));
                    }
                    has_pos = true;
                    PatElem::Pos(self.pterm()?)
                }
            };
            out.push(elem);
            if !self.eat(&TokenKind::Comma) {
                return Ok(out);
            }
        }
    }

    fn pterm(&mut self) -> PResult<Pat> {
        self.enter()?;
        let r = self.pterm_inner();
        self.leave();
        r
    }

    fn pterm_inner(&mut self) -> PResult<Pat> {
        let start = self.span();
        let kind = match self.peek().clone() {
            TokenKind::Ident(name) => {
                self.advance();
                if name == "_" {
                    PatKind::Wildcard
                } else {
                    PatKind::Bind(name)
                }
            }
            TokenKind::Int(n) => {
                self.advance();
                PatKind::Int(n)
            }
            TokenKind::Float(f) => {
                self.advance();
                PatKind::Float(f)
            }
            TokenKind::Str(s) => {
                self.advance();
                PatKind::Str(s)
            }
            TokenKind::Symbol(s) => {
                self.advance();
                PatKind::Str(s.into_bytes())
            }
            TokenKind::Nil => {
                self.advance();
                PatKind::Nil
            }
            TokenKind::True => {
                self.advance();
                PatKind::True
            }
            TokenKind::False => {
                self.advance();
                PatKind::False
            }
            TokenKind::Minus => {
                self.advance();
                match self.peek().clone() {
                    TokenKind::Int(n) => {
                        self.advance();
                        PatKind::Int(-n)
                    }
                    TokenKind::Float(f) => {
                        self.advance();
                        PatKind::Float(-f)
                    }
                    _ => return Err(self.expected("a number after `-` in a pattern")),
                }
            }
            TokenKind::LBracket => {
                let open = self.advance().span;
                let mut class = None;
                if self.eat(&TokenKind::At) {
                    class = Some(self.expect_ident("class name after `@`")?);
                }
                let elems = if self.at(&TokenKind::RBracket) {
                    Vec::new()
                } else {
                    self.pattern_list()?
                };
                self.expect_close(TokenKind::RBracket, open)?;
                PatKind::Array { class, elems }
            }
            _ => return Err(self.expected("pattern")),
        };
        let mut pat = Pat {
            kind,
            span: self.since(start),
        };
        while self.eat(&TokenKind::At) {
            let name = self.expect_ident("namespace name after `@`")?;
            pat = Pat {
                kind: PatKind::TypeTest(Box::new(pat), name),
                span: self.since(start),
            };
        }
        Ok(pat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[Arg]) -> String {
        a.iter()
            .map(|a| match a {
                Arg::Pos(e) => ex(e),
                Arg::Labeled(l, e) => format!("{}:{}", l.name, ex(e)),
                Arg::Splat(e) => format!("*{}", ex(e)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn stmts(s: &[Stmt]) -> String {
        s.iter().map(st).collect::<Vec<_>>().join("; ")
    }

    fn body(b: &Body) -> String {
        match b {
            Body::Expr(e) => ex(e),
            Body::Block(s) => format!("{{{}}}", stmts(s)),
        }
    }

    fn names(p: &[Ident]) -> String {
        p.iter()
            .map(|i| i.name.clone())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn branch(b: &Branch) -> String {
        match b {
            Branch::Expr(e) => ex(e),
            Branch::Block(s, _) => format!("{{{}}}", stmts(s)),
            Branch::Skip(_) => "skip".into(),
            Branch::Emit(a, _) => format!("(emit {})", args(a)),
            Branch::Return(a, _) => format!("(return {})", args(a)),
        }
    }

    fn pat(p: &Pat) -> String {
        match &p.kind {
            PatKind::Bind(n) => n.clone(),
            PatKind::Wildcard => "_".into(),
            PatKind::Int(n) => n.to_string(),
            PatKind::Float(f) => format!("{f:?}"),
            PatKind::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
            PatKind::Nil => "nil".into(),
            PatKind::True => "true".into(),
            PatKind::False => "false".into(),
            PatKind::Array { class, elems } => match class {
                Some(c) => format!("[@{} {}]", c.name, pats(elems)),
                None => format!("[{}]", pats(elems)),
            },
            PatKind::TypeTest(p, n) => format!("{}@{}", pat(p), n.name),
        }
    }

    fn pats(ps: &[PatElem]) -> String {
        ps.iter()
            .map(|e| match e {
                PatElem::Pos(p) => pat(p),
                PatElem::Rest(p) => format!("*{}", pat(p)),
                PatElem::Field(l, p) => format!("{}:{}", l.name, pat(p)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn ex(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Nil => "nil".into(),
            ExprKind::True => "true".into(),
            ExprKind::False => "false".into(),
            ExprKind::Int(n) => n.to_string(),
            ExprKind::Float(f) => format!("{f:?}"),
            ExprKind::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
            ExprKind::Time(t) => format!("time({}.{}.{})", t.year, t.month, t.day),
            ExprKind::Var(i) => i.name.clone(),
            ExprKind::Array(a) => format!("[{}]", args(a)),
            ExprKind::New { class, args: a } => format!("(new {} {})", class.name, args(a)),
            ExprKind::Lambda(l) => format!(
                "({} ({}) {})",
                if l.bare_block { "block" } else { "fn" },
                names(&l.params),
                body(&l.body)
            ),
            ExprKind::CaseLambda(c) => {
                let mut s = String::from("(cases");
                for cl in &c.clauses {
                    s += &format!(" (case ({})", pats(&cl.pattern));
                    if let Some(g) = &cl.guard {
                        s += &format!(" if {}", ex(g));
                    }
                    s += &format!(" {{{}}})", stmts(&cl.body));
                }
                if let Some(e) = &c.else_body {
                    s += &format!(" (else {{{}}})", stmts(e));
                }
                s + ")"
            }
            ExprKind::Call { name, args: a } => format!("(call {} {})", name.name, args(a)),
            ExprKind::MethodCall {
                recv,
                name,
                args: a,
            } => {
                format!("(. {} {} {})", ex(recv), name.name, args(a))
            }
            ExprKind::CallValue { callee, args: a } => format!("(.() {} {})", ex(callee), args(a)),
            ExprKind::GenericFn(i) => format!("&{}", i.name),
            ExprKind::Binary { op, lhs, rhs } => {
                format!("({} {} {})", op.fname(), ex(lhs), ex(rhs))
            }
            ExprKind::AmpChain(v) => {
                format!("(& {})", v.iter().map(ex).collect::<Vec<_>>().join(" "))
            }
            ExprKind::Unary { op, operand } => {
                let o = match op {
                    UnOp::Neg => "neg",
                    UnOp::Not => "not",
                    UnOp::BitNot => "bitnot",
                };
                format!("({o} {})", ex(operand))
            }
            ExprKind::Paren(e) => format!("(paren {})", ex(e)),
            ExprKind::If { cond, then, els } => match els {
                Some(e) => format!("(if {} {} {})", ex(cond), branch(then), branch(e)),
                None => format!("(if {} {})", ex(cond), branch(then)),
            },
        }
    }

    fn st(s: &Stmt) -> String {
        match &s.kind {
            StmtKind::Expr(e) => ex(e),
            StmtKind::Assign { name, value } => format!("(= {} {})", name.name, ex(value)),
            StmtKind::RightAssign { value, name } => format!("(=> {} {})", ex(value), name.name),
            StmtKind::Def {
                name,
                params,
                body: b,
            } => match params {
                Some(p) => format!("(def {} ({}) {})", name.name, names(p), body(b)),
                None => format!("(def {} {})", name.name, body(b)),
            },
            StmtKind::Method {
                name,
                params,
                body: b,
            } => {
                format!("(method {} ({}) {})", name.name, names(params), body(b))
            }
            StmtKind::Namespace {
                name,
                is_class,
                body,
            } => format!(
                "({} {} {{{}}})",
                if *is_class { "class" } else { "namespace" },
                name.name,
                stmts(body)
            ),
            StmtKind::Import(n) => format!("(import {})", n.name),
            StmtKind::Skip => "skip".into(),
            StmtKind::Emit(a) => format!("(emit {})", args(a)),
            StmtKind::Return(a) => format!("(return {})", args(a)),
        }
    }

    /// Parses and renders the program as S-expressions, one statement per `; `.
    fn p(src: &str) -> String {
        match parse(src.as_bytes()) {
            Ok(prog) => stmts(&prog.stmts),
            Err(e) => panic!("parse error for {src:?}: {} at {:?}", e.message, e.span),
        }
    }

    fn err(src: &str) -> ParseError {
        match parse(src.as_bytes()) {
            Ok(prog) => panic!("expected an error for {src:?}, got {}", stmts(&prog.stmts)),
            Err(e) => e,
        }
    }

    fn assert_incomplete(src: &str) {
        let e = err(src);
        assert!(e.incomplete, "{src:?} should be incomplete: {}", e.message);
    }

    fn assert_error(src: &str) {
        let e = err(src);
        assert!(
            !e.incomplete,
            "{src:?} should be a real error: {}",
            e.message
        );
    }

    #[test]
    fn precedence_table() {
        assert_eq!(p("1 + 2 * 3"), "(+ 1 (* 2 3))");
        assert_eq!(p("1 - 2 - 3"), "(- (- 1 2) 3)");
        assert_eq!(p("a | b && c"), "(| a (&& b c))");
        assert_eq!(p("a == b | c"), "(| (== a b) c)");
        assert_eq!(p("a & b | stdout"), "(| (& a b) stdout)");
        assert_eq!(p("a || b && c"), "(|| a (&& b c))");
        assert_eq!(p("a && b || c"), "(|| (&& a b) c)");
        assert_eq!(p("a & b || c"), "(& a (|| b c))");
        assert_eq!(p("1 < 2 == true"), "(== (< 1 2) true)");
        assert_eq!(p("a < b < c"), "(< (< a b) c)");
        assert_eq!(p("-a.b"), "(neg (. a b ))");
        assert_eq!(p("-2 * 3"), "(* (neg 2) 3)");
        assert_eq!(p("!a == b"), "(== (not a) b)");
        assert_eq!(p("~a"), "(bitnot a)");
        assert_eq!(p("- - a"), "(neg (neg a))");
        assert_eq!(p("+\"a\""), "\"a\"");
        assert_eq!(p("+x * 2"), "(* x 2)");
        assert_eq!(p("a | b | c"), "(| (| a b) c)");
        assert_eq!(p("a % b / c * d"), "(* (/ (% a b) c) d)");
        assert_eq!(p("a != b"), "(!= a b)");
    }

    #[test]
    fn nonassociative_equality() {
        let e = err("print(1 == 1 == 1)");
        assert!(e.message.contains("not associative"), "{}", e.message);
        assert_eq!(e.span, Span::new(13, 15));
        assert!(!e.incomplete);
        assert!(err("a != b == c").message.contains("not associative"));
        assert!(err("a == b < c == d").message.contains("not associative"));
        assert_eq!(p("(a == b) == c"), "(== (paren (== a b)) c)");
        assert_eq!(p("a == b | c == d"), "(| (== a b) (== c d))");
    }

    #[test]
    fn amp_chains_d52() {
        assert_eq!(p("a & b"), "(& a b)");
        assert_eq!(p("a & b & c"), "(& a b c)");
        assert_eq!(p("(a & b) & c"), "(& (paren (& a b)) c)");
        assert_eq!(p("a & b + 1 & c"), "(& a (+ b 1) c)");
        assert_eq!(p("&length"), "&length");
        assert_eq!(p("map(&length)"), "(call map &length)");
        assert_eq!(p("a & &f"), "(& a &f)");
    }

    #[test]
    fn if_and_lambda_extend_right() {
        assert_eq!(p("if (c) a | b"), "(if c (| a b))");
        assert_eq!(
            p("x = if (c) a else b | stdout"),
            "(= x (if c a (| b stdout)))"
        );
        assert_eq!(p("(x) -> x + 1 | f"), "(fn (x) (| (+ x 1) f))");
        assert_eq!(p("() -> 1"), "(fn () 1)");
        assert_eq!(p("(x, y) -> x * y"), "(fn (x y) (* x y))");
        assert_eq!(p("1 + if (c) 2 else 3 + 4"), "(+ 1 (if c 2 (+ 3 4)))");
        assert_eq!(p("if (a) if (b) x else y"), "(if a (if b x y))");
        assert_eq!(p("if (a) x else if (b) y else z"), "(if a x (if b y z))");
        assert_eq!(p("f((x) -> x, 2)"), "(call f (fn (x) x) 2)");
        // D10 and the `)->{` form
        assert_eq!(p("(x) -> { y = x; y }"), "(fn (x) {(= y x); y})");
        assert_eq!(p("(x) ->\n\n  { y }"), "(fn (x) {y})");
        assert_eq!(p("(x) -> {x} | stdout"), "(| (fn (x) {x}) stdout)");
        // `(x)` on its own is a parenthesised expression
        assert_eq!(p("(x)"), "(paren x)");
        assert_error("(x)\n-> x");
    }

    #[test]
    fn if_branches_d15() {
        assert_eq!(p("if (c) skip"), "(if c skip)");
        assert_eq!(p("if (c) return x else y"), "(if c (return x) y)");
        assert_eq!(p("if (c) return"), "(if c (return ))");
        assert_eq!(p("if (c) emit 1, 2"), "(if c (emit 1 2))");
        assert_eq!(
            p("if (c) { x = 1 } else { x = 2 }"),
            "(if c {(= x 1)} {(= x 2)})"
        );
        assert_eq!(p("if (c) {}"), "(if c {})");
        assert_eq!(
            p("if (c) ({ 1 }) else ({ 2 })"),
            "(if c (paren (block () {1})) (paren (block () {2})))"
        );
        assert_eq!(p("if (c) { -> 1 }"), "(if c (fn () {1}))");
        assert_eq!(p("if (c) { x -> 1 }"), "(if c (fn (x) {1}))");
        // newlines after the condition (D4) and before else
        assert_eq!(p("r = if (c)\n\n  1\n  else 2"), "(= r (if c 1 2))");
        assert_eq!(p("if (c) {\n a\n}\nelse {\n b\n}"), "(if c {a} {b})");
        assert_eq!(p("print(if (false) 1)"), "(call print (if false 1))");
        assert_error("if (c) x = 1");
        assert_error("if c x");
    }

    #[test]
    fn statements() {
        assert_eq!(p("x = 1"), "(= x 1)");
        assert_eq!(p("x = 1; y = 2\n\nz"), "(= x 1); (= y 2); z");
        assert_eq!(p("def add(a, b) { a + b }"), "(def add (a b) {(+ a b)})");
        assert_eq!(p("def sub(a, b) = a - b"), "(def sub (a b) (- a b))");
        assert_eq!(p("def answer = 42"), "(def answer 42)");
        assert_eq!(p("def f() {}"), "(def f () {})");
        assert_eq!(p("def \"foo bar\"(x) = x"), "(def foo bar (x) x)");
        assert_eq!(
            p("method area() { self.w }"),
            "(method area () {(. self w )})"
        );
        assert_eq!(p("method \"+\"(o) = o"), "(method + (o) o)");
        assert_eq!(
            p("namespace string { method shout() = self + \"!\" }"),
            "(namespace string {(method shout () (+ self \"!\"))})"
        );
        assert_eq!(p("class P {}"), "(class P {})");
        assert_eq!(
            p("class P { class Q { import R } }"),
            "(class P {(class Q {(import R)})})"
        );
        assert_eq!(p("import foo"), "(import foo)");
        assert_eq!(
            p("stdin | csv() => rows"),
            "(=> (| stdin (call csv )) rows)"
        );
        assert_eq!(p("skip"), "skip");
        assert_eq!(p("emit"), "emit".replace("emit", "(emit )"));
        assert_eq!(p("emit 1, *xs"), "(emit 1 *xs)");
        assert_eq!(p("return a: 1, b: 2"), "(return a:1 b:2)");
        assert_eq!(p("{ return }"), "(block () {(return )})");
        assert_eq!(
            p("def f(x) { def g(y) = y; g(x) }"),
            "(def f (x) {(def g (y) y); (call g x)})"
        );
        // assignment is a statement
        assert_error("x = y = 1");
        assert_error("print(x = 1)");
        assert_error("1 = 2");
        // skip does not absorb newlines (D4)
        assert_eq!(p("{ skip\n x }"), "(block () {skip; x})");
        // statements need separators
        assert_error("a b");
        assert_error("012");
    }

    #[test]
    fn placement_of_method_namespace_import() {
        for src in [
            "def f() { method g() = 1 }",
            "{ namespace N {} }",
            "def f() { import x }",
            "f { class C {} }",
            "if (c) { method m() = 1 }",
        ] {
            let e = err(src);
            assert!(
                e.message.contains("only allowed at top level"),
                "{src}: {}",
                e.message
            );
            assert!(!e.incomplete);
        }
        assert_eq!(
            p("namespace N { method m() = 1; def f = 2 }"),
            "(namespace N {(method m () 1); (def f 2)})"
        );
    }

    #[test]
    fn calls_and_blocks() {
        assert_eq!(p("f(1, 2)"), "(call f 1 2)");
        assert_eq!(p("f()"), "(call f )");
        assert_eq!(p("f (1)"), "(call f 1)");
        assert_eq!(p("f(1) { x -> x }"), "(call f 1 (fn (x) {x}))");
        assert_eq!(p("map{x -> x * 2}"), "(call map (fn (x) {(* x 2)}))");
        assert_eq!(p("\"abc\"(1)"), "(call abc 1)");
        assert_eq!(p("\"abc\""), "\"abc\"");
        assert_eq!(p("a.\"+\"(b)"), "(. a + b)");
        assert_eq!(p("recv.f(a)"), "(. recv f a)");
        assert_eq!(p("recv.f"), "(. recv f )");
        assert_eq!(p("recv.f { 1 }"), "(. recv f (block () {1}))");
        assert_eq!(p("recv.f(1) { 1 }"), "(. recv f 1 (block () {1}))");
        assert_eq!(p("make_adder(1).(2)"), "(.() (call make_adder 1) 2)");
        assert_eq!(p("f.() { 1 }"), "(.() f (block () {1}))");
        assert_eq!(p("5.floor()"), "(. 5 floor )");
        assert_eq!(
            p("[1, 2].map{x -> x}.sum"),
            "(. (. [1 2] map (fn (x) {x})) sum )"
        );
        assert_eq!(p("x\n  .f\n  .g"), "(. (. x f ) g )");
        assert_eq!(p("{}.()"), "(.() (block () {}) )");
        assert_eq!(p("{x ->}.(1)"), "(.() (fn (x) {}) 1)");
        assert_eq!(p("f(*xs, 3)"), "(call f *xs 3)");
        assert_eq!(p("print(a: 1)"), "(call print a:1)");
        assert_eq!(p("2016.2.29.ymd()"), "(. time(2016.2.29) ymd )");
        let e = err("print(f(1)(2))");
        assert!(e.message.contains(".(...)"), "{}", e.message);
        assert_eq!(e.span, Span::new(10, 11));
        assert!(!e.incomplete);
        assert_error("f(1)(2)");
        assert_error("(a)(b)");
        assert_error("x.if");
        assert_error("f(1,)");
        assert_error("[1,]");
    }

    #[test]
    fn arrays_and_new() {
        assert_eq!(p("[]"), "[]");
        assert_eq!(p("[1, 2, 3]"), "[1 2 3]");
        assert_eq!(p("[x: 1, \"y z\": 2, 3]"), "[x:1 y z:2 3]");
        assert_eq!(p("[0, *xs, 9]"), "[0 *xs 9]");
        assert_eq!(p("new Point[x: 1, y: 2]"), "(new Point x:1 y:2)");
        assert_eq!(p("new P[]"), "(new P )");
        assert_eq!(p("[\n1,\n2\n]"), "[1 2]");
        assert_eq!(p("print(\n \"a\",\n \"b\"\n)"), "(call print \"a\" \"b\")");
        assert_eq!(p("[a:b]"), "[a:b]");
    }

    #[test]
    fn labels_vs_symbols() {
        // `a :b` is ident + symbol: inside an array that is two adjacent expressions
        assert_error("[a :b]");
        assert_eq!(p(":foo"), "\"foo\"");
        assert_eq!(p("f(:a, b: :c)"), "(call f \"a\" b:\"c\")");
    }

    #[test]
    fn blocks_and_lambdas() {
        assert_eq!(p("{ 1 }"), "(block () {1})");
        assert_eq!(p("{}"), "(block () {})");
        assert_eq!(p("{ -> 5 }"), "(fn () {5})");
        assert_eq!(p("{ x, y -> x }"), "(fn (x y) {x})");
        assert_eq!(p("{\n x ->\n x\n}"), "(fn (x) {x})");
        assert_eq!(p("{ a; b\n c }"), "(block () {a; b; c})");
        assert_error("{ x, y }");
    }

    #[test]
    fn case_lambdas_and_patterns() {
        assert_eq!(
            p("{ case 0 -> 0\n case n if n > 1 -> n\n}"),
            "(cases (case (0) {0}) (case (n) if (> n 1) {n}))"
        );
        assert_eq!(p("{ case -> 1 }"), "(cases (case () {1}))");
        assert_eq!(p("{ case if c -> 1 }"), "(cases (case () if c {1}))");
        assert_eq!(
            p("{ case -1 -> 1; case -2.5 -> 2 }"),
            "(cases (case (-1) {1}) (case (-2.5) {2}))"
        );
        assert_eq!(
            p("{ case :sym, \"s\", nil, true, false, _ -> 1 }"),
            "(cases (case (\"sym\" \"s\" nil true false _) {1}))"
        );
        assert_eq!(p("{ case [] -> 1 }"), "(cases (case ([]) {1}))");
        assert_eq!(p("{ case [h, *t] -> 1 }"), "(cases (case ([h *t]) {1}))");
        assert_eq!(p("{ case [*i, z] -> 1 }"), "(cases (case ([*i z]) {1}))");
        assert_eq!(
            p("{ case [a, *m, z] -> 1 }"),
            "(cases (case ([a *m z]) {1}))"
        );
        assert_eq!(p("{ case *args -> 1 }"), "(cases (case (*args) {1}))");
        assert_eq!(p("{ case a, b, *_ -> 1 }"), "(cases (case (a b *_) {1}))");
        assert_eq!(p("{ case *r, z -> 1 }"), "(cases (case (*r z) {1}))");
        assert_eq!(
            p("{ case [a, *[b, c]] -> 1 }"),
            "(cases (case ([a *[b c]]) {1}))"
        );
        assert_eq!(
            p("{ case x: a, y: b -> 1 }"),
            "(cases (case (x:a y:b) {1}))"
        );
        assert_eq!(
            p("{ case [name: n, *others] -> 1 }"),
            "(cases (case ([name:n *others]) {1}))"
        );
        assert_eq!(p("{ case x: a, *r -> 1 }"), "(cases (case (x:a *r) {1}))");
        assert_eq!(p("{ case s@string -> 1 }"), "(cases (case (s@string) {1}))");
        assert_eq!(
            p("{ case [@Point] -> 1 }"),
            "(cases (case ([@Point ]) {1}))"
        );
        assert_eq!(
            p("{ case [@Point x: x] -> 1 }"),
            "(cases (case ([@Point x:x]) {1}))"
        );
        assert_eq!(
            p("{ case [@P a, b]@array -> 1 }"),
            "(cases (case ([@P a b]@array) {1}))"
        );
        assert_eq!(
            p("{\n  case 1 -> a\n  else -> b\n}"),
            "(cases (case (1) {a}) (else {b}))"
        );
        assert_eq!(
            p("{ case x -> if (x) a\n else -> b }"),
            "(cases (case (x) {(if x a)}) (else {b}))"
        );
        assert_eq!(
            p("{ case x -> if (x) a else b }"),
            "(cases (case (x) {(if x a b)}))"
        );
        assert_eq!(
            p("{ case [a, b] -> a + b; else -> 0 }"),
            "(cases (case ([a b]) {(+ a b)}) (else {0}))"
        );
        assert_eq!(
            p("{ case 1 -> a case 2 -> b }"),
            "(cases (case (1) {a}) (case (2) {b}))"
        );
        assert_eq!(
            p("{ case x if (x) -> 1 }"),
            "(cases (case (x) if (paren x) {1}))"
        );
        assert_eq!(
            p("{ case x if f((y) -> y) -> 1 }"),
            "(cases (case (x) if (call f (fn (y) y)) {1}))"
        );
        assert_eq!(
            p("{ case 1 ->\n  a\n  b\n case 2 -> }"),
            "(cases (case (1) {a; b}) (case (2) {}))"
        );
        // errors
        assert_error("{ case x }");
        assert_error("{ case *a, *b -> 1 }");
        assert_error("{ case x: a, b -> 1 }");
        assert_error("{ case a, x: b -> 1 }");
        assert_error("{ case *r, x: a -> 1 }");
        assert_error("{ case - x -> 1 }");
        assert_error("{ case 1 + 2 -> 1 }");
        assert_error("{ else -> 1 }");
        assert_error("{ case 1 -> 1 else 2 }");
        let e = err("{ case x y }");
        assert!(e.message.contains("`->`"), "{}", e.message);
    }

    #[test]
    fn newline_rules_in_parser() {
        assert_eq!(p("total = 1 +\n  2 *\n  3"), "(= total (+ 1 (* 2 3)))");
        assert_eq!(
            p("[1, 2, 3]\n  | map{x -> x * 2}   # c\n  | stdout"),
            "(| (| [1 2 3] (call map (fn (x) {(* x 2)}))) stdout)"
        );
        assert_eq!(p("x = 1\nelsewhere = 2"), "(= x 1); (= elsewhere 2)");
        assert_eq!(
            p("cases = 1; skipped = 2; iffy = 3"),
            "(= cases 1); (= skipped 2); (= iffy 3)"
        );
        assert_eq!(p("a = 1 # c\n# c2\nb = 2 # end"), "(= a 1); (= b 2)");
        assert_eq!(p("a = 1\r\nb = 2\r\n"), "(= a 1); (= b 2)");
        assert_eq!(p("if (x)\n  y"), "(if x y)");
        assert_eq!(p("a =>\n b"), "(=> a b)");
        assert_error("print(1\n, 2)");
    }

    #[test]
    fn incomplete_vs_error() {
        for src in [
            "print(1",
            "print(1\n",
            "x = 1 +",
            "x = 1 +\n",
            "if (c)",
            "if (c)\n",
            "if (c",
            "\"abc",
            "'abc",
            "x = [1, 2",
            "{ x ->",
            "{",
            "def f(x)",
            "def f(x) {",
            "namespace N {",
            "{ case 1 ->",
            "{ case",
            "a |",
            "a |\n  # comment\n",
            "f(1) {",
            "x = \"multi\nline",
            "(x) ->",
            "if (c) a else",
            "new P[",
            "a.",
        ] {
            assert_incomplete(src);
        }
        for src in [
            "x = 1 + * 2",
            "f(1)(2)",
            "print(1 == 1 == 1)",
            "y = x $ 2",
            "print(99999999999999999999)",
            "2015.13.1",
            "}",
            ")",
            "x = )",
            "def 1",
            "print(1 2)",
        ] {
            assert_error(src);
        }
        // complete inputs parse
        assert!(parse(b"if (c) a\n").is_ok());
        assert!(parse(b"print(1)\n").is_ok());
    }

    #[test]
    fn error_messages() {
        let e = err("x = 1\nfoo(1, (2\n");
        assert_eq!(
            e.message,
            "expected `)` to close `(` opened at 2:8, found newline"
        );
        let e = err("x = 1 + * 2");
        assert_eq!(e.message, "expected expression, found `*`");
        assert_eq!(e.span, Span::new(8, 9));
        let e = err("y = x $ 2");
        assert_eq!(e.message, "unexpected character '$'");
        let e = err("print(99999999999999999999)");
        assert_eq!(e.message, "integer literal too large");
        assert_eq!(e.span, Span::new(6, 26));
        let e = err("print(2015.13.1)");
        assert_eq!(e.message, "bad time format");
        // a syntax error before a lexical error is reported first
        let e = err("x = )\ny = $");
        assert!(e.message.contains("expected expression"), "{}", e.message);
        let e = err("{ case x }");
        assert!(e.message.contains("expected `->`"), "{}", e.message);
        // columns count characters
        let e = err("\"é\" + (1");
        assert!(e.message.contains("opened at 1:7"), "{}", e.message);
        let d = e.to_diagnostic();
        assert_eq!(d.span, Some(e.span));
    }

    #[test]
    fn literals() {
        assert_eq!(p("-3"), "(neg 3)");
        assert_eq!(p("-9223372036854775807"), "(neg 9223372036854775807)");
        assert_error("-9223372036854775808");
        assert_eq!(p("1.5e3"), "1500.0");
        assert_eq!(p("0x10 + 0o10"), "(+ 16 8)");
        assert_eq!(p("nil; true; false"), "nil; true; false");
        assert_eq!(p("2015.8.1"), "time(2015.8.1)");
        assert_eq!(p("'localhost'"), "\"localhost\"");
    }

    #[test]
    fn nesting_limits() {
        for (open, close) in [("(", ")"), ("[", "]"), ("{", "}")] {
            let src = format!("{}1{}", open.repeat(100), close.repeat(100));
            assert!(parse(src.as_bytes()).is_ok(), "{open} x100");
            let src = open.repeat(100_000);
            let e = err(&src);
            assert_eq!(e.message, "nesting too deep");
        }
        assert!(parse("-".repeat(100).as_bytes()).is_err());
        assert_eq!(err(&"-".repeat(100_000)).message, "nesting too deep");
        let src = "if (c) ".repeat(10_000);
        assert_eq!(err(&src).message, "nesting too deep");
        let src = format!("{{ case {} -> 1 }}", "[".repeat(10_000));
        assert_eq!(err(&src).message, "nesting too deep");
    }

    #[test]
    fn shared_examples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples");
        if !dir.is_dir() {
            return;
        }
        let broken = [
            "lexical_error",
            "syntax_call_result",
            "syntax_error",
            "syntax_nonassoc",
            "int_literal_too_large",
            "bad_time_literal",
            // cli/: the program checked by `-c` that must report a syntax error
            "check_ng",
        ];
        let mut files = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "strm") {
                    files.push(path);
                }
            }
        }
        assert!(!files.is_empty());
        let mut failures = Vec::new();
        for path in &files {
            let src = std::fs::read(path).unwrap();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let in_errors = path
                .parent()
                .is_some_and(|p| p.ends_with("errors") || p.ends_with("cli"));
            let result = parse(&src);
            if in_errors && broken.contains(&stem.as_str()) {
                match result {
                    Ok(_) => failures.push(format!("{}: parsed but must fail", path.display())),
                    Err(e) => {
                        let err_file = std::fs::read_to_string(path.with_extension("err")).unwrap();
                        let first = err_file.lines().next().unwrap_or("");
                        let want_line: Option<usize> = first
                            .trim_end_matches(':')
                            .rsplit(':')
                            .next()
                            .and_then(|s| s.parse().ok());
                        let (line, _) = line_col(&src, e.span.start as usize);
                        if want_line.is_some_and(|w| w != line) {
                            failures.push(format!(
                                "{}: error on line {line}, expected {want_line:?}: {}",
                                path.display(),
                                e.message
                            ));
                        }
                        if let Some(msg) = err_file.lines().nth(1) {
                            if !e.message.contains(msg) {
                                failures.push(format!(
                                    "{}: message {:?} lacks {msg:?}",
                                    path.display(),
                                    e.message
                                ));
                            }
                        }
                    }
                }
            } else if let Err(e) = result {
                let (l, c) = line_col(&src, e.span.start as usize);
                failures.push(format!("{}:{l}:{c}: {}", path.display(), e.message));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
