//! Socket integration tests (spec 6.2, 5.9, 6.4 `chan`; D38, D40, D42, D43, D53): the
//! real `streem` binary as echo server, netcat client and chat server on ephemeral
//! ports, over 127.0.0.1 and ::1. Every read has a timeout and every server is killed
//! at the end (also when a test fails).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn streem() -> &'static str {
    env!("CARGO_BIN_EXE_streem")
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A port free on both IPv4 and IPv6 (bound dual-stack, then released).
/// A port no other test of this process has been given: tests run in parallel, and
/// the kernel may hand the same just-released ephemeral port to two of them, whose
/// servers would then answer each other's clients.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("[::]:0").or_else(|_| TcpListener::bind("127.0.0.1:0"));
        let port = l
            .expect("bind an ephemeral port")
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn has_ipv6() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A script written to a temporary file (removed on drop).
struct Script(PathBuf);

impl Script {
    fn new(name: &str, text: &str) -> Script {
        let path =
            std::env::temp_dir().join(format!("streem-net-{}-{name}.strm", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Script(path)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    port: u16,
    /// Servers run one at a time: a handful of servers and their clients at once on a
    /// 2-core machine made timing-sensitive checks flaky without testing anything more.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Server {
    fn start(script: &std::path::Path, port: u16) -> Server {
        Server::start_with(script, port, &[], Stdio::null())
    }

    fn start_with_env(script: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Server {
        Server::start_with(script, port, env, Stdio::null())
    }

    fn start_with(
        script: &std::path::Path,
        port: u16,
        env: &[(&str, &str)],
        stdout: Stdio,
    ) -> Server {
        let guard = ONE_SERVER.lock().unwrap_or_else(|e| e.into_inner());
        let child = Command::new(streem())
            .envs(env.iter().copied())
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start streem");
        let mut server = Server {
            child,
            port,
            _one_at_a_time: guard,
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                if let Some(e) = server.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("server exited early ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "server did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn connect(&self, host: &str) -> TcpStream {
        let addr: SocketAddr = format!("{host}:{}", self.port).parse().unwrap();
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// Stops the server and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server has exited"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs streem to completion (killed after RUN_TIMEOUT), feeding `stdin`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(streem())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start streem");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("streem {args:?} did not finish in time");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read to end of stream");
    v
}

/// Sends `data` to the echo server while reading, half-closes, and checks that what
/// comes back is `expected` and that the server still runs.
fn echo_all(server: &mut Server, data: Vec<u8>, expected: &[u8]) {
    let mut s = server.connect("127.0.0.1");
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_all(&mut s);
    sender.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "echo differs");
    server.assert_running();
}

fn echo_roundtrip(server: &Server, host: &str) {
    let mut s = server.connect(host);
    s.write_all(b"hello\r\n\nworld\nlast without newline")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        read_all(&mut s),
        b"hello\n\nworld\nlast without newline\n".to_vec(),
        "echo over {host}"
    );
}

#[test]
fn echo_over_ipv4_and_ipv6() {
    let server = Server::start(&example("echo.strm"), free_port());
    echo_roundtrip(&server, "127.0.0.1");
    if has_ipv6() {
        echo_roundtrip(&server, "[::1]");
    }
}

/// D43: a client that half-closes right after sending, without reading first, gets
/// the whole echo; a long line comes back whole (D38).
#[test]
fn echo_half_close_loses_nothing() {
    let mut server = Server::start(&example("echo.strm"), free_port());
    let mut data = Vec::new();
    for i in 0..20000 {
        data.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
    }
    data.extend_from_slice(&vec![b'y'; 3 << 20]);
    data.push(b'\n');
    let expected = data.clone();
    echo_all(&mut server, data, &expected);
}

/// `s | s` writes the lines of each read straight back to the socket (the echo path):
/// what comes back is still each line without the CR before its newline (D38),
/// whether a read holds CRLF lines, a CR inside a line, empty lines or part of a line
/// longer than a read.
#[test]
fn echo_of_joined_lines_is_the_lines() {
    let mut server = Server::start(&example("echo.strm"), free_port());
    let mut data = Vec::new();
    let mut expected = Vec::new();
    for i in 0..30000 {
        let body = format!(
            "l{i}{}{}",
            "z".repeat(i % 61),
            if i % 17 == 0 { "\ra" } else { "" }
        );
        let crlf = i % 211 == 0 || (10_000..10_050).contains(&i);
        data.extend_from_slice(body.as_bytes());
        data.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        expected.extend_from_slice(body.as_bytes());
        expected.push(b'\n');
        if i % 5000 == 0 {
            data.extend(std::iter::repeat_n(b'w', 150_000));
            data.extend_from_slice(b"\r\n\n");
            expected.extend(std::iter::repeat_n(b'w', 150_000));
            expected.extend_from_slice(b"\n\n");
        }
    }
    echo_all(&mut server, data, &expected);
}

/// Reads exactly `n` bytes.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).expect("read the echo");
    v
}

/// An echo streams: the bytes of a line come back before its newline has been sent,
/// a CR at the end of a read is held until the next byte shows whether an LF follows
/// (then it is dropped, D38), and an unterminated last line ending in CR comes back
/// as the line it is, CR and all, plus the newline.
#[test]
fn echo_streams_and_holds_a_cr_until_the_next_byte() {
    let mut server = Server::start(&example("echo.strm"), free_port());
    let mut s = server.connect("127.0.0.1");
    s.write_all(b"ab\r").unwrap();
    assert_eq!(read_n(&mut s, 2), b"ab");
    s.write_all(b"\ncd\r").unwrap();
    assert_eq!(read_n(&mut s, 3), b"\ncd");
    s.write_all(b"ef").unwrap();
    assert_eq!(read_n(&mut s, 3), b"\ref");
    s.write_all(b"\r").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), b"\r\n");
    server.assert_running();
}

/// D38: a line over the cap ends the connection's read side with a message naming
/// it; the lines before it came back whole, nothing after it does (an echo has
/// already sent the overlong line's first bytes), and the server goes on.
#[test]
fn echo_of_a_line_over_the_cap_ends_the_read_side() {
    let cap = 1 << 20;
    let mut server = Server::start_with_env(
        &example("echo.strm"),
        free_port(),
        &[("STRM_MAX_LINE", &cap.to_string())],
    );
    let mut s = server.connect("127.0.0.1");
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut data = b"first\n".to_vec();
        data.extend(std::iter::repeat_n(b'y', 3 << 20));
        data.extend_from_slice(b"\nafter\n");
        // The server drains what it no longer reads: the writes end.
        let _ = w.write_all(&data);
        let _ = w.shutdown(Shutdown::Write);
    });
    let got = read_all(&mut s);
    sender.join().unwrap();
    assert!(
        got.starts_with(b"first\n"),
        "lines before the long one come back"
    );
    assert!(
        got.len() <= 6 + cap + 1,
        "at most the cap of the long line: {}",
        got.len()
    );
    assert!(
        got[6..].iter().all(|&b| b == b'y'),
        "nothing after the long line"
    );
    server.assert_running();
    echo_roundtrip(&server, "127.0.0.1");
    let err = server.stop();
    assert!(
        err.contains("line longer than 1048576 bytes") && err.contains("<io: fd="),
        "stderr: {err}"
    );
}

/// D40: clients that vanish (reset, close unread) do not disturb the server.
#[test]
fn echo_survives_resets() {
    let mut server = Server::start(&example("echo.strm"), free_port());
    for _ in 0..5 {
        let mut s = server.connect("127.0.0.1");
        s.write_all(&vec![b'z'; 1 << 20]).unwrap();
        s.write_all(b"\n").unwrap();
        drop(s); // closed with the echo unread: the server's writes fail
    }
    thread::sleep(Duration::from_millis(200));
    server.assert_running();
    echo_roundtrip(&server, "127.0.0.1");
}

/// A connection prints as `<io: fd=N mode=rw>`; a write side whose input ends
/// half-closes, and an unused read side does not keep the connection open (D43).
#[test]
fn connection_prints_as_io_and_write_end_closes() {
    let script = Script::new(
        "describe",
        "port = number(ARGV(0))\ntcp_server(port) | each{s -> [string(s)] | s}\n",
    );
    let server = Server::start(&script.0, free_port());
    let mut s = server.connect("127.0.0.1");
    let got = String::from_utf8(read_all(&mut s)).unwrap();
    assert!(
        got.starts_with("<io: fd=") && got.ends_with(" mode=rw>\n"),
        "got {got:?}"
    );
}

/// The bare-lambda form of the socket chapter: `tcp_server(P) | {s -> s | s}`, and a
/// server listening on an explicit host.
#[test]
fn bare_lambda_server_on_host() {
    let script = Script::new(
        "bare",
        "tcp_server(number(ARGV(0)), '127.0.0.1') | {s -> s | s}\n",
    );
    let server = Server::start(&script.0, free_port());
    echo_roundtrip(&server, "127.0.0.1");
}

/// A streem netcat client talking to a streem echo server (6.2).
#[test]
fn netcat_client_with_streem_server() {
    let port = free_port();
    let _server = Server::start(&example("echo.strm"), port);
    let mut input = Vec::new();
    for i in 0..5000 {
        input.extend_from_slice(format!("message {i}\r\n").as_bytes());
    }
    input.extend_from_slice(b"\nunterminated");
    let out = run(
        &[example("netcat.strm").to_str().unwrap(), &port.to_string()],
        &input,
    );
    assert!(
        out.status.success(),
        "netcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = Vec::new();
    for i in 0..5000 {
        expected.extend_from_slice(format!("message {i}\n").as_bytes());
    }
    expected.extend_from_slice(b"\nunterminated\n");
    assert!(out.stdout == expected, "netcat output differs");
}

/// `s | stdout` sends the lines of a read joined into one string (stdout only writes
/// lines): what is printed is still each line without the CR before its newline.
#[test]
fn lines_read_from_a_socket_print_as_lines() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sent = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20000 {
        let body = format!("row {i}{}", if i % 13 == 0 { " a\rb" } else { "" });
        sent.extend_from_slice(body.as_bytes());
        sent.extend_from_slice(if i % 7 == 0 { b"\r\n" } else { b"\n" });
        expected.extend_from_slice(body.as_bytes());
        expected.push(b'\n');
    }
    sent.extend_from_slice(b"\n\nlast\r");
    expected.extend_from_slice(b"\n\nlast\r\n");
    let server = thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(&sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        // Keep the connection until the client has read everything.
        let _ = read_all(&mut c);
    });
    let program = format!("s = tcp_socket(\"127.0.0.1\", {port}); s | stdout");
    let out = run(&["-e", &program], b"");
    server.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "printed lines differ");
}

/// D39: output produced while the graph waits (a server runs on) is written within a
/// few milliseconds, not when the program ends.
#[test]
fn output_of_a_running_server_is_written_promptly() {
    let script = Script::new(
        "print-lines",
        "tcp_server(number(ARGV(0))) | each{s -> s | map{l -> \"got \" + l} | stdout}",
    );
    let mut server = Server::start_with(&script.0, free_port(), &[], Stdio::piped());
    let mut c = server.connect("127.0.0.1");
    c.write_all(b"hello\n").unwrap();
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(IO_TIMEOUT).expect("a line on stdout");
    assert_eq!(line, "got hello\n");
    server.assert_running();
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line");
    line
}

/// The chat server (D53): every client gets every line sent after it joined, its own
/// included.
#[test]
fn chat_broadcasts_to_three_clients() {
    let mut server = Server::start(&example("chat.strm"), free_port());
    let mut clients = Vec::new();
    for i in 0..3 {
        let s = server.connect(if i == 1 && has_ipv6() {
            "[::1]"
        } else {
            "127.0.0.1"
        });
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(format!("JOIN {i}\n").as_bytes()).unwrap();
        // Wait for its own JOIN: from then on it is a destination of the channel.
        loop {
            let l = read_line(&mut r);
            assert!(!l.is_empty(), "connection closed while joining");
            if l == format!("JOIN {i}\n") {
                break;
            }
        }
        // Earlier clients see the newcomer.
        for (k, (_, r)) in clients.iter_mut().enumerate() {
            assert_eq!(read_line(r), format!("JOIN {i}\n"), "client {k}");
        }
        clients.push((w, r));
    }
    clients[0].0.write_all(b"hello from 0\n").unwrap();
    for (k, (_, r)) in clients.iter_mut().enumerate() {
        assert_eq!(read_line(r), "hello from 0\n", "client {k}");
    }
    clients[2].0.write_all(b"bye from 2\n").unwrap();
    for (_, r) in clients.iter_mut() {
        assert_eq!(read_line(r), "bye from 2\n");
    }
    // A client leaving does not disturb the others.
    let (w, _) = clients.remove(1);
    w.shutdown(Shutdown::Both).unwrap();
    drop(w);
    clients[0].0.write_all(b"still here\n").unwrap();
    for (_, r) in clients.iter_mut() {
        assert_eq!(read_line(r), "still here\n");
    }
    server.assert_running();
}

/// Runs a one-line program expected to fail at call time with `needles` in stderr.
fn expect_error(program: &str, args: &[&str], needles: &[&str]) {
    let mut argv = vec!["-e", program];
    argv.extend_from_slice(args);
    let out = run(&argv, b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "status; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn error_port_in_use() {
    let holder = TcpListener::bind("[::]:0").or_else(|_| TcpListener::bind("0.0.0.0:0"));
    let holder = holder.unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    expect_error(
        "tcp_server(number(ARGV(0))) | each{s -> s | s}",
        &[&port],
        &["tcp_server: socket error: bind", "Address already in use"],
    );
}

#[test]
fn error_connection_refused() {
    let port = free_port().to_string();
    expect_error(
        "s = tcp_socket('127.0.0.1', number(ARGV(0)))\ns | stdout",
        &[&port],
        &[
            &format!("tcp_socket: socket error: connect to 127.0.0.1:{port}"),
            "Connection refused",
        ],
    );
}

#[test]
fn error_unknown_host_and_service() {
    expect_error(
        "tcp_socket('nosuch.invalid', 8007)",
        &[],
        &["tcp_socket: cannot resolve nosuch.invalid:8007"],
    );
    expect_error(
        "tcp_server('no-such-service-xyz')",
        &[],
        &["tcp_server: cannot resolve port \"no-such-service-xyz\""],
    );
}

/// A program that is its own client: `tcp_socket` from inside the running graph.
#[test]
fn socket_opened_inside_a_stage() {
    let port = free_port().to_string();
    let program = "port = number(ARGV(0))\n\
        tcp_server(port, 'localhost') | each{s -> s | map{l -> 'got ' + l} | s}\n\
        [1] | each{x ->\n\
          c = tcp_socket('localhost', port)\n\
          ['ping'] | c\n\
          c | take(1) | each{l -> print(l); exit(0)}\n\
        }\n";
    let out = run(&["-e", program, &port], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got ping\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}
