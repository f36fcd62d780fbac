//! Unix-domain stream sockets for Streem, written against the public extension API
//! ([`streem::ext`]) only — a worked example of spec section 9.
//!
//! * `unix_server(path)` — producer. Binds a listening socket at `path` when called
//!   (a stale socket file nobody listens on is replaced) and emits one read/write io
//!   object per accepted connection. It never finishes on its own; it stops when
//!   nobody listens to it any more (e.g. after `take(n)`).
//! * `unix_socket(path)` — value. Connects to the socket at `path` and returns a
//!   read/write io object.
//!
//! Connections behave exactly like TCP connections (spec 6.2): the read side emits
//! lines (5.9, D38: CR before LF dropped, an unterminated last line emitted), the
//! write side writes each value's text plus `\n` promptly, coalescing values that are
//! already waiting; when the write side's input ends the connection is half-closed
//! for writing; the descriptor is closed only after both sides have finished (D43);
//! EPIPE/ECONNRESET end the write side quietly (D40).
//!
//! ```
//! use streem::ext::Capture;
//! use streem::{Interpreter, RunOptions};
//!
//! let interp = Interpreter::new();
//! streem_unix::register(&interp.registry());
//! let err = Capture::new();
//! interp.set_stderr(err.clone());
//! let status = interp.run_str("-e", "unix_socket(\"/nonexistent/sock\")", vec![],
//!                             &RunOptions::default());
//! assert_eq!(status, 1);
//! assert!(err.text().contains("unix_socket: socket error: connect: \"/nonexistent/sock\""));
//! ```

use std::ffi::OsStr;
use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net as std_unix;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use streem::ext::{
    Args, BoxFuture, Inlet, Io, IoBackend, IoMode, Outlet, Registry, RuntimeError, Sink, Source,
    Stream, Value,
};
use tokio::sync::Notify;

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes the writer gathers from waiting values into one write.
const WRITE_COALESCE: usize = 256 * 1024;
/// How often an idle server checks whether anybody still listens to it.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Installs `unix_server` and `unix_socket`.
///
/// ```
/// let interp = streem::Interpreter::new();
/// streem_unix::register(&interp.registry());
/// ```
pub fn register(r: &Registry) {
    r.define_stage_fn("unix_server", unix_server);
    r.define_fn("unix_socket", unix_socket);
}

/// The OS reason without Rust's "(os error N)" suffix.
fn reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn path_arg(a: &Args, i: usize) -> Result<PathBuf, RuntimeError> {
    let bytes = a.bytes(i)?;
    if bytes.is_empty() {
        return Err(a.error(i, "non-empty path required"));
    }
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

// ---------------------------------------------------------------------------------
// Connections

/// One connection, shared by its io object and its read and write stages: the
/// descriptor is closed when the last of them lets go, i.e. after both directions
/// have finished or were never used (D43).
struct Conn {
    /// Connected before the runtime existed (`unix_socket` runs in the script);
    /// registered with the runtime's reactor on first use inside a stage.
    pending: Mutex<Option<std_unix::UnixStream>>,
    sock: OnceLock<tokio::net::UnixStream>,
    fd: i32,
    /// The read side saw a reset: the write side ends too.
    reset: AtomicBool,
    reset_notify: Notify,
}

impl Conn {
    fn new(pending: Option<std_unix::UnixStream>, sock: Option<tokio::net::UnixStream>) -> Conn {
        let fd = match (&pending, &sock) {
            (Some(s), _) => s.as_raw_fd(),
            (_, Some(s)) => s.as_raw_fd(),
            _ => -1,
        };
        let cell = OnceLock::new();
        if let Some(s) = sock {
            let _ = cell.set(s);
        }
        Conn {
            pending: Mutex::new(pending),
            sock: cell,
            fd,
            reset: AtomicBool::new(false),
            reset_notify: Notify::new(),
        }
    }

    /// The socket registered with the runtime (called inside a stage).
    fn stream(&self) -> io::Result<&tokio::net::UnixStream> {
        if let Some(s) = self.sock.get() {
            return Ok(s);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.sock.get() {
            return Ok(s);
        }
        let std = pending
            .take()
            .ok_or_else(|| io::Error::new(ErrorKind::NotConnected, "socket already closed"))?;
        std.set_nonblocking(true)?;
        let _ = self.sock.set(tokio::net::UnixStream::from_std(std)?);
        Ok(self.sock.get().expect("just set"))
    }

    fn describe(&self) -> String {
        format!("unix connection <io: fd={} mode=rw>", self.fd)
    }

    fn mark_reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.reset_notify.notify_one();
    }
}

/// The io object of a connection: `<io: fd=N mode=rw>`, whose read and write streams
/// the runtime asks this backend for on first use (and then reuses).
fn conn_value(conn: Conn) -> Value {
    let fd = conn.fd;
    Value::Io(Io::custom(
        fd,
        IoMode::ReadWrite,
        Backend {
            conn: Arc::new(conn),
        },
    ))
}

struct Backend {
    conn: Arc<Conn>,
}

impl IoBackend for Backend {
    fn make_reader(&self) -> Option<Arc<Stream>> {
        Some(Stream::source(Reader {
            conn: self.conn.clone(),
        }))
    }

    fn make_writer(&self) -> Option<Arc<Stream>> {
        Some(Stream::sink(Writer {
            conn: self.conn.clone(),
        }))
    }
}

/// Errors that mean the peer has gone: not worth a report.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
    )
}

/// Appends `data` to the line being assembled and emits every complete line (D38).
fn split_lines(data: &[u8], partial: &mut Vec<u8>, out: &mut Outlet) {
    let mut rest = data;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let piece = &rest[..i];
        let line: &[u8] = if partial.is_empty() {
            piece
        } else {
            partial.extend_from_slice(piece);
            partial
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.emit(Value::bytes(line));
        partial.clear();
        rest = &rest[i + 1..];
    }
    partial.extend_from_slice(rest);
}

/// The read side: a producer of lines. It waits for readiness without holding a
/// worker thread, and after each read sends the lines it produced, waiting for room
/// downstream (D2), so a slow graph slows the reading of the socket.
struct Reader {
    conn: Arc<Conn>,
}

impl Source for Reader {
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
        Box::pin(async move { self.read_loop(out).await })
    }

    /// Socket work: on the runtime's I/O thread.
    fn io_bound(&self) -> bool {
        true
    }
}

impl Reader {
    async fn read_loop(self, out: &mut Outlet) {
        let conn = &*self.conn;
        let sock = match conn.stream() {
            Ok(s) => s,
            Err(e) => {
                out.report(RuntimeError::new(format!(
                    "{}: read error: {}",
                    conn.describe(),
                    reason(&e)
                )));
                return;
            }
        };
        let mut buf = vec![0u8; READ_CHUNK];
        let mut partial = Vec::new();
        loop {
            if out.destinations_gone() {
                return;
            }
            match sock.try_read(&mut buf) {
                Ok(0) => {
                    // The peer shut down its sending side: an unterminated last line
                    // is still a line (D38).
                    if !partial.is_empty() {
                        out.emit(Value::bytes(&partial));
                    }
                    return;
                }
                Ok(n) => {
                    split_lines(&buf[..n], &mut partial, out);
                    if out.pending() > 0 {
                        out.flush().await;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Err(e) = sock.readable().await {
                        self.fail(out, e);
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if !partial.is_empty() {
                        out.emit(Value::bytes(&partial));
                    }
                    self.fail(out, e);
                    return;
                }
            }
        }
    }

    /// A read error ends the read side; the write side is told (a reset ends it too).
    fn fail(&self, out: &Outlet, e: io::Error) {
        self.conn.mark_reset();
        if !is_disconnect(&e) {
            out.report(RuntimeError::new(format!(
                "{}: read error: {}",
                self.conn.describe(),
                reason(&e)
            )));
        }
    }
}

/// The write side: each value's printed text plus a newline.
struct Writer {
    conn: Arc<Conn>,
}

impl Sink for Writer {
    fn run<'a>(self: Box<Self>, input: &'a mut Inlet) -> BoxFuture<'a> {
        Box::pin(async move { self.write_loop(input).await })
    }

    /// Socket work: on the runtime's I/O thread.
    fn io_bound(&self) -> bool {
        true
    }
}

enum Next {
    Batch(Vec<Value>),
    End,
    Reset,
}

impl Writer {
    async fn next(&self, input: &mut Inlet) -> Next {
        if self.conn.reset.load(Ordering::Acquire) {
            return Next::Reset;
        }
        tokio::select! {
            biased;
            b = input.next() => match b {
                Some(b) => Next::Batch(b),
                None => Next::End,
            },
            _ = self.conn.reset_notify.notified() => Next::Reset,
        }
    }

    /// The next batch if one is already waiting (`None`: nothing is waiting).
    /// `Inlet::next` is cancel-safe: an unfinished call has consumed nothing.
    async fn next_now(input: &mut Inlet) -> Option<Option<Vec<Value>>> {
        tokio::select! {
            biased;
            b = input.next() => Some(b),
            _ = std::future::ready(()) => None,
        }
    }

    fn append(input: &Inlet, batch: Vec<Value>, buf: &mut Vec<u8>) {
        for v in batch {
            let mark = buf.len();
            if let Err(e) = input.display(&v, buf) {
                buf.truncate(mark);
                input.report(e);
                continue;
            }
            buf.push(b'\n');
        }
    }

    async fn write_loop(self, input: &mut Inlet) {
        let conn = &*self.conn;
        let sock = match conn.stream() {
            Ok(s) => s,
            Err(e) => {
                input.report(RuntimeError::new(format!(
                    "{}: write error: {}",
                    conn.describe(),
                    reason(&e)
                )));
                return;
            }
        };
        let mut buf = Vec::new();
        loop {
            let batch = match self.next(input).await {
                Next::Batch(b) => b,
                Next::End => break,
                Next::Reset => return,
            };
            Self::append(input, batch, &mut buf);
            // Gather what is already waiting into one write; stop as soon as nothing
            // is, so that a line goes out promptly (6.2).
            let mut ended = false;
            while buf.len() < WRITE_COALESCE {
                match Self::next_now(input).await {
                    Some(Some(b)) => Self::append(input, b, &mut buf),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            if let Err(e) = write_all(sock, &buf).await {
                // EPIPE/ECONNRESET end this write side only (D40).
                if !is_disconnect(&e) {
                    input.report(RuntimeError::new(format!(
                        "{}: write error: {}",
                        conn.describe(),
                        reason(&e)
                    )));
                }
                return;
            }
            buf.clear();
            if ended {
                break;
            }
        }
        // Input ended: half-close; the peer reads end of file and may go on sending.
        // The descriptor stays open while the read side runs (D43).
        let _ = socket2::SockRef::from(sock).shutdown(Shutdown::Write);
    }
}

async fn write_all(sock: &tokio::net::UnixStream, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        match sock.try_write(&buf[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// unix_server

/// Binds `path`, replacing a stale socket file that nobody listens on.
fn bind(path: &Path) -> io::Result<std_unix::UnixListener> {
    match std_unix::UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            let stale = is_socket
                && matches!(
                    std_unix::UnixStream::connect(path),
                    Err(ref c) if c.kind() == ErrorKind::ConnectionRefused
                );
            if !stale {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            std_unix::UnixListener::bind(path)
        }
        r => r,
    }
}

fn unix_server(_cx: &mut streem::ext::CallContext, vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("unix_server", vals);
    a.arity(1, 1)?;
    let path = path_arg(&a, 0)?;
    let listener = bind(&path).map_err(|e| {
        RuntimeError::new(format!(
            "unix_server: socket error: bind: \"{}\": {}",
            path.display(),
            reason(&e)
        ))
    })?;
    Ok(Value::Stream(Stream::source(Server {
        listener: Some(listener),
    })))
}

/// The producer of `unix_server`: one io object per accepted connection.
struct Server {
    listener: Option<std_unix::UnixListener>,
}

impl Source for Server {
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
        Box::pin(async move { self.accept_loop(out).await })
    }

    /// Socket work: on the runtime's I/O thread.
    fn io_bound(&self) -> bool {
        true
    }
}

impl Server {
    async fn accept_loop(mut self, out: &mut Outlet) {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| io::Error::other("no listener"))
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            });
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                out.report(RuntimeError::new(format!(
                    "unix_server: socket error: listen: {}",
                    reason(&e)
                )));
                return;
            }
        };
        loop {
            // Sending (even nothing) notices destinations that have closed (5.7).
            out.flush().await;
            if out.destinations_gone() {
                return;
            }
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _addr)) => out.emit(conn_value(Conn::new(None, Some(stream)))),
                    Err(e) => {
                        out.report(RuntimeError::new(format!(
                            "unix_server: socket error: accept: {}; the server goes on",
                            reason(&e)
                        )));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tokio::time::sleep(IDLE_CHECK) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// unix_socket

fn unix_socket(_cx: &mut streem::ext::CallContext, vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("unix_socket", vals);
    a.arity(1, 1)?;
    let path = path_arg(&a, 0)?;
    let stream = std_unix::UnixStream::connect(&path).map_err(|e| {
        RuntimeError::new(format!(
            "unix_socket: socket error: connect: \"{}\": {}",
            path.display(),
            reason(&e)
        ))
    })?;
    Ok(conn_value(Conn::new(Some(stream), None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_drop_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(reason(&e), "No such file or directory");
    }
}
