//! CSV, TSV and LTSV (spec 6.13, D63).
//!
//! The record parser is a small RFC 4180 state machine written for line input (rather
//! than the `csv` crate, whose reader wants a byte stream): the runtime delivers one
//! line at a time, so a record whose quoted field is still open at the end of a line
//! continues with the next line (joined with `\n`). The parser keeps its state between
//! lines instead of re-joining and re-parsing. A line without any `"` (the common case)
//! is split in place; otherwise fields are decoded into one reusable byte buffer. Field
//! bounds live in a second reusable vector, so a record costs no allocation beyond the
//! values it produces (and rows with a header share one `Fields` list).
//!
//! Field values (D63): unquoted fields matching the decimal syntax of `number()` are
//! numbers; fields starting with a digit that parse as a time with a four-digit year
//! (the strict mode of the `time(s)` parser in `builtins::time`) are times; everything
//! else is a string.

use std::sync::Arc;

use memchr::memchr;

use crate::eval::ops::Num;
use crate::eval::print::inspect_plain;
use crate::eval::value::Fields;
use crate::ext::{
    Args, Array, Lent, Lines, Records, Registry, Role, RuntimeError, Stage, StageContext, Str,
    Stream, Time, Value,
};

// ---------------------------------------------------------------------------------
// Field inference (D63)
// ---------------------------------------------------------------------------------

/// The inferred type of a field; the first data record fixes one per column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Number,
    Time,
    Str,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Int(_) | Value::Float(_) => Kind::Number,
            Value::Time(_) => Kind::Time,
            _ => Kind::Str,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Number => "number",
            Kind::Time => "time",
            Kind::Str => "string",
        }
    }
}

#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Exact powers of ten representable as f64 (Clinger's fast path).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The decimal syntax of `number()` (D58, without its `0x`/`0o` forms) covering the
/// whole field, surrounding whitespace allowed: optional sign, digits with an optional
/// fraction (either side of the `.` may be empty, not both) and an optional exponent.
/// An integer when there is neither fraction nor exponent and it fits 64 bits.
#[inline]
pub fn parse_decimal(s: &[u8]) -> Option<Value> {
    // Fast path: plain digits with at most one `.`, short enough to be exact.
    let n = s.len();
    if n > 0 && n <= 18 {
        let mut mant: u64 = 0;
        let mut i = 0;
        while i < n && s[i].is_ascii_digit() {
            mant = mant * 10 + (s[i] - b'0') as u64;
            i += 1;
        }
        if i == n {
            return Some(Value::Int(mant as i64));
        }
        if s[i] == b'.' && n <= 16 && n > 1 {
            let dot = i;
            i += 1;
            while i < n && s[i].is_ascii_digit() {
                mant = mant * 10 + (s[i] - b'0') as u64;
                i += 1;
            }
            if i == n {
                return Some(Value::Float(mant as f64 / POW10[n - dot - 1]));
            }
        }
        // A digit run ended by a character the general syntax cannot continue with
        // (`2015-08-01`, `12abc`, `1.2.3`): not a number.
        if s[0].is_ascii_digit() && !matches!(s[i], b'.' | b'e' | b'E') && !is_space(s[i]) {
            return None;
        }
    }
    parse_decimal_general(s)
}

fn parse_decimal_general(s: &[u8]) -> Option<Value> {
    let mut a = 0;
    let mut b = s.len();
    while a < b && is_space(s[a]) {
        a += 1;
    }
    while b > a && is_space(s[b - 1]) {
        b -= 1;
    }
    let t = &s[a..b];
    let mut i = 0;
    let neg = match t.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    // Mantissa digits, accumulated while they fit (first 19 significant digits).
    let mut mant: u64 = 0;
    let mut ndigits = 0usize; // significant digits accumulated in `mant`
    let mut dropped = false; // digits beyond what `mant` holds
    let mut exp10: i64 = 0;
    let int_start = i;
    while i < t.len() && t[i].is_ascii_digit() {
        let d = (t[i] - b'0') as u64;
        if ndigits < 19 {
            if mant != 0 || d != 0 {
                ndigits += 1;
            }
            mant = mant * 10 + d;
        } else {
            dropped = true;
            exp10 += 1;
        }
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    let mut is_float = false;
    if i < t.len() && t[i] == b'.' {
        is_float = true;
        i += 1;
        let fs = i;
        while i < t.len() && t[i].is_ascii_digit() {
            let d = (t[i] - b'0') as u64;
            if ndigits < 19 {
                if mant != 0 || d != 0 {
                    ndigits += 1;
                }
                mant = mant * 10 + d;
                exp10 -= 1;
            } else {
                dropped = true;
            }
            i += 1;
        }
        frac_digits = i - fs;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if i < t.len() && (t[i] == b'e' || t[i] == b'E') {
        is_float = true;
        i += 1;
        let mut eneg = false;
        if i < t.len() && (t[i] == b'+' || t[i] == b'-') {
            eneg = t[i] == b'-';
            i += 1;
        }
        let es = i;
        let mut e: i64 = 0;
        while i < t.len() && t[i].is_ascii_digit() {
            e = (e * 10 + (t[i] - b'0') as i64).min(1_000_000);
            i += 1;
        }
        if i == es {
            return None;
        }
        exp10 += if eneg { -e } else { e };
    }
    if i != t.len() {
        return None;
    }
    if !is_float {
        if !dropped {
            if neg {
                if mant <= i64::MAX as u64 + 1 {
                    return Some(Value::Int((mant as i64).wrapping_neg()));
                }
            } else if mant <= i64::MAX as u64 {
                return Some(Value::Int(mant as i64));
            }
        }
        // Too large for 64 bits: a float (D58).
    } else if !dropped && mant < (1u64 << 53) && (-22..=22).contains(&exp10) {
        let m = mant as f64;
        let f = if exp10 < 0 {
            m / POW10[(-exp10) as usize]
        } else {
            m * POW10[exp10 as usize]
        };
        return Some(Value::Float(if neg { -f } else { f }));
    }
    // Slow path: the standard library's correctly rounded parser on validated text.
    let text = std::str::from_utf8(t).ok()?;
    text.parse::<f64>().ok().map(Value::Float)
}

/// Time inference (D63): a field starting with a digit that is a time of 6.11 with a
/// four-digit year covering the whole field (the parser of `time(s)` in its strict
/// mode; `YYYYMMDD` only with a time part, so a plain 8-digit number stays a number).
#[inline]
pub fn infer_time(s: &[u8]) -> Option<Time> {
    if s.len() < 8 || !s[0].is_ascii_digit() {
        return None;
    }
    crate::builtins::time::parse_time_strict_year4(s)
}

/// The number an unquoted field is, if it is one.
#[inline]
fn field_number(s: &[u8]) -> Option<Value> {
    // Cheap reject: a number starts (after whitespace) with a digit, sign or `.`.
    let c = *s.first()?;
    if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.') || is_space(c) {
        parse_decimal(s)
    } else {
        None
    }
}

/// The value of one field: unquoted fields may be numbers; quoted and unquoted fields
/// starting with a digit may be times; everything else is a string.
#[inline]
fn infer_field(s: &[u8], quoted: bool) -> Value {
    if !quoted {
        if let Some(v) = field_number(s) {
            return v;
        }
    }
    if let Some(t) = infer_time(s) {
        return Value::time(t);
    }
    Value::bytes(s)
}

/// The kind of an unquoted field without making its value: `(kind, the number)`,
/// as `Kind::of(&infer_field(s, false))` would say.
#[inline]
fn field_kind(s: &[u8]) -> (Kind, Option<Num>) {
    match field_number(s) {
        Some(Value::Int(i)) => (Kind::Number, Some(Num::Int(i))),
        Some(Value::Float(f)) => (Kind::Number, Some(Num::Float(f))),
        _ if infer_time(s).is_some() => (Kind::Time, None),
        _ => (Kind::Str, None),
    }
}

/// A line without quotes as the row `csv` makes of it (fields split at `sep`).
fn plain_row(line: &[u8], sep: u8, fields: &Fields) -> Value {
    let items = line
        .split(|&b| b == sep)
        .map(|f| infer_field(f, false))
        .collect();
    Value::Array(Arc::new(Array {
        items,
        fields: Some(fields.clone()),
        class: None,
    }))
}

// ---------------------------------------------------------------------------------
// CSV / TSV
// ---------------------------------------------------------------------------------

/// Where header detection stands.
enum Phase {
    /// No record seen yet.
    First,
    /// The first record was all strings: held back as a possible header.
    Candidate(Vec<Value>),
    /// Header settled (`fields` set or not); records are data.
    Data,
}

struct Csv {
    name: &'static str,
    sep: u8,
    /// `Some(true)`: first record is the header; `Some(false)`: never; `None`: guess.
    header: Option<bool>,
    // Parser state.
    buf: Vec<u8>,
    bounds: Vec<(u32, u32, bool)>,
    field_start: usize,
    field_quoted: bool,
    /// Inside a quoted field that continues on the next line.
    in_quotes: bool,
    // Record state.
    phase: Phase,
    nfields: usize,
    fields: Option<Fields>,
    kinds: Vec<Kind>,
    warned: Vec<bool>,
    /// The stage after refused lent records (`on_lines_lending`): never again.
    records_refused: bool,
    /// The numbers of the records being lent (reused).
    numbers: Vec<Option<Num>>,
    /// While lending, rows are held back here (`on_lines_lending`).
    held: Option<Vec<Value>>,
}

impl Csv {
    fn new(name: &'static str, sep: u8, header: Option<bool>) -> Csv {
        Csv {
            name,
            sep,
            header,
            buf: Vec::with_capacity(256),
            bounds: Vec::with_capacity(16),
            field_start: 0,
            field_quoted: false,
            in_quotes: false,
            phase: Phase::First,
            nfields: 0,
            fields: None,
            kinds: Vec::new(),
            warned: Vec::new(),
            records_refused: false,
            numbers: Vec::new(),
            held: None,
        }
    }

    #[inline]
    fn end_field(&mut self) {
        self.bounds.push((
            self.field_start as u32,
            self.buf.len() as u32,
            self.field_quoted,
        ));
        self.field_start = self.buf.len();
    }

    /// Feeds one line (without its line terminator). Returns true when a record is
    /// complete in `buf`/`bounds`, false when a quoted field continues.
    fn parse_line(&mut self, line: &[u8]) -> bool {
        let sep = self.sep;
        let n = line.len();
        let mut i = 0;
        let mut in_quoted = false;
        if self.in_quotes {
            self.buf.push(b'\n');
            in_quoted = true;
        } else {
            self.buf.clear();
            self.bounds.clear();
            self.field_start = 0;
        }
        loop {
            if !in_quoted {
                // At the start of a field.
                if i < n && line[i] == b'"' {
                    self.field_quoted = true;
                    in_quoted = true;
                    i += 1;
                } else {
                    self.field_quoted = false;
                }
            }
            if in_quoted {
                loop {
                    match memchr(b'"', &line[i..]) {
                        None => {
                            self.buf.extend_from_slice(&line[i..]);
                            self.in_quotes = true;
                            return false;
                        }
                        Some(k) => {
                            self.buf.extend_from_slice(&line[i..i + k]);
                            i += k + 1;
                            if i < n && line[i] == b'"' {
                                self.buf.push(b'"');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                in_quoted = false;
                self.in_quotes = false;
            }
            // Unquoted text (or text after a closing quote, kept literally) up to the
            // separator.
            match memchr(sep, &line[i..]) {
                None => {
                    self.buf.extend_from_slice(&line[i..]);
                    self.end_field();
                    return true;
                }
                Some(k) => {
                    self.buf.extend_from_slice(&line[i..i + k]);
                    self.end_field();
                    i += k + 1;
                }
            }
        }
    }

    /// The inferred values of the fields in `bounds` (ranges of `src`).
    fn infer_record(&self, src: &[u8]) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.bounds.len());
        for &(a, b, q) in &self.bounds {
            out.push(infer_field(&src[a as usize..b as usize], q));
        }
        out
    }

    /// Fast path for a line without quotes (the common case): the fields are the
    /// separator-delimited ranges of the line itself, nothing is copied. Returns false
    /// (bounds unusable) when the line contains a quote.
    fn split_plain(&mut self, line: &[u8]) -> bool {
        self.bounds.clear();
        let sep = self.sep;
        let mut start = 0;
        for (i, &b) in line.iter().enumerate() {
            if b == sep {
                self.bounds.push((start as u32, i as u32, false));
                start = i + 1;
            } else if b == b'"' {
                return false;
            }
        }
        self.bounds.push((start as u32, line.len() as u32, false));
        true
    }

    fn count_error(&self, got: usize) -> RuntimeError {
        RuntimeError::new(format!(
            "{}: expected {} fields, got {}",
            self.name, self.nfields, got
        ))
    }

    fn emit(&mut self, items: Vec<Value>, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let row = Value::Array(Arc::new(Array {
            items,
            fields: self.fields.clone(),
            class: None,
        }));
        match self.held.as_mut() {
            Some(held) => {
                held.push(row);
                Ok(())
            }
            None => cx.emit(row),
        }
    }

    /// Compares a data record's field types with the column types; warns once per
    /// column (the record is kept).
    fn check_kinds(&mut self, items: &[Value], cx: &StageContext) {
        for (i, v) in items.iter().enumerate() {
            self.check_kind(i, Kind::of(v), || v.clone(), cx);
        }
    }

    /// Compares field `i`'s type `k` with its column's; `value` gives the field for
    /// the warning.
    fn check_kind(&mut self, i: usize, k: Kind, value: impl FnOnce() -> Value, cx: &StageContext) {
        if k != self.kinds[i] && !self.warned[i] {
            self.warned[i] = true;
            let col = match self.fields.as_ref().and_then(|f| f[i].clone()) {
                Some(name) => format!("column {} ({})", i + 1, name.to_str_lossy()),
                None => format!("column {}", i + 1),
            };
            cx.globals().report_warning(&format!(
                "{}: type mismatch in {col}: expected {}, got {} {} (kept)",
                self.name,
                self.kinds[i].name(),
                k.name(),
                inspect_plain(&value())
            ));
        }
    }

    fn set_kinds(&mut self, items: &[Value]) {
        self.kinds = items.iter().map(Kind::of).collect();
        self.warned = vec![false; items.len()];
    }

    /// Handles one complete record whose fields are `bounds` ranges of `src`.
    fn record(&mut self, src: &[u8], cx: &mut StageContext) -> Result<(), RuntimeError> {
        let m = self.bounds.len();
        match std::mem::replace(&mut self.phase, Phase::Data) {
            Phase::First => {
                self.nfields = m;
                match self.header {
                    Some(true) => {
                        let names: Vec<Option<Str>> = self
                            .bounds
                            .iter()
                            .map(|&(a, b, _)| header_name(&src[a as usize..b as usize]))
                            .collect();
                        self.fields = Some(Fields::from(names));
                        Ok(())
                    }
                    Some(false) => {
                        let items = self.infer_record(src);
                        self.set_kinds(&items);
                        self.emit(items, cx)
                    }
                    None => {
                        let items = self.infer_record(src);
                        if items.iter().all(|v| matches!(v, Value::Str(_))) {
                            self.phase = Phase::Candidate(items);
                            Ok(())
                        } else {
                            self.set_kinds(&items);
                            self.emit(items, cx)
                        }
                    }
                }
            }
            Phase::Candidate(first) => {
                if m != self.nfields {
                    self.phase = Phase::Candidate(first);
                    return Err(self.count_error(m));
                }
                let items = self.infer_record(src);
                if items.iter().all(|v| matches!(v, Value::Str(_))) {
                    // Two all-string records: no header after all (D63).
                    self.set_kinds(&first);
                    self.emit(first, cx)?;
                    self.emit(items, cx)
                } else {
                    let names: Vec<Option<Str>> = first
                        .iter()
                        .map(|v| header_name(v.as_bytes().unwrap_or_default()))
                        .collect();
                    self.fields = Some(Fields::from(names));
                    self.set_kinds(&items);
                    self.emit(items, cx)
                }
            }
            Phase::Data => {
                if m != self.nfields {
                    return Err(self.count_error(m));
                }
                let items = self.infer_record(src);
                if self.kinds.is_empty() {
                    self.set_kinds(&items);
                } else {
                    self.check_kinds(&items, cx);
                }
                self.emit(items, cx)
            }
        }
    }
}

/// A header field becomes a field name; an empty one gives an unnamed field.
fn header_name(s: &[u8]) -> Option<Str> {
    if s.is_empty() {
        None
    } else {
        Some(Str::new(s))
    }
}

fn string_required(name: &str, v: &Value) -> RuntimeError {
    RuntimeError::new(format!(
        "{name}: string required (value: {})",
        inspect_plain(v)
    ))
}

#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

impl Csv {
    /// One line of input (a record, or part of one with a quoted newline).
    fn on_line(&mut self, line: &[u8], cx: &mut StageContext) -> Result<(), RuntimeError> {
        let line = strip_cr(line);
        if line.is_empty() && !self.in_quotes {
            return Ok(());
        }
        if !self.in_quotes && line.len() < u32::MAX as usize && self.split_plain(line) {
            return self.record(line, cx);
        }
        if line.len() + self.buf.len() >= u32::MAX as usize {
            self.in_quotes = false;
            return Err(RuntimeError::new(format!("{}: record too long", self.name)));
        }
        if self.parse_line(line) {
            let buf = std::mem::take(&mut self.buf);
            let r = self.record(&buf, cx);
            self.buf = buf;
            r
        } else {
            Ok(())
        }
    }
}

impl Csv {
    /// Lends the records of `lines` (without quotes, `numbers` holding their fields'
    /// numbers) to the next stage, or emits them as rows if it refuses them.
    fn lend(
        &mut self,
        lines: &[&[u8]],
        numbers: &[Option<Num>],
        cx: &mut StageContext,
        pass: &mut dyn FnMut(Lent<'_>) -> bool,
    ) {
        if lines.is_empty() {
            return;
        }
        let Some(fields) = self.fields.clone() else {
            unreachable!("records are lent once the header is known")
        };
        let sep = self.sep;
        let row = |r: usize| plain_row(lines[r], sep, &fields);
        let records = Records::new(Some(&fields), self.nfields, numbers, (&[], 0), &row);
        if !pass(Lent::Records(&records)) {
            self.records_refused = true;
            for r in 0..records.len() {
                let _ = cx.emit(records.row(r));
            }
        }
    }
}

impl Stage for Csv {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let Value::Str(s) = &v else {
            return Err(string_required(self.name, &v));
        };
        self.on_line(s.as_bytes(), cx)
    }

    /// Lines: records of lines without quotes, once the header and the column types are
    /// settled, go to the next stage as [`Records`] at the end of the block (no row is
    /// made unless it asks); any other line goes the usual way. Once such a line makes
    /// a row, the records before it are made rows too and the rest of the block goes
    /// the usual way, so that everything stays in order, messages included.
    fn on_lent(
        &mut self,
        lent: Lent<'_>,
        cx: &mut StageContext,
        pass: &mut dyn FnMut(Lent<'_>) -> bool,
    ) -> bool {
        let Lent::Lines(lines) = lent else {
            return false;
        };
        let mut numbers = std::mem::take(&mut self.numbers);
        numbers.clear();
        let mut pending: Vec<&[u8]> = Vec::new();
        let mut lending = !self.records_refused;
        for line in lines.iter() {
            if lending {
                let plain = strip_cr(line);
                let lendable = matches!(self.phase, Phase::Data)
                    && self.fields.is_some()
                    && !self.kinds.is_empty()
                    && !self.in_quotes
                    && !plain.is_empty()
                    && plain.len() < u32::MAX as usize
                    && self.split_plain(plain)
                    && self.bounds.len() == self.nfields;
                if lendable {
                    for j in 0..self.nfields {
                        let (a, b, _) = self.bounds[j];
                        let field = &plain[a as usize..b as usize];
                        let (kind, number) = field_kind(field);
                        if kind != self.kinds[j] {
                            self.check_kind(j, kind, || infer_field(field, false), cx);
                        }
                        numbers.push(number);
                    }
                    pending.push(plain);
                    continue;
                }
                self.held = Some(Vec::new());
                if let Err(e) = self.on_line(line, cx) {
                    cx.report(e);
                }
                let held = self.held.take().unwrap_or_default();
                if !held.is_empty() {
                    // A row: the pending records go before it, as rows.
                    let fields = self.fields.clone();
                    for p in pending.drain(..) {
                        let row = match &fields {
                            Some(f) => plain_row(p, self.sep, f),
                            None => unreachable!("records are pending once the header is known"),
                        };
                        let _ = cx.emit(row);
                    }
                    for row in held {
                        let _ = cx.emit(row);
                    }
                    lending = false;
                }
                continue;
            }
            if let Err(e) = self.on_line(line, cx) {
                cx.report(e);
            }
        }
        if lending {
            self.lend(&pending, &numbers, cx, pass);
        }
        numbers.clear();
        self.numbers = numbers;
        true
    }

    /// Records parsed straight from the reader's buffer.
    fn on_lines(&mut self, lines: &Lines<'_>, cx: &mut StageContext) -> bool {
        for line in lines.iter() {
            if let Err(e) = self.on_line(line, cx) {
                cx.report(e);
            }
        }
        true
    }

    fn on_close(&mut self, cx: &mut StageContext) -> Result<(), RuntimeError> {
        if let Phase::Candidate(first) = std::mem::replace(&mut self.phase, Phase::Data) {
            self.emit(first, cx)?;
        }
        if self.in_quotes {
            self.in_quotes = false;
            return Err(RuntimeError::new(format!(
                "{}: unterminated quoted field",
                self.name
            )));
        }
        Ok(())
    }
}

fn csv_constructor(name: &'static str, sep: u8, vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new(name, vals);
    a.arity(0, 1)?;
    let header = match vals.first() {
        None | Some(Value::Nil) => None,
        Some(_) => Some(a.boolean(0)?),
    };
    Ok(Stream::value(Role::Filter, Csv::new(name, sep, header)))
}

// ---------------------------------------------------------------------------------
// LTSV
// ---------------------------------------------------------------------------------

struct Ltsv {
    /// Field names of the previous line, reused while the labels repeat.
    fields: Option<Fields>,
    labels: Vec<(u32, u32, bool)>,
}

impl Stage for Ltsv {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        let Value::Str(s) = &v else {
            return Err(string_required("ltsv", &v));
        };
        let line = strip_cr(s.as_bytes());
        if line.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(self.labels.len().max(4));
        self.labels.clear();
        let mut pos = 0;
        loop {
            let end = memchr(b'\t', &line[pos..]).map_or(line.len(), |k| pos + k);
            let item = &line[pos..end];
            if !item.is_empty() {
                match memchr(b':', item) {
                    Some(k) => {
                        self.labels.push((pos as u32, (pos + k) as u32, true));
                        items.push(infer_field(&item[k + 1..], false));
                    }
                    None => {
                        self.labels.push((0, 0, false));
                        items.push(infer_field(item, false));
                    }
                }
            }
            if end == line.len() {
                break;
            }
            pos = end + 1;
        }
        let same = self.fields.as_ref().is_some_and(|f| {
            f.len() == self.labels.len()
                && f.iter()
                    .zip(&self.labels)
                    .all(|(name, &(a, b, has))| match name {
                        Some(n) => has && n.as_bytes() == &line[a as usize..b as usize],
                        None => !has,
                    })
        });
        if !same {
            let names: Vec<Option<Str>> = self
                .labels
                .iter()
                .map(|&(a, b, has)| has.then(|| Str::new(&line[a as usize..b as usize])))
                .collect();
            self.fields = Some(Fields::from(names));
        }
        cx.emit(Value::Array(Arc::new(Array {
            items,
            fields: self.fields.clone(),
            class: None,
        })))
    }
}

pub fn register(r: &Registry) {
    r.define_stage_fn("csv", |_cx, vals| csv_constructor("csv", b',', vals));
    r.define_stage_fn("tsv", |_cx, vals| csv_constructor("tsv", b'\t', vals));
    r.define_stage_fn("ltsv", |_cx, vals| {
        Args::new("ltsv", vals).arity(0, 0)?;
        Ok(Stream::value(
            Role::Filter,
            Ltsv {
                fields: None,
                labels: Vec::new(),
            },
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::TimeOffset;

    fn num(s: &str) -> Option<String> {
        parse_decimal(s.as_bytes()).map(|v| format!("{v:?}"))
    }

    #[test]
    fn decimal_numbers() {
        assert_eq!(num("12").as_deref(), Some("12"));
        assert_eq!(num(" -3 ").as_deref(), Some("-3"));
        assert_eq!(num("+4").as_deref(), Some("4"));
        assert_eq!(num("1e3").as_deref(), Some("1000"));
        assert_eq!(num("2.50").as_deref(), Some("2.5"));
        assert_eq!(num("3.").as_deref(), Some("3"));
        assert_eq!(num(".5").as_deref(), Some("0.5"));
        assert_eq!(num("0.1").as_deref(), Some("0.1"));
        assert!(matches!(parse_decimal(b"3."), Some(Value::Float(_))));
        assert!(matches!(parse_decimal(b"1e3"), Some(Value::Float(_))));
        assert!(matches!(
            parse_decimal(b"-9223372036854775808"),
            Some(Value::Int(i64::MIN))
        ));
        assert!(matches!(
            parse_decimal(b"9223372036854775808"),
            Some(Value::Float(_))
        ));
        assert_eq!(
            parse_decimal(b"123456789012345678901234.5").and_then(|v| v.as_f64()),
            Some(123456789012345678901234.5)
        );
        assert_eq!(
            parse_decimal(b"0.000000000000000000000000001").and_then(|v| v.as_f64()),
            Some(1e-27)
        );
        for bad in [
            "",
            " ",
            ".",
            "-",
            "1.2.3",
            "127.0.0.1",
            "0x10",
            "12abc",
            "1e",
            "e5",
            "inf",
            "nan",
            "1 2",
            "--1",
            "1e+",
        ] {
            assert_eq!(num(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times() {
        let t = infer_time(b"2015-08-01").unwrap();
        assert_eq!(t.offset, TimeOffset::DateOnly);
        assert_eq!(t.secs, 1438387200);
        let t = infer_time(b"2015.08.01T12:00:00+09:00").unwrap();
        assert_eq!(t.secs, 1438398000);
        let t = infer_time(b"2015/8/1 03:00Z").unwrap();
        assert_eq!(t.secs, 1438398000);
        let t = infer_time(b"20150801T030000.25Z").unwrap();
        assert_eq!((t.secs, t.nanos), (1438398000, 250_000_000));
        let t = infer_time(b"2015-08-01 12:00:00+0900").unwrap();
        assert_eq!(t.secs, 1438398000);
        for bad in [
            "20150801",
            "1.2.3",
            "127.0.0.1",
            "2015-13-01",
            "2015-02-29",
            "2015-08-01x",
            "2015-08-01T25:00",
            "2015-08/01",
            "2015-08-01T12:00+15",
            "12015-08-01",
        ] {
            assert!(infer_time(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(infer_time(b"2016-02-29").is_some());
    }

    fn parse(sep: u8, lines: &[&str]) -> Vec<Vec<(String, bool)>> {
        let mut c = Csv::new("csv", sep, None);
        let mut out = Vec::new();
        for l in lines {
            if c.parse_line(l.as_bytes()) {
                out.push(
                    c.bounds
                        .iter()
                        .map(|&(a, b, q)| {
                            (
                                String::from_utf8_lossy(&c.buf[a as usize..b as usize]).into(),
                                q,
                            )
                        })
                        .collect(),
                );
            }
        }
        out
    }

    #[test]
    fn rfc4180_records() {
        let r = parse(b',', &["a,\"b,c\",,\"\"", "\"x\"\"y\"\"\",z"]);
        assert_eq!(
            r[0],
            vec![
                ("a".into(), false),
                ("b,c".into(), true),
                ("".into(), false),
                ("".into(), true)
            ]
        );
        assert_eq!(r[1], vec![("x\"y\"".into(), true), ("z".into(), false)]);
        let r = parse(b',', &["\"two", "", "lines\",0"]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0][0], ("two\n\nlines".into(), true));
        assert_eq!(r[0][1], ("0".into(), false));
        let r = parse(b'\t', &["a\tb,c"]);
        assert_eq!(r[0].len(), 2);
    }
}
