//! Golden tests: runs every `tests/scripts/NAME.strm` with the `streem` binary and compares
//! the result with the files beside it.
//!
//! | file             | meaning                                                             |
//! |------------------|---------------------------------------------------------------------|
//! | `NAME.out`       | exact expected standard output (required)                           |
//! | `NAME.err`       | lines that must each appear as substrings of standard error         |
//! | `NAME.stderr`    | exact expected standard error                                       |
//! | `NAME.status`    | expected exit status (default 0)                                    |
//! | `NAME.in`        | standard input (default: empty)                                     |
//! | `NAME.args`      | script arguments, one per line, passed after the script             |
//! | `NAME.opts`      | options, one per line, passed before the script                     |
//! | `NAME.unordered` | present when stdout lines may come in any order (compared sorted)   |
//!
//! Each case runs as `streem OPTS... NAME.strm ARGS...` with `tests/scripts/` as the working
//! directory, with a timeout of 20 seconds. A case whose standard error contains
//! `panicked at` or `RUST_BACKTRACE`, or that is killed by a signal, fails.
//!
//! `cargo test --test golden` runs them all; `cargo test --test golden d21` runs the cases
//! whose name contains `d21`.

use libtest_mimic::{Arguments, Failed, Trial};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("scripts")
}

fn main() {
    let args = Arguments::from_args();
    let dir = scripts_dir();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? == "strm" {
                Some(path.file_stem()?.to_string_lossy().into_owned())
            } else {
                None
            }
        })
        .collect();
    names.sort();
    let trials = names
        .into_iter()
        .map(|name| {
            let dir = dir.clone();
            Trial::test(name.clone(), move || run_case(&dir, &name))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Reads `dir/NAME.ext`, or `None` if it does not exist.
fn read_opt(dir: &Path, name: &str, ext: &str) -> Option<Vec<u8>> {
    fs::read(dir.join(format!("{name}.{ext}"))).ok()
}

/// The non-empty lines of `dir/NAME.ext` (a missing file gives no lines).
fn lines_of(dir: &Path, name: &str, ext: &str) -> Vec<String> {
    read_opt(dir, name, ext)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// `None` when the case timed out.
    status: Option<ExitStatus>,
}

/// Reads a pipe to its end on a separate thread.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for the child at most `timeout`, killing it when the time is up.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => break,
        }
        if start.elapsed() >= timeout {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs a case; `from_file`: standard input is `NAME.in` itself (as `streem prog <
/// file` runs), else a pipe fed with it.
fn run_streem(dir: &Path, name: &str, from_file: bool) -> Result<Outcome, Failed> {
    let opts = lines_of(dir, name, "opts");
    let args = lines_of(dir, name, "args");
    let stdin_data = read_opt(dir, name, "in").unwrap_or_default();
    let input = if from_file {
        let f = fs::File::open(dir.join(format!("{name}.in")))
            .map_err(|e| Failed::from(format!("cannot open {name}.in: {e}")))?;
        Stdio::from(f)
    } else {
        Stdio::piped()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_streem"))
        .args(&opts)
        .arg(format!("{name}.strm"))
        .args(&args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failed::from(format!("cannot start streem: {e}")))?;
    let stdin = child.stdin.take();
    let feeder = thread::spawn(move || {
        if let Some(mut w) = stdin {
            // The program may exit without reading its input: ignore EPIPE.
            let _ = w.write_all(&stdin_data);
        }
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_with_timeout(&mut child, TIMEOUT);
    let _ = feeder.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Outcome {
        stdout,
        stderr,
        status,
    })
}

/// A short diff of two texts: the first differing line with some context.
fn diff(expected: &str, got: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let first = e
        .iter()
        .zip(g.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let from = first.saturating_sub(2);
    let to_e = (first + 6).min(e.len());
    let to_g = (first + 6).min(g.len());
    let mut s = format!("first difference at line {}\n", first + 1);
    s.push_str("  expected:\n");
    for (i, l) in e.iter().enumerate().take(to_e).skip(from) {
        let mark = if i == first { '>' } else { ' ' };
        s.push_str(&format!("   {mark}{:4} | {}\n", i + 1, show(l)));
    }
    if to_e < e.len() {
        s.push_str(&format!("         ... ({} more lines)\n", e.len() - to_e));
    }
    if e.len() <= first {
        s.push_str("         (end of expected output)\n");
    }
    s.push_str("  got:\n");
    for (i, l) in g.iter().enumerate().take(to_g).skip(from) {
        let mark = if i == first { '>' } else { ' ' };
        s.push_str(&format!("   {mark}{:4} | {}\n", i + 1, show(l)));
    }
    if to_g < g.len() {
        s.push_str(&format!("         ... ({} more lines)\n", g.len() - to_g));
    }
    if g.len() <= first {
        s.push_str("         (end of output)\n");
    }
    if e.len() == g.len() && first >= e.len() {
        s.push_str("  (the lines are equal; the outputs differ in the final newline)\n");
    }
    s
}

/// A line as text, with control characters made visible (`\t`, `\r`, `\x1b`, ...).
fn show(line: &str) -> String {
    let mut s = String::new();
    for c in line.chars() {
        match c {
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => s.push_str(&format!("\\x{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

fn sorted_lines(s: &str) -> String {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    let mut out = v.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn run_case(dir: &Path, name: &str) -> Result<(), Failed> {
    let expected_out =
        read_opt(dir, name, "out").ok_or_else(|| Failed::from(format!("{name}.out is missing")))?;
    let expected_out = String::from_utf8_lossy(&expected_out).into_owned();
    let expected_status: i32 = match read_opt(dir, name, "status") {
        Some(b) => String::from_utf8_lossy(&b)
            .trim()
            .parse()
            .map_err(|e| Failed::from(format!("bad {name}.status: {e}")))?,
        None => 0,
    };
    let err_lines = lines_of(dir, name, "err");
    let exact_stderr =
        read_opt(dir, name, "stderr").map(|b| String::from_utf8_lossy(&b).into_owned());
    let unordered = dir.join(format!("{name}.unordered")).exists();

    // A case with standard input runs twice: fed by a pipe, and from the file.
    let has_input = dir.join(format!("{name}.in")).exists();
    for from_file in [false, true] {
        if from_file && !has_input {
            break;
        }
        let outcome = run_streem(dir, name, from_file)?;
        check_outcome(
            name,
            &outcome,
            &Expected {
                out: &expected_out,
                status: expected_status,
                err_lines: &err_lines,
                exact_stderr: exact_stderr.as_deref(),
                unordered,
            },
        )
        .map_err(|msg| {
            let how = if from_file {
                "from a file"
            } else {
                "from a pipe"
            };
            Failed::from(format!("{msg}  (standard input {how})\n"))
        })?;
    }
    Ok(())
}

/// What a case must give.
struct Expected<'a> {
    out: &'a str,
    status: i32,
    err_lines: &'a [String],
    exact_stderr: Option<&'a str>,
    unordered: bool,
}

/// Compares one run with what is expected; the failure message otherwise.
fn check_outcome(name: &str, outcome: &Outcome, want: &Expected) -> Result<(), String> {
    let (expected_out, expected_status, err_lines, exact_stderr, unordered) = (
        want.out.to_string(),
        want.status,
        want.err_lines,
        want.exact_stderr,
        want.unordered,
    );
    let got_out = String::from_utf8_lossy(&outcome.stdout).into_owned();
    let got_err = String::from_utf8_lossy(&outcome.stderr).into_owned();

    let mut problems: Vec<String> = Vec::new();
    match outcome.status {
        None => problems.push(format!("timed out after {} s (killed)", TIMEOUT.as_secs())),
        Some(status) => match status.code() {
            Some(code) if code == expected_status => {}
            Some(code) => problems.push(format!("exit status {code}, expected {expected_status}")),
            None => problems.push(format!(
                "killed by a signal ({status}), expected exit status {expected_status}"
            )),
        },
    }

    let (want, got) = if unordered {
        (sorted_lines(&expected_out), sorted_lines(&got_out))
    } else {
        (expected_out.clone(), got_out.clone())
    };
    if want != got {
        let what = if unordered {
            "stdout differs (compared as sorted lines)"
        } else {
            "stdout differs"
        };
        problems.push(format!("{what}: {}", diff(&want, &got)));
    }

    for line in err_lines {
        if !got_err.contains(line.as_str()) {
            problems.push(format!("stderr lacks {line:?}"));
        }
    }
    if let Some(exact) = exact_stderr {
        if exact != got_err {
            problems.push(format!("stderr differs: {}", diff(exact, &got_err)));
        }
    }
    if got_err.contains("panicked at") || got_err.contains("RUST_BACKTRACE") {
        problems.push("the interpreter panicked".to_string());
    }

    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{name}.strm failed:\n  - {}\n", problems.join("\n  - "));
    let mut tail = got_err.trim_end().to_string();
    if tail.len() > 3000 {
        let mut cut = tail.len() - 3000;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("...{}", &tail[cut..]);
    }
    if tail.is_empty() {
        msg.push_str("  stderr: (empty)\n");
    } else {
        msg.push_str("  stderr:\n");
        for l in tail.lines() {
            msg.push_str("    ");
            msg.push_str(l);
            msg.push('\n');
        }
    }
    Err(msg)
}
