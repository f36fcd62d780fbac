//! The lexer: bytes to tokens (spec 2), including the newline-absorption rules of
//! spec 2.3 and D4 (except the one after an `if` condition, which the parser applies).

use super::ast::{TimeLit, TimeOfDay, TimeZoneLit};
use super::span::Span;
use super::token::{Token, TokenKind};

/// A lexical error.
#[derive(Clone, Debug, PartialEq)]
pub struct LexError {
    pub message: String,
    pub span: Span,
    /// The input ended inside a construct (an unterminated string).
    pub incomplete: bool,
}

/// Lexes a whole source text. The token list always ends with [`TokenKind::Eof`], or,
/// when lexing failed, with a [`TokenKind::Error`] token at the place of the error
/// (the error is returned alongside), so that a parser reports an earlier syntax
/// error first.
pub fn lex(src: &[u8]) -> (Vec<Token>, Option<LexError>) {
    let mut lx = Lexer {
        src,
        pos: 0,
        out: Vec::new(),
    };
    // A UTF-8 byte order mark at the very start is ignored.
    if src.starts_with(&[0xEF, 0xBB, 0xBF]) {
        lx.pos = 3;
    }
    let err = lx.run().err();
    (lx.out, err)
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    out: Vec<Token>,
}

/// Unicode White_Space code points outside ASCII (D5).
fn is_unicode_space(c: char) -> bool {
    matches!(
        c as u32,
        0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

/// Decodes the UTF-8 character starting at `i`, if it is well formed.
fn decode_char(src: &[u8], i: usize) -> Option<(char, usize)> {
    let b = *src.get(i)?;
    let len = match b {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let bytes = src.get(i..i.checked_add(len)?)?;
    let s = std::str::from_utf8(bytes).ok()?;
    s.chars().next().map(|c| (c, len))
}

fn is_ident_start_ascii(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// Display of a character in an error message: printable ones as themselves,
/// others as `\xHH` escapes.
fn show_char(c: char) -> String {
    if c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()) {
        c.to_string()
    } else if c == ' ' {
        " ".to_string()
    } else if (c as u32) < 0x100 {
        format!("\\x{:02X}", c as u32)
    } else {
        format!("\\u{{{:X}}}", c as u32)
    }
}

/// Parses a run of ASCII digits in `radix` with overflow checking.
fn parse_digits(s: &[u8], radix: u32) -> Option<u64> {
    let mut v: u64 = 0;
    for &b in s {
        let d = (b as char).to_digit(radix)?;
        v = v.checked_mul(radix as u64)?.checked_add(d as u64)?;
    }
    Some(v)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u64) -> u64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => {
            if is_leap(year) {
                29
            } else {
                28
            }
        }
        _ => 0,
    }
}

impl<'a> Lexer<'a> {
    fn peek(&self, off: usize) -> u8 {
        self.src.get(self.pos + off).copied().unwrap_or(0)
    }

    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn digits_end(&self, mut i: usize) -> usize {
        while self.at(i).is_ascii_digit() {
            i += 1;
        }
        i
    }

    /// Pushes a token, applying the newline-absorption rules of spec 2.3 / D4.
    fn push(&mut self, kind: TokenKind, start: usize, end: usize) {
        let span = Span::new(start, end);
        if kind == TokenKind::Newline {
            match self.out.last() {
                None => return,
                Some(t) if t.kind == TokenKind::Newline => return,
                Some(t) if t.kind.absorbs_following_newlines() => return,
                _ => {}
            }
        } else if kind.absorbs_preceding_newlines() {
            if let Some(t) = self.out.last() {
                if t.kind == TokenKind::Newline {
                    self.out.pop();
                }
            }
        }
        self.out.push(Token { kind, span });
    }

    fn error(&mut self, message: String, start: usize, end: usize, incomplete: bool) -> LexError {
        let span = Span::new(start, end);
        self.out.push(Token {
            kind: TokenKind::Error,
            span,
        });
        LexError {
            message,
            span,
            incomplete,
        }
    }

    fn run(&mut self) -> Result<(), LexError> {
        loop {
            let start = self.pos;
            let Some(&b) = self.src.get(start) else {
                self.out.push(Token {
                    kind: TokenKind::Eof,
                    span: Span::new(start, start),
                });
                return Ok(());
            };
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.push(TokenKind::Newline, start, start + 1);
                }
                b'#' => {
                    // A comment runs to the end of the line; its newline (if any) is
                    // lexed next as the newline token.
                    match memchr::memchr(b'\n', &self.src[start..]) {
                        Some(off) => self.pos = start + off,
                        None => self.pos = self.src.len(),
                    }
                }
                b'0'..=b'9' => {
                    let kind = self.lex_number()?;
                    let end = self.pos;
                    self.push(kind, start, end);
                }
                b'"' => {
                    let s = self.lex_dq_string()?;
                    self.string_or_label(s, start);
                }
                b'\'' => {
                    let s = self.lex_sq_string()?;
                    self.string_or_label(s, start);
                }
                b':' => {
                    let next = self.peek(1);
                    if next == b':' {
                        self.pos += 2;
                        self.push(TokenKind::ColonColon, start, start + 2);
                    } else if self.ident_start_at(start + 1) {
                        let end = self.ident_end(start + 1);
                        let name = String::from_utf8_lossy(&self.src[start + 1..end]).into_owned();
                        self.pos = end;
                        self.push(TokenKind::Symbol(name), start, end);
                    } else {
                        self.pos += 1;
                        self.push(TokenKind::Colon, start, start + 1);
                    }
                }
                _ if is_ident_start_ascii(b) || b >= 0x80 => {
                    if b >= 0x80 {
                        match decode_char(self.src, start) {
                            None => {
                                return Err(self.error(
                                    format!("invalid UTF-8 byte '\\x{b:02X}'"),
                                    start,
                                    start + 1,
                                    false,
                                ))
                            }
                            Some((c, len)) if is_unicode_space(c) => {
                                self.pos += len;
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    let end = self.ident_end(start);
                    let word = String::from_utf8_lossy(&self.src[start..end]).into_owned();
                    if self.at(end) == b':' {
                        self.pos = end + 1;
                        self.push(TokenKind::Label(word), start, end + 1);
                    } else {
                        self.pos = end;
                        let kind = TokenKind::keyword(&word).unwrap_or(TokenKind::Ident(word));
                        self.push(kind, start, end);
                    }
                }
                _ => {
                    let next = self.peek(1);
                    let (kind, len) = match b {
                        b'+' => (TokenKind::Plus, 1),
                        b'-' if next == b'>' => (TokenKind::Arrow, 2),
                        b'-' => (TokenKind::Minus, 1),
                        b'*' => (TokenKind::Star, 1),
                        b'/' => (TokenKind::Slash, 1),
                        b'%' => (TokenKind::Percent, 1),
                        b'=' if next == b'=' => (TokenKind::EqEq, 2),
                        b'=' if next == b'>' => (TokenKind::FatArrow, 2),
                        b'=' => (TokenKind::Assign, 1),
                        b'!' if next == b'=' => (TokenKind::NotEq, 2),
                        b'!' => (TokenKind::Bang, 1),
                        b'<' if next == b'=' => (TokenKind::Le, 2),
                        b'<' if next == b'-' => (TokenKind::LeftArrow, 2),
                        b'<' => (TokenKind::Lt, 1),
                        b'>' if next == b'=' => (TokenKind::Ge, 2),
                        b'>' => (TokenKind::Gt, 1),
                        b'&' if next == b'&' => (TokenKind::AndAnd, 2),
                        b'&' => (TokenKind::Amp, 1),
                        b'|' if next == b'|' => (TokenKind::OrOr, 2),
                        b'|' => (TokenKind::Pipe, 1),
                        b'~' => (TokenKind::Tilde, 1),
                        b'(' => (TokenKind::LParen, 1),
                        b')' => (TokenKind::RParen, 1),
                        b'[' => (TokenKind::LBracket, 1),
                        b']' => (TokenKind::RBracket, 1),
                        b'{' => (TokenKind::LBrace, 1),
                        b'}' => (TokenKind::RBrace, 1),
                        b',' => (TokenKind::Comma, 1),
                        b';' => (TokenKind::Semi, 1),
                        b'.' => (TokenKind::Dot, 1),
                        b'@' => (TokenKind::At, 1),
                        _ => {
                            return Err(self.error(
                                format!("unexpected character '{}'", show_char(b as char)),
                                start,
                                start + 1,
                                false,
                            ))
                        }
                    };
                    self.pos += len;
                    self.push(kind, start, start + len);
                }
            }
        }
    }

    fn string_or_label(&mut self, s: Vec<u8>, start: usize) {
        if self.peek(0) == b':' {
            self.pos += 1;
            let end = self.pos;
            let name = String::from_utf8_lossy(&s).into_owned();
            self.push(TokenKind::Label(name), start, end);
        } else {
            let end = self.pos;
            self.push(TokenKind::Str(s), start, end);
        }
    }

    /// Whether an identifier starts at byte `i` (spec 2.4, D5).
    fn ident_start_at(&self, i: usize) -> bool {
        let b = self.at(i);
        if is_ident_start_ascii(b) {
            return true;
        }
        if b >= 0x80 {
            if let Some((c, _)) = decode_char(self.src, i) {
                return !is_unicode_space(c);
            }
        }
        false
    }

    /// The end of the identifier starting at `i` (which must start one).
    fn ident_end(&self, mut i: usize) -> usize {
        loop {
            let b = self.at(i);
            if i >= self.src.len() {
                return i;
            }
            if b.is_ascii_alphanumeric() || b == b'_' {
                i += 1;
            } else if b >= 0x80 {
                match decode_char(self.src, i) {
                    Some((c, len)) if !is_unicode_space(c) => i += len,
                    _ => return i,
                }
            } else {
                return i;
            }
        }
    }

    fn lex_dq_string(&mut self) -> Result<Vec<u8>, LexError> {
        let start = self.pos;
        let mut i = start + 1;
        let mut s = Vec::new();
        loop {
            let Some(&b) = self.src.get(i) else {
                let len = self.src.len();
                return Err(self.error(
                    "unterminated string literal".to_string(),
                    start,
                    len,
                    true,
                ));
            };
            match b {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(s);
                }
                b'\\' => {
                    let Some(&e) = self.src.get(i + 1) else {
                        let len = self.src.len();
                        return Err(self.error(
                            "unterminated string literal".to_string(),
                            start,
                            len,
                            true,
                        ));
                    };
                    i += 2;
                    match e {
                        b'n' => s.push(b'\n'),
                        b'r' => s.push(b'\r'),
                        b't' => s.push(b'\t'),
                        b'e' => s.push(27),
                        b'0' => s.push(0),
                        b'x' => {
                            let mut v: u32 = 0;
                            let mut n = 0;
                            while n < 2 {
                                match (self.at(i) as char).to_digit(16) {
                                    Some(d) if i < self.src.len() => {
                                        v = v * 16 + d;
                                        i += 1;
                                        n += 1;
                                    }
                                    _ => break,
                                }
                            }
                            if n == 0 {
                                s.push(b'x');
                            } else {
                                s.push(v as u8);
                            }
                        }
                        other => s.push(other),
                    }
                }
                _ => {
                    s.push(b);
                    i += 1;
                }
            }
        }
    }

    fn lex_sq_string(&mut self) -> Result<Vec<u8>, LexError> {
        let start = self.pos;
        let mut i = start + 1;
        let mut s = Vec::new();
        loop {
            let Some(&b) = self.src.get(i) else {
                let len = self.src.len();
                return Err(self.error(
                    "unterminated string literal".to_string(),
                    start,
                    len,
                    true,
                ));
            };
            match b {
                b'\'' => {
                    self.pos = i + 1;
                    return Ok(s);
                }
                b'\\' if matches!(self.at(i + 1), b'\'' | b'\\') && i + 1 < self.src.len() => {
                    s.push(self.src[i + 1]);
                    i += 2;
                }
                _ => {
                    s.push(b);
                    i += 1;
                }
            }
        }
    }

    /// Lexes a number or time literal starting at `self.pos` (spec 2.6, 2.10, D6, D8).
    fn lex_number(&mut self) -> Result<TokenKind, LexError> {
        let start = self.pos;
        let run1 = self.digits_end(start);
        // D.D.D is a time literal
        if self.at(run1) == b'.' && self.at(run1 + 1).is_ascii_digit() {
            let run2 = self.digits_end(run1 + 1);
            if self.at(run2) == b'.' && self.at(run2 + 1).is_ascii_digit() {
                return self.lex_time(start, run1, run2);
            }
        }
        if self.at(start) == b'0' {
            let next = self.at(start + 1);
            if next == b'x' && self.at(start + 2).is_ascii_hexdigit() {
                let mut end = start + 2;
                while self.at(end).is_ascii_hexdigit() && end < self.src.len() {
                    end += 1;
                }
                return self.int_value(&self.src[start + 2..end], 16, start, end);
            }
            if next == b'o' && matches!(self.at(start + 2), b'0'..=b'7') {
                let mut end = start + 2;
                while matches!(self.at(end), b'0'..=b'7') && end < self.src.len() {
                    end += 1;
                }
                return self.int_value(&self.src[start + 2..end], 8, start, end);
            }
        }
        // the integer part: `0` alone, or a run not starting with 0 (`012` is `0` `12`)
        let int_end = if self.at(start) == b'0' {
            start + 1
        } else {
            run1
        };
        let mut end = int_end;
        let mut is_float = false;
        if self.at(end) == b'.' && self.at(end + 1).is_ascii_digit() {
            end = self.digits_end(end + 1);
            is_float = true;
        }
        if matches!(self.at(end), b'e' | b'E') {
            let mut e = end + 1;
            if matches!(self.at(e), b'+' | b'-') {
                e += 1;
            }
            if self.at(e).is_ascii_digit() {
                end = self.digits_end(e);
                is_float = true;
            }
        }
        if is_float {
            self.pos = end;
            // the text is ASCII digits, '.', 'e', sign: always valid for f64 parsing
            let text = std::str::from_utf8(&self.src[start..end]).unwrap_or("0");
            let v: f64 = text.parse().unwrap_or(f64::INFINITY);
            Ok(TokenKind::Float(v))
        } else {
            self.int_value(&self.src[start..end], 10, start, end)
        }
    }

    fn int_value(
        &mut self,
        digits: &[u8],
        radix: u32,
        start: usize,
        end: usize,
    ) -> Result<TokenKind, LexError> {
        match parse_digits(digits, radix) {
            Some(v) if v <= i64::MAX as u64 => {
                self.pos = end;
                Ok(TokenKind::Int(v as i64))
            }
            _ => Err(self.error("integer literal too large".to_string(), start, end, false)),
        }
    }

    fn lex_time(&mut self, start: usize, run1: usize, run2: usize) -> Result<TokenKind, LexError> {
        let run3 = self.digits_end(run2 + 1);
        let year = parse_digits(&self.src[start..run1], 10);
        let month = parse_digits(&self.src[run1 + 1..run2], 10);
        let day = parse_digits(&self.src[run2 + 1..run3], 10);
        let mut end = run3;
        let mut ok = true;
        let mut time = None;
        if self.at(end) == b'T' && self.at(end + 1).is_ascii_digit() {
            let h_end = self.digits_end(end + 1);
            let hour = parse_digits(&self.src[end + 1..h_end], 10);
            end = h_end;
            let mut minute = None;
            let mut second = Some(0);
            let mut nanos: u32 = 0;
            let mut zone = TimeZoneLit::Local;
            if self.at(end) == b':' && self.at(end + 1).is_ascii_digit() {
                let m_end = self.digits_end(end + 1);
                minute = parse_digits(&self.src[end + 1..m_end], 10);
                end = m_end;
                if self.at(end) == b':' && self.at(end + 1).is_ascii_digit() {
                    let s_end = self.digits_end(end + 1);
                    second = parse_digits(&self.src[end + 1..s_end], 10);
                    end = s_end;
                }
                if self.at(end) == b'.' && self.at(end + 1).is_ascii_digit() {
                    let f_end = self.digits_end(end + 1);
                    let frac = &self.src[end + 1..f_end];
                    for k in 0..9 {
                        let d = frac.get(k).map(|b| (b - b'0') as u32).unwrap_or(0);
                        nanos = nanos * 10 + d;
                    }
                    end = f_end;
                }
                match self.at(end) {
                    b'Z' => {
                        zone = TimeZoneLit::Offset(0);
                        end += 1;
                    }
                    sign @ (b'+' | b'-') if self.at(end + 1).is_ascii_digit() => {
                        let z_end = self.digits_end(end + 1);
                        let zd = &self.src[end + 1..z_end];
                        let (zh, mut zm) = match zd.len() {
                            1 | 2 => (parse_digits(zd, 10), Some(0)),
                            3 | 4 => (
                                parse_digits(&zd[..zd.len() - 2], 10),
                                parse_digits(&zd[zd.len() - 2..], 10),
                            ),
                            _ => (None, None),
                        };
                        end = z_end;
                        if self.at(end) == b':' && self.at(end + 1).is_ascii_digit() {
                            let zm_end = self.digits_end(end + 1);
                            zm = if zd.len() <= 2 {
                                parse_digits(&self.src[end + 1..zm_end], 10)
                            } else {
                                None
                            };
                            end = zm_end;
                        }
                        match (zh, zm) {
                            (Some(h), Some(m)) if h <= 14 && m <= 59 => {
                                let secs = (h * 3600 + m * 60) as i32;
                                zone = TimeZoneLit::Offset(if sign == b'-' { -secs } else { secs });
                            }
                            _ => ok = false,
                        }
                    }
                    _ => {}
                }
            } else {
                ok = false;
            }
            match (hour, minute, second) {
                (Some(h), Some(m), Some(s)) if h <= 23 && m <= 59 && s <= 59 => {
                    time = Some(TimeOfDay {
                        hour: h as u8,
                        minute: m as u8,
                        second: s as u8,
                        nanosecond: nanos,
                        zone,
                    });
                }
                _ => ok = false,
            }
        }
        let date = match (year, month, day) {
            (Some(y), Some(m), Some(d))
                if y <= i32::MAX as u64 && (1..=12).contains(&m) && d >= 1 =>
            {
                if d <= days_in_month(y as i64, m) {
                    Some((y as i32, m as u8, d as u8))
                } else {
                    None
                }
            }
            _ => None,
        };
        match date {
            Some((year, month, day)) if ok => {
                self.pos = end;
                Ok(TokenKind::Time(TimeLit {
                    year,
                    month,
                    day,
                    time,
                }))
            }
            _ => Err(self.error("bad time format".to_string(), start, end, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        let (toks, err) = lex(src.as_bytes());
        assert!(err.is_none(), "unexpected lex error {err:?} for {src:?}");
        toks.into_iter().map(|t| t.kind).collect()
    }

    fn lex_err(src: &[u8]) -> LexError {
        lex(src).1.expect("expected a lexical error")
    }

    fn ident(s: &str) -> TokenKind {
        TokenKind::Ident(s.to_string())
    }

    fn string(s: &[u8]) -> TokenKind {
        TokenKind::Str(s.to_vec())
    }

    use TokenKind::*;

    #[test]
    fn comments_and_crlf() {
        assert_eq!(kinds("a # c"), vec![ident("a"), Eof]);
        assert_eq!(
            kinds("a # c\nb"),
            vec![ident("a"), Newline, ident("b"), Eof]
        );
        assert_eq!(
            kinds("a\r\nb\r\n"),
            vec![ident("a"), Newline, ident("b"), Newline, Eof]
        );
        assert_eq!(kinds("a\rb"), vec![ident("a"), ident("b"), Eof]);
        assert_eq!(kinds("#!/usr/bin/env streem\nx"), vec![ident("x"), Eof]);
        assert_eq!(
            kinds("a\n\n# c\n  # d\n\nb"),
            vec![ident("a"), Newline, ident("b"), Eof]
        );
    }

    #[test]
    fn newline_absorption_after_tokens() {
        for op in [
            "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "&", "|", "=",
            "=>", "->", "<-", "::", "(", "[", "{", ",", ";", ":", ".",
        ] {
            let src = format!("a {op}\n # comment\n\n b");
            let k = kinds(&src);
            assert!(
                !k.contains(&Newline),
                "newline after {op:?} not absorbed: {k:?}"
            );
        }
        assert_eq!(kinds("case\nx"), vec![Case, ident("x"), Eof]);
        assert_eq!(kinds("else\nx"), vec![Else, ident("x"), Eof]);
        assert_eq!(kinds("a:\nx"), vec![Label("a".into()), ident("x"), Eof]);
    }

    #[test]
    fn newline_absorption_before_tokens() {
        assert_eq!(kinds("a\n  | b"), vec![ident("a"), Pipe, ident("b"), Eof]);
        assert_eq!(
            kinds("a\n # c\n .b"),
            vec![ident("a"), Dot, ident("b"), Eof]
        );
        assert_eq!(kinds("a\nelse b"), vec![ident("a"), Else, ident("b"), Eof]);
        assert_eq!(
            kinds("f(a\n)"),
            vec![ident("f"), LParen, ident("a"), RParen, Eof]
        );
        assert_eq!(kinds("[a\n]"), vec![LBracket, ident("a"), RBracket, Eof]);
        // `}` does not absorb
        assert_eq!(
            kinds("{a\n}"),
            vec![LBrace, ident("a"), Newline, RBrace, Eof]
        );
    }

    #[test]
    fn newlines_significant() {
        for t in [
            "a", "1", "\"s\"", ")", "]", "}", "if", "emit", "return", "nil", "true", "false",
            "skip",
        ] {
            let src = format!("{t}\nx");
            let k = kinds(&src);
            assert!(k.contains(&Newline), "newline after {t:?} absorbed: {k:?}");
        }
    }

    #[test]
    fn keywords_whole_words() {
        assert_eq!(
            kinds("x = 1\nelsewhere = 2"),
            vec![
                ident("x"),
                Assign,
                Int(1),
                Newline,
                ident("elsewhere"),
                Assign,
                Int(2),
                Eof
            ]
        );
        assert_eq!(
            kinds("cases skipped iffy"),
            vec![ident("cases"), ident("skipped"), ident("iffy"), Eof]
        );
        assert_eq!(kinds("if else case"), vec![If, Else, Case, Eof]);
    }

    #[test]
    fn identifiers_unicode() {
        assert_eq!(
            kinds("π 変数 _tmp x1"),
            vec![ident("π"), ident("変数"), ident("_tmp"), ident("x1"), Eof]
        );
        assert_eq!(
            kinds("a\u{a0}b\u{3000}c"),
            vec![ident("a"), ident("b"), ident("c"), Eof]
        );
        assert_eq!(kinds("a\u{2028}b"), vec![ident("a"), ident("b"), Eof]);
        let e = lex_err(b"a \xff b");
        assert!(e.message.contains("UTF-8"));
        assert_eq!(e.span, Span::new(2, 3));
    }

    #[test]
    fn operators_d9() {
        assert_eq!(kinds("a || b"), vec![ident("a"), OrOr, ident("b"), Eof]);
        assert_eq!(kinds("a||b"), vec![ident("a"), OrOr, ident("b"), Eof]);
        assert_eq!(kinds("a && b"), vec![ident("a"), AndAnd, ident("b"), Eof]);
        assert_eq!(
            kinds("!a ~b"),
            vec![Bang, ident("a"), Tilde, ident("b"), Eof]
        );
        assert_eq!(kinds("a != b"), vec![ident("a"), NotEq, ident("b"), Eof]);
        assert_eq!(
            kinds("a | | b"),
            vec![ident("a"), Pipe, Pipe, ident("b"), Eof]
        );
        assert_eq!(
            kinds("(x)->x"),
            vec![LParen, ident("x"), RParen, Arrow, ident("x"), Eof]
        );
        assert_eq!(kinds("<- ::"), vec![LeftArrow, ColonColon, Eof]);
        assert_eq!(kinds("a => b"), vec![ident("a"), FatArrow, ident("b"), Eof]);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            kinds("0 42 3.25 0.5"),
            vec![Int(0), Int(42), Float(3.25), Float(0.5), Eof]
        );
        assert_eq!(
            kinds("0x1F 0xff 0o17"),
            vec![Int(31), Int(255), Int(15), Eof]
        );
        assert_eq!(kinds("012"), vec![Int(0), Int(12), Eof]);
        assert_eq!(kinds("5.floor"), vec![Int(5), Dot, ident("floor"), Eof]);
        assert_eq!(
            kinds("1e3 2.5E-4 1.5e+2"),
            vec![Float(1000.0), Float(2.5e-4), Float(150.0), Eof]
        );
        assert_eq!(kinds("1e"), vec![Int(1), ident("e"), Eof]);
        assert_eq!(kinds("9223372036854775807"), vec![Int(i64::MAX), Eof]);
        assert_eq!(kinds("-1"), vec![Minus, Int(1), Eof]);
        assert_eq!(
            lex_err(b"9223372036854775808").message,
            "integer literal too large"
        );
        assert_eq!(
            lex_err(b"x = 99999999999999999999999999").message,
            "integer literal too large"
        );
        assert_eq!(
            lex_err(b"0x8000000000000000").message,
            "integer literal too large"
        );
        assert_eq!(kinds("0x7fffffffffffffff"), vec![Int(i64::MAX), Eof]);
        assert_eq!(
            kinds("1e99999999999999999999"),
            vec![Float(f64::INFINITY), Eof]
        );
        assert_eq!(kinds("0x"), vec![Int(0), ident("x"), Eof]);
    }

    #[test]
    fn strings_escapes_d7() {
        assert_eq!(kinds(r#""a\nb""#), vec![string(b"a\nb"), Eof]);
        assert_eq!(kinds(r#""\r\t\e\0""#), vec![string(b"\r\t\x1b\0"), Eof]);
        assert_eq!(kinds(r#""\x4A""#), vec![string(b"J"), Eof]);
        assert_eq!(kinds(r#""\x4a""#), vec![string(b"J"), Eof]);
        assert_eq!(kinds(r#""\x4z""#), vec![string(b"\x04z"), Eof]);
        assert_eq!(kinds(r#""\xg""#), vec![string(b"xg"), Eof]);
        assert_eq!(kinds(r#""\x414""#), vec![string(b"A4"), Eof]);
        assert_eq!(kinds(r#""\"\\\q""#), vec![string(b"\"\\q"), Eof]);
        assert_eq!(kinds(r#""\u00e9""#), vec![string(b"u00e9"), Eof]);
        assert_eq!(kinds("\"a\nb\""), vec![string(b"a\nb"), Eof]);
        let (toks, err) = lex(b"\"\xff\xfe\"");
        assert!(err.is_none());
        assert_eq!(toks[0].kind, string(b"\xff\xfe"));
        let e = lex_err(b"x = \"abc");
        assert!(e.incomplete);
        let e = lex_err(b"\"abc\\");
        assert!(e.incomplete);
    }

    #[test]
    fn single_quoted_d68() {
        assert_eq!(kinds(r"'a\n'"), vec![string(b"a\\n"), Eof]);
        assert_eq!(kinds(r"'it\'s'"), vec![string(b"it's"), Eof]);
        assert_eq!(kinds(r"'a\\b'"), vec![string(b"a\\b"), Eof]);
        assert_eq!(kinds(r#"'say "hi"'"#), vec![string(b"say \"hi\""), Eof]);
        assert!(lex_err(b"'abc").incomplete);
    }

    #[test]
    fn symbols_and_labels() {
        assert_eq!(kinds(":foo"), vec![Symbol("foo".into()), Eof]);
        assert_eq!(kinds("a:b"), vec![Label("a".into()), ident("b"), Eof]);
        assert_eq!(kinds("a :b"), vec![ident("a"), Symbol("b".into()), Eof]);
        assert_eq!(kinds("\"x y\": 1"), vec![Label("x y".into()), Int(1), Eof]);
        assert_eq!(
            kinds("\"x\\ty\":1"),
            vec![Label("x\ty".into()), Int(1), Eof]
        );
        assert_eq!(kinds("a : b"), vec![ident("a"), Colon, ident("b"), Eof]);
        assert_eq!(kinds(":if"), vec![Symbol("if".into()), Eof]);
    }

    fn time(src: &str) -> TimeLit {
        match kinds(src)[0].clone() {
            Time(t) => t,
            other => panic!("not a time literal: {other:?}"),
        }
    }

    #[test]
    fn time_literals() {
        let t = time("2015.8.1");
        assert_eq!((t.year, t.month, t.day, t.time), (2015, 8, 1, None));
        let t = time("2015.08.01T12:00");
        let tod = t.time.unwrap();
        assert_eq!(
            (tod.hour, tod.minute, tod.second, tod.zone),
            (12, 0, 0, TimeZoneLit::Local)
        );
        let tod = time("2015.8.1T12:00:00+09:00").time.unwrap();
        assert_eq!(tod.zone, TimeZoneLit::Offset(9 * 3600));
        let tod = time("2015.8.1T12:00:00.250Z").time.unwrap();
        assert_eq!(
            (tod.nanosecond, tod.zone),
            (250_000_000, TimeZoneLit::Offset(0))
        );
        let tod = time("2016.1.1T00:00:00-0500").time.unwrap();
        assert_eq!(tod.zone, TimeZoneLit::Offset(-5 * 3600));
        let tod = time("2016.1.1T00:00:00+09").time.unwrap();
        assert_eq!(tod.zone, TimeZoneLit::Offset(9 * 3600));
        let tod = time("2016.1.1T00:00:00.1234567891234").time.unwrap();
        assert_eq!(tod.nanosecond, 123_456_789);
        let tod = time("2016.1.1T00:00:00.05").time.unwrap();
        assert_eq!(tod.nanosecond, 50_000_000);
        assert_eq!(time("2016.2.29").day, 29);
        assert_eq!(time("2000.2.29").day, 29);
        assert_eq!(kinds("2016.2.29.ymd()")[1], Dot);
        assert_eq!(kinds("2016.2.29 - 1")[1], Minus);
        for bad in [
            "2015.13.1",
            "2015.0.1",
            "2015.2.30",
            "2015.2.29",
            "1900.2.29",
            "2015.4.31",
            "2015.1.0",
            "2015.1.1T24:00",
            "2015.1.1T23:60",
            "2015.1.1T23:59:60",
            "2015.1.1T12",
            "2015.1.1T12:00+15",
            "2015.1.1T12:00+10:60",
            "2015.1.1T12:00+12345",
            "99999999999999999999999.1.1",
            "2015.99999999999999999999999.1",
            "2015.1.1T99999999999999999999:00",
        ] {
            let e = lex_err(bad.as_bytes());
            assert_eq!(e.message, "bad time format", "{bad}");
            assert!(!e.incomplete);
        }
    }

    #[test]
    fn unexpected_characters() {
        let e = lex_err(b"y = x $ 2");
        assert_eq!(e.message, "unexpected character '$'");
        assert_eq!(e.span, Span::new(6, 7));
        assert!(!e.incomplete);
        assert_eq!(lex_err(b"\x01").message, "unexpected character '\\x01'");
        assert_eq!(lex_err(b"a ? b").message, "unexpected character '?'");
        // the error token ends the token list
        let (toks, _) = lex(b"a $ b");
        assert_eq!(toks.last().unwrap().kind, Error);
    }
}
