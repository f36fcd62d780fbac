//! Tokens produced by the lexer (spec 2).

use super::ast::TimeLit;
use super::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    /// An identifier (spec 2.4).
    Ident(String),
    /// `name:` or `"str":` (spec 2.9); the text without the colon, escapes processed.
    Label(String),
    /// Integer literal (spec 2.6).
    Int(i64),
    /// Float literal (spec 2.6, D6).
    Float(f64),
    /// String literal, escapes processed (spec 2.7).
    Str(Vec<u8>),
    /// `:name` (spec 2.8); the name without the colon.
    Symbol(String),
    /// Time literal (spec 2.10).
    Time(TimeLit),

    // keywords (spec 2.5)
    If,
    Else,
    Case,
    Skip,
    Emit,
    Return,
    Def,
    Method,
    Namespace,
    Class,
    Import,
    New,
    Nil,
    True,
    False,

    // operators (spec 2.11)
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AndAnd,
    OrOr,
    Bang,
    Tilde,
    Amp,
    Pipe,
    Assign,
    FatArrow,
    Arrow,
    /// `<-` (recognised, used by no grammar rule)
    LeftArrow,
    /// `::` (recognised, used by no grammar rule)
    ColonColon,

    // punctuation
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Semi,
    Dot,
    At,
    Colon,

    /// A significant newline (or comment line); consecutive ones are merged.
    Newline,
    /// End of input.
    Eof,
    /// A lexical error at this position: the lexer stopped here. The error itself is
    /// kept by the lexer's caller.
    Error,
}

impl TokenKind {
    /// A short human description for error messages.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Ident(s) => format!("identifier `{s}`"),
            TokenKind::Label(s) => format!("label `{s}:`"),
            TokenKind::Int(n) => format!("number `{n}`"),
            TokenKind::Float(f) => format!("number `{f}`"),
            TokenKind::Str(_) => "string literal".to_string(),
            TokenKind::Symbol(s) => format!("symbol `:{s}`"),
            TokenKind::Time(_) => "time literal".to_string(),
            TokenKind::Newline => "newline".to_string(),
            TokenKind::Eof => "end of input".to_string(),
            TokenKind::Error => "invalid token".to_string(),
            other => format!("`{}`", other.text()),
        }
    }

    /// The source text of a fixed token (keywords, operators, punctuation).
    pub fn text(&self) -> &'static str {
        match self {
            TokenKind::If => "if",
            TokenKind::Else => "else",
            TokenKind::Case => "case",
            TokenKind::Skip => "skip",
            TokenKind::Emit => "emit",
            TokenKind::Return => "return",
            TokenKind::Def => "def",
            TokenKind::Method => "method",
            TokenKind::Namespace => "namespace",
            TokenKind::Class => "class",
            TokenKind::Import => "import",
            TokenKind::New => "new",
            TokenKind::Nil => "nil",
            TokenKind::True => "true",
            TokenKind::False => "false",
            TokenKind::Plus => "+",
            TokenKind::Minus => "-",
            TokenKind::Star => "*",
            TokenKind::Slash => "/",
            TokenKind::Percent => "%",
            TokenKind::EqEq => "==",
            TokenKind::NotEq => "!=",
            TokenKind::Lt => "<",
            TokenKind::Le => "<=",
            TokenKind::Gt => ">",
            TokenKind::Ge => ">=",
            TokenKind::AndAnd => "&&",
            TokenKind::OrOr => "||",
            TokenKind::Bang => "!",
            TokenKind::Tilde => "~",
            TokenKind::Amp => "&",
            TokenKind::Pipe => "|",
            TokenKind::Assign => "=",
            TokenKind::FatArrow => "=>",
            TokenKind::Arrow => "->",
            TokenKind::LeftArrow => "<-",
            TokenKind::ColonColon => "::",
            TokenKind::LParen => "(",
            TokenKind::RParen => ")",
            TokenKind::LBracket => "[",
            TokenKind::RBracket => "]",
            TokenKind::LBrace => "{",
            TokenKind::RBrace => "}",
            TokenKind::Comma => ",",
            TokenKind::Semi => ";",
            TokenKind::Dot => ".",
            TokenKind::At => "@",
            TokenKind::Colon => ":",
            TokenKind::Newline => "\n",
            _ => "",
        }
    }

    /// The keyword for an identifier-shaped word, if it is one (spec 2.5).
    pub fn keyword(word: &str) -> Option<TokenKind> {
        Some(match word {
            "if" => TokenKind::If,
            "else" => TokenKind::Else,
            "case" => TokenKind::Case,
            "skip" => TokenKind::Skip,
            "emit" => TokenKind::Emit,
            "return" => TokenKind::Return,
            "def" => TokenKind::Def,
            "method" => TokenKind::Method,
            "namespace" => TokenKind::Namespace,
            "class" => TokenKind::Class,
            "import" => TokenKind::Import,
            "new" => TokenKind::New,
            "nil" => TokenKind::Nil,
            "true" => TokenKind::True,
            "false" => TokenKind::False,
            _ => return None,
        })
    }

    /// Newlines directly after this token are absorbed (spec 2.3).
    pub fn absorbs_following_newlines(&self) -> bool {
        matches!(
            self,
            TokenKind::Plus
                | TokenKind::Minus
                | TokenKind::Star
                | TokenKind::Slash
                | TokenKind::Percent
                | TokenKind::EqEq
                | TokenKind::NotEq
                | TokenKind::Lt
                | TokenKind::Le
                | TokenKind::Gt
                | TokenKind::Ge
                | TokenKind::AndAnd
                | TokenKind::OrOr
                | TokenKind::Bang
                | TokenKind::Tilde
                | TokenKind::Amp
                | TokenKind::Pipe
                | TokenKind::Assign
                | TokenKind::FatArrow
                | TokenKind::Arrow
                | TokenKind::LeftArrow
                | TokenKind::ColonColon
                | TokenKind::LParen
                | TokenKind::LBracket
                | TokenKind::LBrace
                | TokenKind::Comma
                | TokenKind::Semi
                | TokenKind::Colon
                | TokenKind::Dot
                | TokenKind::Case
                | TokenKind::Else
                | TokenKind::Label(_)
        )
    }

    /// Newlines directly before this token are absorbed (spec 2.3, D4).
    pub fn absorbs_preceding_newlines(&self) -> bool {
        matches!(
            self,
            TokenKind::Pipe
                | TokenKind::Dot
                | TokenKind::Else
                | TokenKind::RParen
                | TokenKind::RBracket
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}
