//! Strings (spec 4.4, 6.7, D25, D57, D69) and `array.join`.
//!
//! Strings are byte sequences. Positions and lengths count characters: UTF-8 code
//! points, where each byte of an invalid sequence is one character (D25). Regular
//! expressions use `regex::bytes`, so they work on any bytes; compiled patterns are
//! cached per thread.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use memchr::memmem;
use regex::bytes::{Captures, Regex};
use rustc_hash::FxHashMap;

use crate::builtins::number::{is_space, to_number};
use crate::eval::func::BytesKind;
use crate::ext::{Args, CallContext, NamespaceRegistry, Registry, RuntimeError, Value};

type Method = fn(&mut CallContext<'_>, &Args<'_>) -> Result<Value, RuntimeError>;

/// Registers a method; `min`/`max` count the receiver.
fn def(ns: &NamespaceRegistry, name: &'static str, min: usize, max: usize, f: Method) {
    ns.define_method(name, move |cx, vals| {
        let a = Args::method(name, vals);
        a.arity(min, max)?;
        f(cx, &a)
    });
}

/// A method that only reads its receiver: `f` gets the receiver's bytes and the
/// arguments after it (`a.bytes(0)` is argument 1), so it can also run on a line still
/// in a reader's buffer (`NamespaceRegistry::define_bytes_method`).
type BytesFn = fn(&[u8], &Args<'_>) -> Result<Value, RuntimeError>;

/// Registers a bytes method; `min`/`max` count the receiver.
fn defb(ns: &NamespaceRegistry, name: &'static str, min: usize, max: usize, f: BytesFn) {
    ns.define_bytes_method(name, min, max, f);
}

// ---------------------------------------------------------------------------------
// Characters (D25)

/// Calls `f(start, end)` with the byte range of every character, in order, until `f`
/// returns `false`.
fn each_char(b: &[u8], mut f: impl FnMut(usize, usize) -> bool) {
    if b.is_ascii() {
        for i in 0..b.len() {
            if !f(i, i + 1) {
                return;
            }
        }
        return;
    }
    let base = b.as_ptr() as usize;
    for chunk in b.utf8_chunks() {
        let valid = chunk.valid();
        let off = valid.as_ptr() as usize - base;
        for (i, c) in valid.char_indices() {
            if !f(off + i, off + i + c.len_utf8()) {
                return;
            }
        }
        let inv = off + valid.len();
        for j in 0..chunk.invalid().len() {
            if !f(inv + j, inv + j + 1) {
                return;
            }
        }
    }
}

/// The number of characters (D25).
pub fn char_count(b: &[u8]) -> usize {
    if is_ascii(b) {
        return b.len();
    }
    b.utf8_chunks()
        .map(|c| c.valid().chars().count() + c.invalid().len())
        .sum()
}

/// Whether every byte is ASCII: an OR over 16-byte vectors, two at a time, and one
/// test of the high bits at the end (faster than `<[u8]>::is_ascii` on line-sized
/// input); the tail is one more (overlapping) vector, not a loop over bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn is_ascii(b: &[u8]) -> bool {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128};
    let n = b.len();
    if n < 16 {
        return is_ascii_words(b);
    }
    let p = b.as_ptr();
    // SAFETY: SSE2 is part of x86_64. Every load is of 16 bytes that start at or
    // after 0 and end at or before `n` (`i + 32 <= n`, `i + 16 <= n`, `n >= 16`);
    // `_mm_loadu_si128` takes unaligned addresses.
    unsafe {
        let load = |i: usize| _mm_loadu_si128(p.add(i) as *const __m128i);
        let mut acc = load(n - 16);
        let mut i = 0;
        while i + 32 <= n {
            acc = _mm_or_si128(acc, _mm_or_si128(load(i), load(i + 16)));
            i += 32;
        }
        if i + 16 <= n {
            acc = _mm_or_si128(acc, load(i));
        }
        _mm_movemask_epi8(acc) == 0
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn is_ascii(b: &[u8]) -> bool {
    is_ascii_words(b)
}

/// [`is_ascii`] over 8-byte words; the tail is one more (overlapping) word.
#[inline]
fn is_ascii_words(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    if n < 8 {
        return b.iter().fold(0, |a, &x| a | x) < 0x80;
    }
    let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let mut acc = word(n - 8);
    let mut i = 0;
    while i + 8 <= n {
        acc |= word(i);
        i += 8;
    }
    acc & HIGH == 0
}

/// The byte offset where character `n` starts (`b.len()` if there are not that many).
fn char_to_byte(b: &[u8], n: usize) -> usize {
    if b.is_ascii() {
        return n.min(b.len());
    }
    let mut k = 0;
    let mut at = b.len();
    each_char(b, |s, _| {
        if k == n {
            at = s;
            return false;
        }
        k += 1;
        true
    });
    at
}

/// The character index of byte offset `off`, or `None` if it falls inside a character.
fn byte_to_char(b: &[u8], off: usize) -> Option<usize> {
    if off >= b.len() {
        return (off == b.len()).then(|| char_count(b));
    }
    let mut k = 0;
    let mut found = None;
    each_char(b, |s, _| {
        if s >= off {
            found = (s == off).then_some(k);
            return false;
        }
        k += 1;
        true
    });
    found
}

/// Resolves a possibly negative position against `n` characters (negative counts from
/// the end).
fn position(p: i64, n: usize) -> i64 {
    if p < 0 {
        p.saturating_add(n as i64)
    } else {
        p
    }
}

fn chars_value(b: &[u8]) -> Value {
    let mut out = Vec::with_capacity(b.len());
    each_char(b, |s, e| {
        out.push(Value::bytes(&b[s..e]));
        true
    });
    Value::array(out)
}

// ---------------------------------------------------------------------------------
// The original methods: length, bytesize, chars, split, number

fn length(s: &[u8], _a: &Args) -> Result<Value, RuntimeError> {
    Ok(Value::Int(char_count(s) as i64))
}

fn bytesize(s: &[u8], _a: &Args) -> Result<Value, RuntimeError> {
    Ok(Value::Int(s.len() as i64))
}

fn chars(s: &[u8], _a: &Args) -> Result<Value, RuntimeError> {
    Ok(chars_value(s))
}

/// Splits at runs of ASCII whitespace; no empty fields (D57).
fn split_whitespace(s: &[u8]) -> Value {
    let mut spans = Vec::new();
    word_spans(s, &mut spans);
    Value::array(spans.iter().map(|&(a, b)| Value::bytes(&s[a..b])).collect())
}

/// Appends the byte ranges of the words of `s` (runs of ASCII non-whitespace, what
/// `split()` makes strings of) to `spans`. Sixteen bytes at a time: a mask of the
/// whitespace among them, whose edges are where words start and end.
pub(crate) fn word_spans(s: &[u8], spans: &mut Vec<(usize, usize)>) {
    let n = s.len();
    // Whether the byte before `i` is whitespace (or `i` is 0), and where the current
    // word started.
    let mut after_space = true;
    let mut start = 0;
    let mut i = 0;
    while i + 16 <= n {
        let mask = space_mask16(&s[i..i + 16]);
        // Bit j: the byte before j is whitespace.
        let before = (mask << 1 | u32::from(after_space)) & 0xFFFF;
        let starts = !mask & before & 0xFFFF;
        let ends = mask & !before;
        let mut edges = starts | ends;
        while edges != 0 {
            let j = edges.trailing_zeros() as usize;
            if starts >> j & 1 == 1 {
                start = i + j;
            } else {
                spans.push((start, i + j));
            }
            edges &= edges - 1;
        }
        after_space = mask >> 15 & 1 == 1;
        i += 16;
    }
    for (j, &b) in s.iter().enumerate().skip(i) {
        let space = is_space(b);
        if after_space && !space {
            start = j;
        } else if !after_space && space {
            spans.push((start, j));
        }
        after_space = space;
    }
    if !after_space {
        spans.push((start, n));
    }
}

/// A bit for each of the 16 bytes of `b` that is ASCII whitespace (`is_space`).
#[cfg(target_arch = "x86_64")]
#[inline]
fn space_mask16(b: &[u8]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_sub_epi8,
    };
    assert!(b.len() >= 16);
    // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes checked above.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr() as *const __m128i);
        let space = _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8));
        // 9..=13 (tab, newline, vertical tab, form feed, carriage return): v - 9 <= 4.
        let off = _mm_sub_epi8(v, _mm_set1_epi8(9));
        let four = _mm_set1_epi8(4);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(off, four), four);
        _mm_movemask_epi8(_mm_or_si128(space, control)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn space_mask16(b: &[u8]) -> u32 {
    b[..16]
        .iter()
        .enumerate()
        .fold(0, |m, (j, &c)| m | u32::from(is_space(c)) << j)
}

fn split(s: &[u8], a: &Args) -> Result<Value, RuntimeError> {
    let sep = if !a.is_empty() {
        Some(a.bytes(0)?)
    } else {
        None
    };
    Ok(match sep {
        None | Some(b" ") => split_whitespace(s),
        Some(b"") => chars_value(s),
        Some(sep) => {
            let mut out = Vec::new();
            let mut last = 0;
            for i in memmem::find_iter(s, sep) {
                out.push(Value::bytes(&s[last..i]));
                last = i + sep.len();
            }
            out.push(Value::bytes(&s[last..]));
            Value::array(out)
        }
    })
}

fn number(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    to_number("number", a.vals)
}

// ---------------------------------------------------------------------------------
// D69: searching, slicing, case, whitespace, replacing, lines

fn contains(s: &[u8], a: &Args) -> Result<Value, RuntimeError> {
    let sub = a.bytes(0)?;
    if !sub.is_empty() && s.len() < SHORT_HAYSTACK {
        return Ok(Value::Bool(find_short(s, sub)));
    }
    // The same needle is searched for line after line: keep its searcher.
    thread_local! {
        static FINDER: RefCell<Option<memmem::Finder<'static>>> = const { RefCell::new(None) };
    }
    let found = FINDER.with(|f| {
        let mut f = f.borrow_mut();
        match f.as_ref() {
            Some(finder) if finder.needle() == sub => finder.find(s).is_some(),
            _ => {
                let finder = memmem::Finder::new(sub).into_owned();
                let found = finder.find(s).is_some();
                *f = Some(finder);
                found
            }
        }
    });
    Ok(Value::Bool(found))
}

/// Below this length `memmem` searches byte by byte (Rabin-Karp); a line usually is.
const SHORT_HAYSTACK: usize = 256;

/// Whether `needle` (not empty) occurs in a short `hay`: a vectorised `memchr` for the
/// needle's rarest-looking byte (not a lowercase letter or a space, if it has one),
/// then a comparison at each place it occurs.
fn find_short(hay: &[u8], needle: &[u8]) -> bool {
    if needle.len() > hay.len() {
        return false;
    }
    let common = |b: u8| b.is_ascii_lowercase() || b == b' ';
    let at = needle.iter().position(|&b| !common(b)).unwrap_or(0);
    let last_start = hay.len() - needle.len();
    // Candidates: where the chosen byte could sit in a match.
    let window = &hay[at..at + last_start + 1];
    memchr::memchr_iter(needle[at], window).any(|i| &hay[i..i + needle.len()] == needle)
}

fn starts_with(s: &[u8], a: &Args) -> Result<Value, RuntimeError> {
    let p = a.bytes(0)?;
    Ok(Value::Bool(s.starts_with(p)))
}

fn ends_with(s: &[u8], a: &Args) -> Result<Value, RuntimeError> {
    let p = a.bytes(0)?;
    Ok(Value::Bool(s.ends_with(p)))
}

/// `s.index(sub [, from])`: the character position of the first occurrence that starts
/// at a character boundary at or after `from`, or `nil`. A negative `from` counts from
/// the end; one before the start is taken as 0.
fn index(s: &[u8], a: &Args) -> Result<Value, RuntimeError> {
    let sub = a.bytes(0)?;
    let from = if a.len() > 1 { a.int(1)? } else { 0 };
    let ascii = s.is_ascii();
    let n = if ascii { s.len() } else { char_count(s) };
    let from = position(from, n).max(0);
    if from as u64 > n as u64 {
        return Ok(Value::Nil);
    }
    let mut at = char_to_byte(s, from as usize);
    let finder = memmem::Finder::new(sub);
    while let Some(i) = finder.find(&s[at..]) {
        let off = at + i;
        if ascii {
            return Ok(Value::Int(off as i64));
        }
        if let Some(k) = byte_to_char(s, off) {
            return Ok(Value::Int(k as i64));
        }
        at = off + 1;
    }
    Ok(Value::Nil)
}

/// `s.substr(start [, len])`: the characters in `[start, start + len)` clipped to the
/// string; a negative `start` counts from the end, a negative `len` selects nothing.
fn substr(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let start = a.int(1)?;
    let len = if a.len() > 2 { Some(a.int(2)?) } else { None };
    let n = char_count(s);
    let from = position(start, n);
    let to = match len {
        Some(l) => from.saturating_add(l.max(0)),
        None => n as i64,
    };
    let (from, to) = (
        from.clamp(0, n as i64) as usize,
        to.clamp(0, n as i64) as usize,
    );
    if from == 0 && to == n {
        return Ok(a.vals[0].clone());
    }
    if from >= to {
        return Ok(Value::str(""));
    }
    let bs = char_to_byte(s, from);
    let be = bs + char_to_byte(&s[bs..], to - from);
    Ok(Value::bytes(&s[bs..be]))
}

/// Unicode case conversion of the valid UTF-8 parts; invalid bytes are kept.
fn convert_case(a: &Args, upper: bool) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    if s.is_ascii() {
        let changes = if upper {
            s.iter().any(u8::is_ascii_lowercase)
        } else {
            s.iter().any(u8::is_ascii_uppercase)
        };
        if !changes {
            return Ok(a.vals[0].clone());
        }
        let out = if upper {
            s.to_ascii_uppercase()
        } else {
            s.to_ascii_lowercase()
        };
        return Ok(Value::bytes(&out));
    }
    let mut out = Vec::with_capacity(s.len());
    for chunk in s.utf8_chunks() {
        let v = chunk.valid();
        let c = if upper {
            v.to_uppercase()
        } else {
            v.to_lowercase()
        };
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    Ok(Value::bytes(&out))
}

fn upcase(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    convert_case(a, true)
}

fn downcase(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    convert_case(a, false)
}

fn strip_with(a: &Args, left: bool, right: bool) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let mut start = 0;
    let mut end = s.len();
    if left {
        while start < end && is_space(s[start]) {
            start += 1;
        }
    }
    if right {
        while end > start && is_space(s[end - 1]) {
            end -= 1;
        }
    }
    if start == 0 && end == s.len() {
        return Ok(a.vals[0].clone());
    }
    Ok(Value::bytes(&s[start..end]))
}

fn strip(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    strip_with(a, true, true)
}

fn lstrip(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    strip_with(a, true, false)
}

fn rstrip(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    strip_with(a, false, true)
}

fn replace(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let old = a.bytes(1)?;
    let new = a.bytes(2)?;
    if old.is_empty() {
        return Err(a.error(1, "non-empty string required"));
    }
    let mut it = memmem::find_iter(s, old).peekable();
    if it.peek().is_none() {
        return Ok(a.vals[0].clone());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut last = 0;
    for i in it {
        out.extend_from_slice(&s[last..i]);
        out.extend_from_slice(new);
        last = i + old.len();
    }
    out.extend_from_slice(&s[last..]);
    Ok(Value::bytes(&out))
}

/// Lines as input is split (5.9, D38): at `\n`, a `\r` before it dropped, an
/// unterminated last line kept.
fn lines(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let mut out = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', s) {
        let mut e = nl;
        if e > start && s[e - 1] == b'\r' {
            e -= 1;
        }
        out.push(Value::bytes(&s[start..e]));
        start = nl + 1;
    }
    if start < s.len() {
        out.push(Value::bytes(&s[start..]));
    }
    Ok(Value::array(out))
}

// ---------------------------------------------------------------------------------
// Regular expressions (D69)

/// Compiled patterns per thread, keyed by the pattern's bytes. `Rc` so that a
/// replacement callback may compile other patterns while one is in use.
const REGEX_CACHE_MAX: usize = 64;

thread_local! {
    static REGEX_CACHE: RefCell<FxHashMap<Box<[u8]>, Rc<Regex>>> = RefCell::new(FxHashMap::default());
}

/// The pattern text for the `regex` crate: invalid UTF-8 bytes become byte escapes.
fn pattern_source(pat: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(pat) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::with_capacity(pat.len() + 16);
            for chunk in pat.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("(?-u:\\x{b:02X})"));
                }
            }
            Cow::Owned(out)
        }
    }
}

/// "gsub: invalid regular expression at 3: unclosed group": the position is the
/// 0-based character offset in the pattern where the problem starts.
fn regex_error(name: &str, src: &str, err: regex::Error) -> RuntimeError {
    use regex_syntax::ast::parse::Parser;
    use regex_syntax::hir::translate::TranslatorBuilder;
    let detail = match Parser::new().parse(src) {
        Err(e) => Some((e.span().start.offset, e.kind().to_string())),
        Ok(ast) => match TranslatorBuilder::new()
            .utf8(false)
            .build()
            .translate(src, &ast)
        {
            Err(e) => Some((e.span().start.offset, e.kind().to_string())),
            Ok(_) => None,
        },
    };
    match detail {
        Some((off, msg)) => {
            let at = src.get(..off).map_or(0, |p| p.chars().count());
            RuntimeError::new(format!("{name}: invalid regular expression at {at}: {msg}"))
        }
        None => {
            let msg = match err {
                regex::Error::CompiledTooBig(limit) => {
                    format!("pattern too big (compiled size exceeds {limit} bytes)")
                }
                e => e.to_string(),
            };
            RuntimeError::new(format!("{name}: invalid regular expression: {msg}"))
        }
    }
}

/// Argument `i` of `a` as a compiled regular expression.
fn regex_arg(a: &Args, i: usize) -> Result<Rc<Regex>, RuntimeError> {
    let pat = a.bytes(i)?;
    if let Some(re) = REGEX_CACHE.with(|c| c.borrow().get(pat).cloned()) {
        return Ok(re);
    }
    let src = pattern_source(pat);
    let re = Rc::new(Regex::new(&src).map_err(|e| regex_error(a.name, &src, e))?);
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= REGEX_CACHE_MAX {
            c.clear();
        }
        c.insert(pat.into(), re.clone());
    });
    Ok(re)
}

/// Whether an empty match at byte `i` lies between characters (D25). The `regex`
/// crate's byte matcher also reports empty matches inside a multi-byte character;
/// those are not matches in character terms.
fn at_char_boundary(s: &[u8], i: usize) -> bool {
    if i == 0 || i >= s.len() || s[i] & 0xC0 != 0x80 {
        return true;
    }
    // `s[i]` is a continuation byte: find the lead byte, at most 3 bytes back.
    let mut j = i;
    while j > 0 && i - j < 3 && s[j] & 0xC0 == 0x80 {
        j -= 1;
    }
    let len = match s[j] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return true,
    };
    !(j + len > i && j + len <= s.len() && std::str::from_utf8(&s[j..j + len]).is_ok())
}

/// Whether a match counts (an empty one only between characters).
#[inline]
fn keep(s: &[u8], m: &regex::bytes::Match) -> bool {
    !m.is_empty() || at_char_boundary(s, m.start())
}

/// A match as `find` returns it: the matched text without capture groups, else the
/// array of the groups (`nil` for a group that did not take part).
fn match_value(caps: &Captures) -> Value {
    if caps.len() == 1 {
        return caps
            .get(0)
            .map_or(Value::Nil, |m| Value::bytes(m.as_bytes()));
    }
    Value::array(
        (1..caps.len())
            .map(|i| {
                caps.get(i)
                    .map_or(Value::Nil, |m| Value::bytes(m.as_bytes()))
            })
            .collect(),
    )
}

fn test(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let re = regex_arg(a, 1)?;
    Ok(Value::Bool(re.is_match(s)))
}

fn find(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let re = regex_arg(a, 1)?;
    if re.captures_len() == 1 {
        let m = re.find_iter(s).find(|m| keep(s, m));
        return Ok(m.map_or(Value::Nil, |m| Value::bytes(m.as_bytes())));
    }
    let c = re
        .captures_iter(s)
        .find(|c| c.get(0).is_some_and(|m| keep(s, &m)));
    Ok(c.map_or(Value::Nil, |c| match_value(&c)))
}

fn scan(_cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let re = regex_arg(a, 1)?;
    let out = if re.captures_len() == 1 {
        re.find_iter(s)
            .filter(|m| keep(s, m))
            .map(|m| Value::bytes(m.as_bytes()))
            .collect()
    } else {
        re.captures_iter(s)
            .filter(|c| c.get(0).is_some_and(|m| keep(s, &m)))
            .map(|c| match_value(&c))
            .collect()
    };
    Ok(Value::array(out))
}

/// Appends a replacement template: `$0`, `$1`... (all digits that follow), `${N}` or
/// `${name}` insert a group (nothing if it does not exist or did not take part), `$$`
/// is `$`; any other `$` is literal.
fn expand(rep: &[u8], caps: &Captures, re: &Regex, out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'$', &rep[i..]) {
        out.extend_from_slice(&rep[i..i + p]);
        let j = i + p + 1;
        let group = |out: &mut Vec<u8>, m: Option<regex::bytes::Match>| {
            if let Some(m) = m {
                out.extend_from_slice(m.as_bytes());
            }
        };
        match rep.get(j) {
            Some(b'$') => {
                out.push(b'$');
                i = j + 1;
            }
            Some(d) if d.is_ascii_digit() => {
                let len = rep[j..].iter().take_while(|b| b.is_ascii_digit()).count();
                let n = parse_group_number(&rep[j..j + len]);
                group(out, n.and_then(|n| caps.get(n)));
                i = j + len;
            }
            Some(b'{') => match memchr::memchr(b'}', &rep[j + 1..]) {
                Some(close) => {
                    let name = &rep[j + 1..j + 1 + close];
                    let m = if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                        parse_group_number(name).and_then(|n| caps.get(n))
                    } else {
                        std::str::from_utf8(name)
                            .ok()
                            .filter(|n| re.capture_names().any(|c| c == Some(*n)))
                            .and_then(|n| caps.name(n))
                    };
                    group(out, m);
                    i = j + 1 + close + 1;
                }
                None => {
                    out.push(b'$');
                    i = j;
                }
            },
            _ => {
                out.push(b'$');
                i = j;
            }
        }
    }
    out.extend_from_slice(&rep[i..]);
}

fn parse_group_number(d: &[u8]) -> Option<usize> {
    std::str::from_utf8(d).ok()?.parse().ok()
}

/// The output so far (created on the first match) extended with `s[last..start]`.
fn push_upto<'o>(
    out: &'o mut Option<Vec<u8>>,
    s: &[u8],
    last: usize,
    start: usize,
) -> &'o mut Vec<u8> {
    let o = out.get_or_insert_with(|| Vec::with_capacity(s.len() + 16));
    o.extend_from_slice(&s[last..start]);
    o
}

enum Replacement<'v> {
    Template(&'v [u8]),
    Literal(&'v [u8]),
    Func(&'v Value),
}

/// `sub` (first match) and `gsub` (every match).
fn substitute(cx: &mut CallContext, a: &Args, all: bool) -> Result<Value, RuntimeError> {
    let s = a.bytes(0)?;
    let re = regex_arg(a, 1)?;
    let rep = match a.value(2)? {
        Value::Str(t) if memchr::memchr(b'$', t.as_bytes()).is_some() => {
            Replacement::Template(t.as_bytes())
        }
        Value::Str(t) => Replacement::Literal(t.as_bytes()),
        v @ (Value::Func(_) | Value::Array(_)) => Replacement::Func(v),
        _ => return Err(a.error(2, "string or function required")),
    };
    let mut out: Option<Vec<u8>> = None;
    let mut last = 0;
    if let Replacement::Literal(t) = rep {
        for m in re.find_iter(s).filter(|m| keep(s, m)) {
            push_upto(&mut out, s, last, m.start()).extend_from_slice(t);
            last = m.end();
            if !all {
                break;
            }
        }
    } else {
        for caps in re.captures_iter(s) {
            let Some(m) = caps.get(0).filter(|m| keep(s, m)) else {
                continue;
            };
            let o = push_upto(&mut out, s, last, m.start());
            match rep {
                Replacement::Template(t) => expand(t, &caps, &re, o),
                Replacement::Func(f) => {
                    let v = cx.call_with_element(f, match_value(&caps))?;
                    cx.write_display(o, &v)?;
                }
                Replacement::Literal(_) => unreachable!(),
            }
            last = m.end();
            if !all {
                break;
            }
        }
    }
    match out {
        None => Ok(a.vals[0].clone()),
        Some(mut o) => {
            o.extend_from_slice(&s[last..]);
            Ok(Value::bytes(&o))
        }
    }
}

fn sub(cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    substitute(cx, a, false)
}

fn gsub(cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    substitute(cx, a, true)
}

// ---------------------------------------------------------------------------------
// array.join

/// `a.join([sep])`: the elements as text (4.12, strings unquoted) with `sep` between.
fn join(cx: &mut CallContext, a: &Args) -> Result<Value, RuntimeError> {
    let arr = a.array(0)?;
    let sep = if a.len() > 1 { a.bytes(1)? } else { b"" };
    let mut out = Vec::new();
    for (i, v) in arr.items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        cx.write_display(&mut out, v)?;
    }
    Ok(Value::bytes(&out))
}

pub fn register(r: &Registry) {
    let ns = r.namespace("string");
    defb(&ns, "length", 1, 1, length);
    defb(&ns, "bytesize", 1, 1, bytesize);
    defb(&ns, "chars", 1, 1, chars);
    ns.define_bytes_method_as("split", 1, 2, BytesKind::Split, split);
    def(&ns, "number", 1, 1, number);
    ns.define_bytes_method_as("contains", 2, 2, BytesKind::Contains, contains);
    defb(&ns, "starts_with", 2, 2, starts_with);
    defb(&ns, "ends_with", 2, 2, ends_with);
    defb(&ns, "index", 2, 3, index);
    def(&ns, "substr", 2, 3, substr);
    def(&ns, "upcase", 1, 1, upcase);
    def(&ns, "downcase", 1, 1, downcase);
    def(&ns, "strip", 1, 1, strip);
    def(&ns, "lstrip", 1, 1, lstrip);
    def(&ns, "rstrip", 1, 1, rstrip);
    def(&ns, "replace", 3, 3, replace);
    def(&ns, "lines", 1, 1, lines);
    def(&ns, "test", 2, 2, test);
    def(&ns, "find", 2, 2, find);
    def(&ns, "scan", 2, 2, scan);
    def(&ns, "sub", 3, 3, sub);
    def(&ns, "gsub", 3, 3, gsub);

    def(&r.namespace("array"), "join", 1, 2, join);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting() {
        assert_eq!(char_count(b"abc"), 3);
        assert_eq!(char_count("日本語".as_bytes()), 3);
        assert_eq!(char_count(b"a\xffb"), 3);
        // A truncated sequence: each byte is a character.
        assert_eq!(char_count(b"\xe6\x97a"), 3);
        assert_eq!(char_count(b""), 0);
    }

    #[test]
    fn offsets() {
        let s = "aé日b".as_bytes();
        assert_eq!(char_to_byte(s, 0), 0);
        assert_eq!(char_to_byte(s, 2), 3);
        assert_eq!(char_to_byte(s, 3), 6);
        assert_eq!(char_to_byte(s, 9), s.len());
        assert_eq!(byte_to_char(s, 3), Some(2));
        assert_eq!(byte_to_char(s, 4), None);
        assert_eq!(byte_to_char(s, s.len()), Some(4));
    }

    #[test]
    fn boundaries() {
        let s = "a日b".as_bytes();
        assert!(at_char_boundary(s, 0));
        assert!(at_char_boundary(s, 1));
        assert!(!at_char_boundary(s, 2));
        assert!(!at_char_boundary(s, 3));
        assert!(at_char_boundary(s, 4));
        assert!(at_char_boundary(s, 5));
        // Stray continuation bytes are characters of their own.
        assert!(at_char_boundary(b"a\x80\x80", 2));
        assert!(at_char_boundary(b"\xe6\x97a", 1));
    }

    #[test]
    fn pattern_escapes_invalid_bytes() {
        assert_eq!(pattern_source(b"a\xffb"), "a(?-u:\\xFF)b");
        assert_eq!(pattern_source(b"ab"), "ab");
    }
}

#[cfg(test)]
mod ascii_tests {
    use super::{char_count, is_ascii};

    #[test]
    fn a_non_ascii_byte_is_found_at_every_position_of_every_short_length() {
        for len in 0..80 {
            let ascii = vec![b'a'; len];
            assert!(is_ascii(&ascii));
            assert_eq!(char_count(&ascii), len);
            for at in 0..len {
                let mut b = ascii.clone();
                b[at] = 0xC3;
                assert!(!is_ascii(&b), "len {len}, at {at}");
                // A lone lead byte is invalid: it counts as one character.
                assert_eq!(char_count(&b), len);
            }
        }
        assert_eq!(char_count("héllo wörld, ünïcode!".as_bytes()), 21);
    }

    #[test]
    fn words_are_found_sixteen_bytes_at_a_time_as_byte_by_byte() {
        // Every whitespace byte, control bytes that are not whitespace, words across
        // the 16-byte steps, and every length up to 70.
        let alphabet = b"ab \t\n\x0b\x0c\r\x08\x0e\x1f!\xc3\xa9 x";
        let mut seed = 7u64;
        for len in 0..70 {
            for _ in 0..40 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        alphabet[(seed >> 33) as usize % alphabet.len()]
                    })
                    .collect();
                let mut got = Vec::new();
                super::word_spans(&s, &mut got);
                let mut want = Vec::new();
                let mut i = 0;
                while i < s.len() {
                    while i < s.len() && crate::builtins::number::is_space(s[i]) {
                        i += 1;
                    }
                    let start = i;
                    while i < s.len() && !crate::builtins::number::is_space(s[i]) {
                        i += 1;
                    }
                    if i > start {
                        want.push((start, i));
                    }
                }
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&s));
            }
        }
    }

    #[test]
    fn the_short_search_agrees_with_memmem() {
        let hays: [&[u8]; 6] = [
            b"",
            b"a",
            b"ERROR at the end ERROR",
            b"xxERRORyy",
            b"abcabcabd",
            b"ERRO",
        ];
        let needles: [&[u8]; 7] = [b"E", b"ERROR", b"abd", b"cab", b"ERRORS", b"d", b" at"];
        for h in hays {
            for n in needles {
                assert_eq!(
                    super::find_short(h, n),
                    memchr::memmem::find(h, n).is_some(),
                    "{:?} in {:?}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(h)
                );
            }
        }
    }
}
