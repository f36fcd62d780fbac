//! The extension over real Unix sockets in a temporary directory, and the embedding
//! example.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use streem::ext::Capture;
use streem::{Interpreter, RunOptions};

#[path = "../examples/embed.rs"]
mod embed;

/// A fresh temporary directory (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "streem-unix-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program` with the extension, in a fresh interpreter; (status, stdout, stderr).
fn run(program: &str, argv: &[&str]) -> (i32, String, String) {
    let interp = Interpreter::new();
    streem_unix::register(&interp.registry());
    let (out, err) = (Capture::new(), Capture::new());
    interp.set_stdout(out.clone());
    interp.set_stderr(err.clone());
    let argv = argv.iter().map(|s| s.to_string()).collect();
    let status = interp.run_str("-e", program, argv, &RunOptions::default());
    (status, out.text(), err.text())
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server never bound"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // bind and listen happen back to back
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn echo_server_and_client() {
    let dir = TempDir::new();
    let sock = dir.0.join("echo.sock");
    let sock_s = sock.to_str().unwrap().to_string();
    // The server serves one connection (take(1)) and then finishes.
    let server = {
        let s = sock_s.clone();
        std::thread::spawn(move || {
            run(
                "unix_server(ARGV(0)) | take(1) | each{c -> c | map{l -> \"echo: \" + l} | c}",
                &[&s],
            )
        })
    };
    wait_for(&sock);
    // The client sends two lines and half-closes at once (its input ends); it still
    // receives every answer (D43), then the server closes and the client ends.
    let (status, out, err) = run(
        "s = unix_socket(ARGV(0)); [\"a\", \"b\\r\", 3] | s; s | stdout",
        &[&sock_s],
    );
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(out, "echo: a\necho: b\necho: 3\n");
    let (status, out, err) = server.join().unwrap();
    assert_eq!((status, out.as_str(), err.as_str()), (0, "", ""));
}

#[test]
fn many_lines_and_an_unterminated_last_line() {
    let dir = TempDir::new();
    let sock = dir.0.join("count.sock");
    let sock_s = sock.to_str().unwrap().to_string();
    let server = {
        let s = sock_s.clone();
        std::thread::spawn(move || {
            run(
                "unix_server(ARGV(0)) | take(1) | each{c -> c | count() | stdout}",
                &[&s],
            )
        })
    };
    wait_for(&sock);
    // A raw std client: 100000 lines, the last one unterminated.
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&i.to_string());
        data.push('\n');
    }
    data.push_str("last");
    std::io::Write::write_all(&mut c, data.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (status, out, err) = server.join().unwrap();
    assert_eq!((status, out.as_str(), err.as_str()), (0, "100001\n", ""));
}

#[test]
fn errors_name_the_function_and_the_path() {
    let (status, _, err) = run("unix_socket(\"/nonexistent/x.sock\")", &[]);
    assert_eq!(status, 1);
    assert!(
        err.contains("unix_socket: socket error: connect: \"/nonexistent/x.sock\": No such file or directory"),
        "{err}"
    );
    let (status, _, err) = run("unix_server(1)", &[]);
    assert_eq!(status, 1);
    assert!(
        err.contains("unix_server: argument 1: string required"),
        "{err}"
    );
    let (status, _, err) = run("unix_server(\"/nonexistent/dir/x.sock\")", &[]);
    assert_eq!(status, 1);
    assert!(err.contains("unix_server: socket error: bind:"), "{err}");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new();
    let sock = dir.0.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let sock_s = sock.to_str().unwrap().to_string();
    let server = {
        let s = sock_s.clone();
        std::thread::spawn(move || run("unix_server(ARGV(0)) | take(1) | each{c -> c | c}", &[&s]))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, out, err) = run(
        "s = unix_socket(ARGV(0)); [\"x\"] | s; s | stdout",
        &[&sock_s],
    );
    assert_eq!((status, out.as_str(), err.as_str()), (0, "x\n", ""));
    assert_eq!(server.join().unwrap().0, 0);
}

#[test]
fn embedding_example_captures_output() {
    let ran = embed::run(3);
    assert_eq!(ran.status, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        "squares up to 3 with <cfunc:unix_socket>\n1\n4\n9\n"
    );
    assert_eq!(ran.stderr, "done\n");
    let ran = embed::run_exit();
    assert_eq!(ran.status, 7);
    assert_eq!(ran.stdout, "1\n2\n");
}
