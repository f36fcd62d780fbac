//! Embedding Streem in a Rust program (spec 9.2 item 10): create an interpreter,
//! register an extension, run a script with `ARGV`, capture its standard output and
//! error, and get the exit status.
//!
//! ```sh
//! cargo run -p streem-unix --example embed -- 3
//! ```

use streem::ext::{Args, Capture, Value};
use streem::{Interpreter, RunOptions};

/// The script: numbers from the host function `host_numbers(n)`, through a pipeline,
/// to standard output; a message on standard error; `exit` ends the run (not the host).
const SCRIPT: &str = r#"
n = number(ARGV(0))
# the script runs first and builds the graph; the streams run when it has finished
print("squares up to " + ARGV(0) + " with " + string(unix_socket))   # from the extension
host_numbers(n) | map{x -> x * x} | stdout
["done"] | stderr
"#;

/// What one run gave: exit status, standard output, standard error.
pub struct Ran {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs [`SCRIPT`] with `ARGV == [n]` in a fresh interpreter.
pub fn run(n: i64) -> Ran {
    let interp = Interpreter::new();
    let registry = interp.registry();
    // The extension, registered through the same public API as the standard library.
    streem_unix::register(&registry);
    // A host function: an array of 1..=n (an array piped into a stage is a producer).
    registry.define_fn("host_numbers", |_cx, vals| {
        let a = Args::new("host_numbers", vals);
        a.arity(1, 1)?;
        Ok(Value::array((1..=a.int(0)?).map(Value::Int).collect()))
    });
    let (out, err) = (Capture::new(), Capture::new());
    interp.set_stdout(out.clone());
    interp.set_stderr(err.clone());
    let status = interp.run_str(
        "embed.strm",
        SCRIPT,
        vec![n.to_string()],
        &RunOptions::default(),
    );
    Ran {
        status,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// Runs a script that calls `exit(7)`: the run ends, the host goes on.
pub fn run_exit() -> Ran {
    let interp = Interpreter::new();
    let out = Capture::new();
    interp.set_stdout(out.clone());
    let status = interp.run_str(
        "exit.strm",
        "seq(5) | each{x -> if (x == 3) exit(7); print(x)}",
        vec![],
        &RunOptions::default(),
    );
    Ran {
        status,
        stdout: out.text(),
        stderr: String::new(),
    }
}

#[allow(dead_code)]
fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let ran = run(n);
    print!("{}", ran.stdout);
    eprint!("{}", ran.stderr);
    println!("(status {})", ran.status);
    let ran = run_exit();
    print!("{}", ran.stdout);
    println!("(exit status {}; the host is still running)", ran.status);
}
