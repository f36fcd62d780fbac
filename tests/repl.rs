//! The interactive REPL (spec 7.2, D67), driven as a person would: the real binary on a
//! pseudo-terminal, typing lines and keys, reading the screen output. Every wait is
//! bounded (`TIMEOUT_MS`), and `HOME`/`XDG_DATA_HOME` point to a fresh temporary
//! directory so that the history never touches the real one.

#![cfg(unix)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rexpect::reader::Options;
use rexpect::session::PtySession;

const TIMEOUT_MS: u64 = 20_000;
const PROMPT: &str = "streem> ";
const CONTINUATION: &str = "   ...> ";

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A fresh, empty directory for one test's home.
fn temp_home() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "streem-repl-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Repl {
    p: PtySession,
    home: PathBuf,
}

impl Repl {
    /// Starts `streem` with no program on a terminal; waits for the banner and prompt.
    fn start(home: &PathBuf) -> Repl {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streem"));
        cmd.env("HOME", home)
            .env_remove("XDG_DATA_HOME")
            .env("TERM", "xterm")
            .env("NO_COLOR", "1");
        let options = Options::new()
            .timeout_ms(Some(TIMEOUT_MS))
            .strip_ansi_escape_codes(true);
        let p = rexpect::session::spawn_with_options(cmd, options).expect("spawn streem");
        let mut r = Repl {
            p,
            home: home.clone(),
        };
        r.expect("interactive. Type :help for help");
        r.prompt();
        r
    }

    fn expect(&mut self, text: &str) -> String {
        match self.p.exp_string(text) {
            Ok(before) => before,
            Err(e) => panic!("waiting for {text:?}: {e}"),
        }
    }

    /// Waits for a fresh prompt: one on a new line (the line editor redraws the line
    /// it edits, prompt included, after a bare `\r`).
    fn prompt(&mut self) -> String {
        self.expect_line_start(PROMPT)
    }

    fn continuation(&mut self) -> String {
        self.expect_line_start(CONTINUATION)
    }

    fn expect_line_start(&mut self, prompt: &str) -> String {
        let re = format!("\n\r?{}", regex_escape(prompt));
        match self.p.exp_regex(&re) {
            Ok((before, _)) => before,
            Err(e) => panic!("waiting for the prompt {prompt:?}: {e}"),
        }
    }

    fn line(&mut self, text: &str) {
        self.p.send_line(text).expect("send a line");
    }

    /// Types keys (no Enter).
    fn keys(&mut self, keys: &str) {
        self.p.send(keys).expect("send keys");
        self.p.flush().expect("send keys");
    }

    /// Waits for lines of output, in order; other text (a prompt redrawn between them)
    /// may come in between: background output may come before or after the prompt.
    fn expect_lines(&mut self, lines: &[&str]) {
        // Each line starts a line; the newline after the last one is left for the
        // prompt that follows.
        let re: Vec<String> = lines.iter().map(|l| regex_escape(l)).collect();
        let re = format!("(?:^|[\\r\\n]){}\\r?", re.join("\\r?\\n(?s:.*?[\\r\\n])??"));
        if let Err(e) = self.p.exp_regex(&re) {
            panic!("waiting for the lines {lines:?}: {e}");
        }
    }

    /// Types a line and returns what it printed before the next prompt.
    fn eval(&mut self, text: &str) -> String {
        self.line(text);
        let out = self.prompt();
        // The echo of the typed line comes first.
        match out.find(text) {
            Some(i) => out[i + text.len()..].trim().to_string(),
            None => out.trim().to_string(),
        }
    }

    /// Ctrl-D on an empty line: the REPL ends with status 0.
    fn quit_with_ctrl_d(mut self) {
        self.p.send_control('d').expect("send Ctrl-D");
        self.p.exp_eof().expect("streem ends");
        match self.p.process().wait() {
            Ok(rexpect::process::WaitStatus::Exited(_, 0)) => {}
            other => panic!("exit status: {other:?}"),
        }
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

#[test]
fn values_bindings_and_a_printing_pipeline() {
    let mut r = Repl::start(&temp_home());
    assert_eq!(r.eval("x = 20"), "");
    assert_eq!(r.eval("x + 1"), "21");
    assert_eq!(r.eval("[x, \"s\", 1.5]"), "[20, \"s\", 1.5]");
    // The binding persists, and may be rebound in a later input.
    assert_eq!(r.eval("x = \"twenty\""), "");
    assert_eq!(r.eval("x"), "\"twenty\"");
    // A pipeline prints its elements (the stream value itself is not shown). Its
    // streams run in the background: the output may come before or after the prompt.
    r.line("[1, 2] | stdout");
    r.expect_lines(&["1", "2"]);
    r.prompt();
    // A second pipeline into stdout prints too.
    r.line("seq(3) | map{v -> v * 10} | stdout");
    r.expect_lines(&["10", "20", "30"]);
    r.prompt();
    r.line("print(\"sync\")");
    r.expect_lines(&["sync"]);
    r.prompt();
    r.quit_with_ctrl_d();
}

#[test]
fn multi_line_input_continues_on_the_next_line() {
    let mut r = Repl::start(&temp_home());
    r.line("total = [1,");
    r.continuation();
    r.line("2,");
    r.continuation();
    r.line("3].sum()");
    r.prompt();
    assert_eq!(r.eval("total"), "6");
    // A trailing operator and an `if` awaiting its branch continue too.
    r.line("print(1 +");
    r.continuation();
    assert_eq!(r.eval("1)"), "2");
    r.line("if (total > 5)");
    r.continuation();
    assert_eq!(r.eval("print(\"big\")"), "big");
    r.quit_with_ctrl_d();
}

#[test]
fn an_error_is_reported_and_the_session_goes_on() {
    let mut r = Repl::start(&temp_home());
    assert_eq!(r.eval("y = 5"), "");
    let out = r.eval("nope + 1");
    assert!(out.contains("undefined variable 'nope'"), "{out}");
    // The caret under the input line.
    assert!(out.contains("nope + 1") && out.contains('^'), "{out}");
    let out = r.eval("y = 1 + * 2");
    assert!(out.contains("error"), "{out}");
    // The failed input bound nothing; the earlier binding is intact.
    assert_eq!(r.eval("y * 2"), "10");
    r.quit_with_ctrl_d();
}

#[test]
fn ctrl_c_abandons_the_current_input() {
    let mut r = Repl::start(&temp_home());
    r.line("z = [1,");
    r.continuation();
    r.p.send_control('c').expect("send Ctrl-C");
    r.prompt();
    // Back at a fresh input: `z` was never bound.
    let out = r.eval("z");
    assert!(out.contains("undefined variable 'z'"), "{out}");
    assert_eq!(r.eval("7 * 6"), "42");
    r.quit_with_ctrl_d();
}

#[test]
fn tab_completes_a_builtin_name_and_a_method() {
    let mut r = Repl::start(&temp_home());
    // `seq` is the only name starting with `se`.
    r.keys("se");
    r.keys("\t");
    r.expect("seq");
    r.line("(2) | stdout");
    r.expect_lines(&["1", "2"]);
    r.prompt();
    // After a dot: the methods.
    r.keys("\"abc\".leng");
    r.keys("\t");
    r.expect("length");
    r.line("()");
    assert!(r.prompt().contains('3'));
    // A name the session defined.
    assert_eq!(r.eval("my_long_name = 4"), "");
    r.keys("my_lo");
    r.keys("\t");
    r.expect("my_long_name");
    assert_eq!(r.eval(" + 1"), "5");
    r.quit_with_ctrl_d();
}

#[test]
fn help_quit_and_history_across_sessions() {
    let home = temp_home();
    {
        let mut r = Repl::start(&home);
        r.line(":help");
        let out = r.prompt();
        assert!(out.contains(":quit"), "{out}");
        assert!(out.contains("rebind"), "{out}");
        assert_eq!(r.eval("remembered = 99"), "");
        r.line(":quit");
        r.p.exp_eof().expect("streem ends on :quit");
        // Keep the home directory for the second session.
        r.home = PathBuf::new();
    }
    let history = home.join(".local/share/streem/history");
    let saved = std::fs::read_to_string(&history).expect("history file written");
    assert!(saved.contains("remembered = 99"), "{saved}");
    let mut r = Repl::start(&home);
    // Up arrow twice: `:quit`, then the assignment; Enter runs it again.
    r.keys("\x1b[A\x1b[A");
    r.expect("remembered = 99");
    r.line("");
    r.prompt();
    assert_eq!(r.eval("remembered"), "99");
    r.quit_with_ctrl_d();
}

#[test]
fn output_of_background_streams_reaches_the_terminal() {
    let mut r = Repl::start(&temp_home());
    // A pipeline that is still running when the prompt comes back (it takes a
    // second or two): its output appears above the prompt while the user types,
    // and what was typed stays on the redrawn prompt line. (`&&` keeps the filter off
    // the batch path for integer lambdas, which would finish before the prompt.)
    r.line(
        "seq(6000000) | filter{v -> v % 2000000 == 0 && v > 0} | map{v -> \"got \" + string(v / 2)} | stdout",
    );
    r.prompt();
    r.keys("12");
    r.expect_lines(&["got 1000000", "got 2000000", "got 3000000"]);
    r.expect(&format!("{PROMPT}12"));
    r.line(" * 2");
    r.expect_lines(&["24"]);
    r.prompt();
    r.quit_with_ctrl_d();
}

/// An echo (`s | s`) that gets a second input while a line is partly echoed finishes
/// that line before the writer writes the other input's value: no line is cut by
/// another. After it, the connection's lines go through the writer as values.
#[test]
fn an_echo_finishes_its_line_before_another_input_is_written() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut r = Repl::start(&temp_home());
    r.eval(&format!("s = tcp_socket(\"127.0.0.1\", {port})"));
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS)))
        .unwrap();
    r.eval("s | s");
    peer.write_all(b"abc").unwrap();
    let mut got = [0; 3];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abc", "the echo streams");
    r.eval("[\"x\"] | s");
    // Nothing comes while the line is unfinished (a bounded wait for no data).
    peer.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut one = [0; 1];
    match peer.read(&mut one) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the other input was written inside the line: {other:?} {one:?}"),
    }
    peer.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS)))
        .unwrap();
    peer.write_all(b"def\n").unwrap();
    let mut rest = [0; 6];
    peer.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"def\nx\n");
    peer.write_all(b"ghi\r\n").unwrap();
    let mut last = [0; 4];
    peer.read_exact(&mut last).unwrap();
    assert_eq!(&last, b"ghi\n");
    r.quit_with_ctrl_d();
}
