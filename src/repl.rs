//! The interactive REPL (specification 7.2, D67): what `streem` runs when no program is
//! given and standard input is a terminal.
//!
//! It is a thin loop around [`Session`]: a line editor (rustyline) reads a line, the
//! session evaluates the text read so far, and [`Outcome::Incomplete`] (the parser's own
//! "the input ended inside a statement" answer) asks for another line under the
//! continuation prompt. Bindings persist from one input to the next; streams an input
//! connects keep running in the background, and their output is printed above the
//! prompt (see [`TerminalSink`]). The decisions are recorded in `docs/repl.md`.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rustyline::completion::{Completer, Pair};
use rustyline::config::Behavior;
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, ExternalPrinter, Helper};

use crate::eval::value::Value;
use crate::syntax::lexer::lex;
use crate::syntax::token::TokenKind;
use crate::{Interpreter, Outcome, Session};

/// The prompt of a new input.
pub const PROMPT: &str = "streem> ";
/// The prompt of a continuation line (an input the parser found incomplete).
pub const CONTINUATION: &str = "   ...> ";
/// The name of every input in messages (`(repl):1:5: ...`); the line numbers count
/// within the input.
const INPUT_NAME: &str = "(repl)";
/// History entries kept in the file.
const HISTORY_SIZE: usize = 1000;

/// The language's keywords (spec 2.5), offered by completion beside the names.
const KEYWORDS: &[&str] = &[
    "if",
    "else",
    "case",
    "skip",
    "emit",
    "return",
    "def",
    "method",
    "namespace",
    "class",
    "import",
    "new",
    "nil",
    "true",
    "false",
];

/// The REPL's own commands, recognised only when they are the whole input line.
const COMMANDS: &[&str] = &[":help", ":quit", ":q", ":exit"];

/// The text `:help` prints.
pub fn help_text() -> String {
    format!(
        "\
Streem {version}, interactive.

Type a statement and press Enter. Its value is shown when it is an expression;
streams it connects start at once and keep running in the background while you
type (their output appears above the prompt).

  :help, help        show this text
  :quit, :q, :exit   leave (so do Ctrl-D and exit(n))

Editing:
  Ctrl-C             abandon the current input (also a half-typed multi-line one)
  Ctrl-D             leave, on an empty line
  Tab                complete names in scope, builtins and keywords; after `.`,
                     methods
  Up/Down, Ctrl-R    history, kept in {history}

Multi-line input: an unfinished statement (an open bracket, a trailing operator,
`if (...)` awaiting its branch) continues on the next line at the `...>` prompt.

Bindings persist from one input to the next. An input may rebind a name that
an earlier input defined (`x = 1`, later `x = \"one\"`; or `def f` again): the
new binding is used from then on, while functions defined before keep the one
they were compiled with. Binding the same name twice within ONE input is still
an error, as in a program file.

Values: `nil` and streams are not shown. `stdin` reads the same terminal as the
prompt; feed data with a file instead (`fread(\"data.txt\") | ...`).
",
        version = env!("CARGO_PKG_VERSION"),
        history = history_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "memory only (no HOME)".into()),
    )
}

/// `$XDG_DATA_HOME/streem/history`, else `~/.local/share/streem/history`.
pub fn history_path() -> Option<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if PathBuf::from(&d).is_absolute() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
            PathBuf::from(home).join(".local").join("share")
        }
    };
    Some(data.join("streem").join("history"))
}

/// Runs the REPL until Ctrl-D or `:quit`; returns the exit status (0, or 1 when the
/// terminal failed).
pub fn run(argv: Vec<String>) -> i32 {
    let session = match Interpreter::new().session(argv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("streem: cannot start the session: {e}");
            return 1;
        }
    };
    let shared = Arc::new(Shared {
        session: Mutex::new(session),
    });
    let config = Config::builder()
        .max_history_size(HISTORY_SIZE)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| {
            b.history_ignore_space(true)
                // The prompt and the editing on the terminal even when standard
                // output is redirected (`streem > out.txt`): values go to stdout.
                .behavior(Behavior::PreferTerm)
                .completion_type(CompletionType::List)
                .auto_add_history(false)
                .build()
        });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streem: {e}");
            return 1;
        }
    };
    let mut editor: Editor<ReplHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("streem: cannot use the terminal: {e}");
            return 1;
        }
    };
    editor.set_helper(Some(ReplHelper {
        shared: shared.clone(),
        color: io::stdout().is_terminal() && no_color_unset(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing or unreadable history is no reason to complain.
        let _ = editor.load_history(path);
    }
    // Output of background streams: above the prompt while it is shown (when it goes
    // to the terminal the prompt is on).
    let sink = Arc::new(SinkState::default());
    let stdout_is_terminal = io::stdout().is_terminal();
    let printer = match stdout_is_terminal {
        true => editor.create_external_printer().ok(),
        false => None,
    };
    if let Some(printer) = printer {
        *sink.printer.lock() = Some(Box::new(printer));
        let g = shared.session.lock().globals().clone();
        g.out
            .redirect(Box::new(TerminalSink::new(sink.clone(), Fd::Out)));
        if io::stderr().is_terminal() {
            g.err
                .redirect(Box::new(TerminalSink::new(sink.clone(), Fd::Err)));
        }
    }

    say(&format!(
        "Streem {} interactive. Type :help for help, Ctrl-D to leave.\n",
        env!("CARGO_PKG_VERSION")
    ));
    let mut input = String::new();
    let status = loop {
        let prompt = if input.is_empty() {
            PROMPT
        } else {
            CONTINUATION
        };
        let _ = io::stdout().flush();
        sink.prompting.store(true, Ordering::SeqCst);
        let line = editor.readline(prompt);
        sink.prompting.store(false, Ordering::SeqCst);
        match line {
            Ok(line) => {
                if input.is_empty() {
                    match command(&line, &shared) {
                        Some(Command::Quit) => {
                            remember(&mut editor, history.as_ref(), line.trim());
                            break 0;
                        }
                        Some(Command::Help) => {
                            remember(&mut editor, history.as_ref(), line.trim());
                            say(&help_text());
                            continue;
                        }
                        None if line.trim().is_empty() => continue,
                        None => {}
                    }
                }
                input.push_str(&line);
                input.push('\n');
                let outcome = shared.session.lock().eval(INPUT_NAME, &input);
                match outcome {
                    Outcome::Incomplete => continue,
                    Outcome::Done { value } => {
                        if let Some(v) = value.filter(shown) {
                            let text = shared.session.lock().inspect(&v);
                            let mut out = io::stdout().lock();
                            let _ = writeln!(out, "{text}").and_then(|_| out.flush());
                        }
                    }
                    Outcome::Error(e) => {
                        let mut err = io::stderr().lock();
                        let _ = err.write_all(e.as_bytes()).and_then(|_| err.flush());
                    }
                }
                remember(&mut editor, history.as_ref(), input.trim_end());
                input.clear();
            }
            // Ctrl-C: abandon the input, keep the session.
            Err(ReadlineError::Interrupted) => input.clear(),
            // Ctrl-D on an empty line: leave.
            Err(ReadlineError::Eof) => {
                say("\n");
                break 0;
            }
            Err(e) => {
                eprintln!("streem: reading the terminal failed: {e}");
                break 1;
            }
        }
    };
    let g = shared.session.lock().globals().clone();
    g.flush_all();
    status
}

/// Writes the REPL's own text (banner, help): to standard output, or to standard
/// error when standard output is not a terminal (it then holds the values only).
fn say(text: &str) {
    if io::stdout().is_terminal() {
        let mut out = io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    } else {
        let mut err = io::stderr().lock();
        let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
    }
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether the value of an expression statement is shown. Not `nil` (what `print`
/// gives; Python does the same with `None`), and not a stream: a pipeline's value is
/// the stream it ends in, and what flows through it is what matters (its output
/// would otherwise come after a `<stream>` line, or before it).
fn shown(v: &Value) -> bool {
    !matches!(v, Value::Nil | Value::Stream(_))
}

/// Adds an input to the history and saves the history at once, so that it survives
/// `exit(n)` and a Ctrl-C that ends a running input. Failures are silent.
fn remember(editor: &mut Editor<ReplHelper, DefaultHistory>, file: Option<&PathBuf>, text: &str) {
    if text.is_empty() || editor.add_history_entry(text).ok() != Some(true) {
        return;
    }
    if let Some(path) = file {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
}

enum Command {
    Help,
    Quit,
}

/// A REPL command: the whole line, outside a multi-line input. `help` is one unless
/// the session has bound the name `help` itself.
fn command(line: &str, shared: &Shared) -> Option<Command> {
    match line.trim() {
        ":help" | ":h" | ":?" => Some(Command::Help),
        "help" => {
            let bound = shared
                .session
                .lock()
                .completion_names(false)
                .iter()
                .any(|n| n == "help");
            (!bound).then_some(Command::Help)
        }
        ":quit" | ":q" | ":exit" => Some(Command::Quit),
        _ => None,
    }
}

/// What the line editor's helper and the loop share.
struct Shared {
    session: Mutex<Session>,
}

/// The line editor's helper: completion and highlighting.
struct ReplHelper {
    shared: Arc<Shared>,
    color: bool,
}

impl Helper for ReplHelper {}
impl Hinter for ReplHelper {
    type Hint = String;
}
impl Validator for ReplHelper {}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, candidates) = completions(line, pos, |methods| {
            self.shared.session.lock().completion_names(methods)
        });
        Ok((
            start,
            candidates
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

/// The completions of the word that ends at `pos`: where it starts and the candidates.
/// `names(true)` gives method names (after `.`), `names(false)` the names in scope.
fn completions(
    line: &str,
    pos: usize,
    names: impl FnOnce(bool) -> Vec<String>,
) -> (usize, Vec<String>) {
    let bytes = line.as_bytes();
    let pos = pos.min(bytes.len());
    // A REPL command at the start of the line.
    if bytes.first() == Some(&b':') && !line[..pos].contains(char::is_whitespace) {
        let prefix = &line[..pos];
        let found = COMMANDS
            .iter()
            .filter(|c| c.starts_with(prefix))
            .map(|c| c.to_string())
            .collect();
        return (0, found);
    }
    let mut start = pos;
    while start > 0 && is_name_byte(bytes[start - 1]) {
        start -= 1;
    }
    let prefix = &line[start..pos];
    // Not inside a number (`1.5`), and nothing to do in front of a digit.
    if prefix.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return (start, Vec::new());
    }
    let after_dot = start > 0 && bytes[start - 1] == b'.';
    let mut found: Vec<String> = names(after_dot)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    if !after_dot {
        found.extend(
            KEYWORDS
                .iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| k.to_string()),
        );
        found.sort();
        found.dedup();
    }
    (start, found)
}

const RESET: &str = "\x1b[0m";
const KEYWORD: &str = "\x1b[1;35m";
const STRING: &str = "\x1b[32m";
const NUMBER: &str = "\x1b[36m";
const SYMBOL: &str = "\x1b[33m";
const COMMENT: &str = "\x1b[2m";

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.color {
            return Cow::Borrowed(line);
        }
        Cow::Owned(highlight(line))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color
    }
}

/// The line with ANSI colours for keywords, literals and comments, from the lexer's
/// tokens (an unterminated string runs to the end of the line).
fn highlight(line: &str) -> String {
    let (tokens, error) = lex(line.as_bytes());
    let mut out = String::with_capacity(line.len() * 2);
    let mut at = 0;
    let gap = |out: &mut String, text: &str| {
        // Between tokens: spaces, and a comment from `#` to the end of its line.
        match text.find('#') {
            Some(i) => {
                out.push_str(&text[..i]);
                let rest = &text[i..];
                let end = rest.find('\n').unwrap_or(rest.len());
                out.push_str(COMMENT);
                out.push_str(&rest[..end]);
                out.push_str(RESET);
                out.push_str(&rest[end..]);
            }
            None => out.push_str(text),
        }
    };
    for t in &tokens {
        let (s, e) = (
            (t.span.start as usize).min(line.len()),
            (t.span.end as usize).min(line.len()),
        );
        if s < at || !line.is_char_boundary(s) || !line.is_char_boundary(e) {
            continue;
        }
        let style = match &t.kind {
            TokenKind::Eof | TokenKind::Error => break,
            TokenKind::Str(_) => Some(STRING),
            TokenKind::Int(_) | TokenKind::Float(_) | TokenKind::Time(_) => Some(NUMBER),
            TokenKind::Symbol(_) | TokenKind::Label(_) => Some(SYMBOL),
            TokenKind::If
            | TokenKind::Else
            | TokenKind::Case
            | TokenKind::Skip
            | TokenKind::Emit
            | TokenKind::Return
            | TokenKind::Def
            | TokenKind::Method
            | TokenKind::Namespace
            | TokenKind::Class
            | TokenKind::Import
            | TokenKind::New
            | TokenKind::Nil
            | TokenKind::True
            | TokenKind::False => Some(KEYWORD),
            _ => None,
        };
        gap(&mut out, &line[at..s]);
        match style {
            Some(style) => {
                out.push_str(style);
                out.push_str(&line[s..e]);
                out.push_str(RESET);
            }
            None => out.push_str(&line[s..e]),
        }
        at = e;
    }
    match error {
        Some(e)
            if e.incomplete
                && (e.span.start as usize) >= at
                && (e.span.start as usize) <= line.len() =>
        {
            let s = e.span.start as usize;
            if line.is_char_boundary(s) {
                gap(&mut out, &line[at..s]);
                out.push_str(STRING);
                out.push_str(&line[s..]);
                out.push_str(RESET);
            } else {
                out.push_str(&line[at..]);
            }
        }
        _ => gap(&mut out, &line[at..]),
    }
    out
}

/// Where the writers of standard output and error go in the REPL.
#[derive(Default)]
struct SinkState {
    /// The line editor shows the prompt (set around `readline`).
    prompting: AtomicBool,
    /// Prints above the prompt while it is shown.
    printer: Mutex<Option<Box<dyn ExternalPrinter + Send>>>,
}

#[derive(Clone, Copy)]
enum Fd {
    Out,
    Err,
}

/// The sink of the interpreter's ordered writer (`Output`) in the REPL. While an input
/// runs, output goes straight to the terminal, in order with the REPL's own printing.
/// While the prompt is shown, whole lines go through rustyline's external printer, which
/// clears the prompt line, prints them and redraws the prompt with what was typed; an
/// unfinished last line waits for its end (or for the prompt to go away).
struct TerminalSink {
    state: Arc<SinkState>,
    fd: Fd,
    pending: Vec<u8>,
}

impl TerminalSink {
    fn new(state: Arc<SinkState>, fd: Fd) -> TerminalSink {
        TerminalSink {
            state,
            fd,
            pending: Vec::new(),
        }
    }

    fn write_direct(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.fd {
            Fd::Out => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Fd::Err => {
                let mut err = io::stderr().lock();
                err.write_all(bytes)?;
                err.flush()
            }
        }
    }
}

impl Write for TerminalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.state.prompting.load(Ordering::SeqCst) {
            if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
                let mut printer = self.state.printer.lock();
                if let Some(p) = printer.as_mut() {
                    let text = String::from_utf8_lossy(&self.pending[..end + 1]).into_owned();
                    if p.print(text).is_ok() {
                        self.pending.drain(..end + 1);
                        return Ok(());
                    }
                }
            } else {
                return Ok(());
            }
        }
        let bytes = std::mem::take(&mut self.pending);
        self.write_direct(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(methods: bool) -> Vec<String> {
        if methods {
            vec!["length".into(), "lower".into(), "map".into()]
        } else {
            vec!["print".into(), "println_x".into(), "seq".into()]
        }
    }

    #[test]
    fn completes_names_and_keywords() {
        let (start, found) = completions("x = pri", 7, names);
        assert_eq!(start, 4);
        assert_eq!(found, vec!["print", "println_x"]);
        let (start, found) = completions("i", 1, names);
        assert_eq!(start, 0);
        assert_eq!(found, vec!["if", "import"]);
    }

    #[test]
    fn completes_methods_after_a_dot() {
        let (start, found) = completions("\"s\".l", 5, names);
        assert_eq!(start, 4);
        assert_eq!(found, vec!["length", "lower"]);
        let (_, found) = completions("[1].", 4, names);
        assert_eq!(found, vec!["length", "lower", "map"]);
        // Not inside a number.
        let (_, found) = completions("1.5", 3, names);
        assert!(found.is_empty());
    }

    #[test]
    fn completes_commands() {
        let (start, found) = completions(":q", 2, names);
        assert_eq!(start, 0);
        assert_eq!(found, vec![":quit", ":q"]);
        let (_, found) = completions(":he", 3, names);
        assert_eq!(found, vec![":help"]);
    }

    #[test]
    fn highlighting_keeps_the_text() {
        for line in [
            "if (x > 1) print(\"a\") # note",
            "x = \"unterminated",
            "[1, 2.5, :sym, a: 1] | stdout",
            "é = \"ü\"",
            "",
        ] {
            let h = highlight(line);
            let plain = h
                .split('\x1b')
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part
                    } else {
                        &part[part.find('m').unwrap() + 1..]
                    }
                })
                .collect::<String>();
            assert_eq!(plain, line, "{h:?}");
        }
        assert!(highlight("if").contains(KEYWORD));
        assert!(highlight("\"s").contains(STRING));
        assert!(highlight("1 # c").contains(COMMENT));
    }

    #[test]
    fn history_location() {
        // Only the shape: the environment is the test process's own.
        if let Some(p) = history_path() {
            assert!(p.ends_with("streem/history"));
        }
    }
}
