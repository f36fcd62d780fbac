//! Sockets (6.2): `tcp_server`, `tcp_socket` and connection io objects (D38, D40, D42,
//! D43).
//!
//! A connection is a [`Conn`] shared by its io object and by the two asynchronous
//! stages made from it on first use: the read side (a [`Source`] emitting lines) and the
//! write side (a [`Sink`] writing one line per value). The descriptor belongs to the
//! `Conn`, so it is closed when the io value and both stages are gone: only after both
//! directions have finished or were never used (D43). Sockets are created with the
//! standard library (there may be no runtime yet when a script calls `tcp_server` or
//! `tcp_socket`) and registered with tokio's reactor on first use inside a stage.
//!
//! Memory per connection is bounded (D2): an idle connection holds no buffer (reads go
//! through a per-thread scratch buffer, only a partial line is kept), a read emits at
//! most one scratch buffer of lines before waiting for room downstream, and the writer
//! coalesces at most [`WRITE_COALESCE`] bytes.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::sync::Notify;

use crate::builtins::io::os_reason;
use crate::ext::{
    Args, BoxFuture, Inlet, Io, IoBackend, IoMode, Outlet, Registry, RuntimeError, Sink, Source,
    Str, Stream, Value,
};

/// Bytes read from a socket at a time (into a per-thread scratch buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes the writer gathers from waiting values into one write.
const WRITE_COALESCE: usize = 256 * 1024;
/// A write buffer larger than this is released once written.
const WRITE_KEEP: usize = 16 * 1024;
/// Listen backlog (D42 asks for at least 128; the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;
/// Default and smallest cap on the length of a line read from a socket (D38).
const MAX_LINE_DEFAULT: usize = 64 << 20;
const MAX_LINE_MIN: usize = 1 << 20;
/// Time allowed for one connection attempt of `tcp_socket` (per address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Accept errors are reported at most once per this interval.
const ACCEPT_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The cap on a line read from a socket: `STRM_MAX_LINE` (bytes, at least 1 MiB) or
/// 64 MiB (D38).
fn max_line() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("STRM_MAX_LINE")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map(|n| n.max(MAX_LINE_MIN))
            .unwrap_or(MAX_LINE_DEFAULT)
    })
}

/// Raises the soft limit on open files to the hard limit (once), so that thousands of
/// connections fit.
fn raise_nofile_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let mut want = lim;
        want.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 && lim.rlim_max == libc::RLIM_INFINITY {
            // Linux refuses "unlimited" for descriptors: settle for a large number.
            want.rlim_cur = 1 << 20;
            libc::setrlimit(libc::RLIMIT_NOFILE, &want);
        }
    });
}

/// Runs a blocking operation (name resolution, connect); inside the running graph it is
/// moved off the worker so other stages go on.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

// ---------------------------------------------------------------------------------------
// Name resolution

/// `host:port` as messages show it (`[::1]:8007` for an IPv6 literal).
fn host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `getaddrinfo` for stream sockets: every address of `host` (or the wildcard addresses
/// with `passive` and no host) with `service` (a decimal port or a service name).
/// Errors carry the resolver's message.
fn resolve(host: Option<&str>, service: &str, passive: bool) -> Result<Vec<SocketAddr>, String> {
    let c_host = match host {
        Some(h) => Some(CString::new(h).map_err(|_| "host name contains a NUL byte".to_string())?),
        None => None,
    };
    let c_serv = CString::new(service).map_err(|_| "port contains a NUL byte".to_string())?;
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_protocol = libc::IPPROTO_TCP;
    if passive {
        hints.ai_flags = libc::AI_PASSIVE;
    }
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    let rc = unsafe {
        libc::getaddrinfo(
            c_host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()),
            c_serv.as_ptr(),
            &hints,
            &mut res,
        )
    };
    if rc != 0 {
        if rc == libc::EAI_SYSTEM {
            return Err(os_reason(&io::Error::last_os_error()));
        }
        let msg = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(msg.to_string_lossy().into_owned());
    }
    let mut out = Vec::new();
    let mut p = res;
    while !p.is_null() {
        let ai = unsafe { &*p };
        if let Some(a) = unsafe { sockaddr_to_std(ai.ai_addr, ai.ai_addrlen) } {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        p = ai.ai_next;
    }
    unsafe { libc::freeaddrinfo(res) };
    if out.is_empty() {
        return Err("no address found".into());
    }
    Ok(out)
}

/// # Safety
/// `sa` must point to a socket address of `len` bytes (or be null).
unsafe fn sockaddr_to_std(sa: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    match (*sa).sa_family as i32 {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            let sin = &*(sa as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The port argument (6.2): a number (truncated) or a string holding a decimal number
/// or a service name, returned as the text given to the resolver.
fn port_arg(a: &Args, i: usize) -> Result<String, RuntimeError> {
    let v = a.value(i)?;
    let n = match v {
        Value::Int(_) | Value::Float(_) => a.int(i)?,
        Value::Str(s) => {
            let text = s.to_str_lossy().trim().to_string();
            if text.is_empty() {
                return Err(a.error(i, "port required (a number or a service name)"));
            }
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(text);
            }
            text.parse::<i64>().unwrap_or(i64::MAX)
        }
        _ => return Err(a.error(i, "port number or service name required")),
    };
    if !(0..=65535).contains(&n) {
        return Err(a.error(i, &format!("port {n} out of range (0..65535)")));
    }
    Ok(n.to_string())
}

/// A port text as a number, resolving a service name.
fn service_port(name: &str, service: &str) -> Result<u16, RuntimeError> {
    if let Ok(n) = service.parse::<u16>() {
        return Ok(n);
    }
    match resolve(None, service, true) {
        Ok(addrs) => Ok(addrs[0].port()),
        Err(msg) => Err(RuntimeError::new(format!(
            "{name}: cannot resolve port \"{service}\": {msg}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Connections

/// One TCP connection, shared by its io object and its read and write stages. The
/// descriptor is closed when the last of them lets go (D43).
struct Conn {
    /// A socket connected before the runtime existed, registered on first use.
    pending: Mutex<Option<std::net::TcpStream>>,
    sock: OnceLock<tokio::net::TcpStream>,
    /// The read side saw a reset or a read error: the write side ends too (6.2: a reset
    /// is noticed early).
    reset: AtomicBool,
    reset_notify: Notify,
    /// The read side has seen end of file (or an error): nothing unread can be lost.
    read_done: AtomicBool,
    /// The connection's write stream, to recognise an echo (`s | s`).
    write_stream: OnceLock<std::sync::Weak<Stream>>,
    /// Held while writing: by the writer, and by a reader that echoes directly.
    write_lock: tokio::sync::Mutex<()>,
}

/// Closing a socket with unread input makes the kernel send a reset, which can destroy
/// echo data the peer has not read yet. So a connection dropped before its read side
/// reached end of file (a read side never used, stopped early, or ended by an overlong
/// line) is closed gracefully: write direction shut down, input read and discarded
/// until the peer's end of file, for at most [`LINGER_TIME`] / [`LINGER_MAX`] bytes.
impl Drop for Conn {
    fn drop(&mut self) {
        if self.read_done.load(Ordering::Acquire) || self.reset.load(Ordering::Acquire) {
            return;
        }
        let Some(sock) = self.sock.take() else {
            return;
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(linger(sock));
        }
    }
}

/// Longest a closed connection is drained for, and most bytes discarded.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_MAX: usize = 16 << 20;

async fn linger(sock: tokio::net::TcpStream) {
    let _ = SockRef::from(&sock).shutdown(Shutdown::Write);
    let deadline = tokio::time::sleep(LINGER_TIME);
    tokio::pin!(deadline);
    let mut discarded = 0;
    loop {
        let r = SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < READ_CHUNK {
                buf.resize(READ_CHUNK, 0);
            }
            sock.try_read(&mut buf)
        });
        match r {
            Ok(0) => return,
            Ok(n) => {
                discarded += n;
                if discarded > LINGER_MAX {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                tokio::select! {
                    _ = &mut deadline => return,
                    r = sock.readable() => if r.is_err() { return },
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Conn {
    fn from_std(s: std::net::TcpStream) -> Arc<Conn> {
        Arc::new(Conn {
            pending: Mutex::new(Some(s)),
            sock: OnceLock::new(),
            reset: AtomicBool::new(false),
            reset_notify: Notify::new(),
            read_done: AtomicBool::new(false),
            write_stream: OnceLock::new(),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The socket registered with the runtime (called inside a stage).
    fn stream(&self) -> io::Result<&tokio::net::TcpStream> {
        if let Some(s) = self.sock.get() {
            return Ok(s);
        }
        let mut pending = self.pending.lock();
        if let Some(s) = self.sock.get() {
            return Ok(s);
        }
        let std = pending
            .take()
            .ok_or_else(|| io::Error::new(ErrorKind::NotConnected, "socket already closed"))?;
        std.set_nonblocking(true)?;
        let s = tokio::net::TcpStream::from_std(std)?;
        let _ = self.sock.set(s);
        Ok(self.sock.get().expect("just set"))
    }

    fn fd(&self) -> i32 {
        match self.sock.get() {
            Some(s) => s.as_raw_fd(),
            None => self.pending.lock().as_ref().map_or(-1, |s| s.as_raw_fd()),
        }
    }

    /// How messages name the connection: its io object and its peer.
    fn describe(&self) -> String {
        let peer = match self.sock.get() {
            Some(s) => s.peer_addr().ok(),
            None => self
                .pending
                .lock()
                .as_ref()
                .and_then(|s| s.peer_addr().ok()),
        };
        let io = format!("<io: fd={} mode=rw>", self.fd());
        match peer {
            Some(p) => format!("connection {io} with {p}"),
            None => format!("connection {io}"),
        }
    }

    fn mark_reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.reset_notify.notify_one();
    }
}

/// Tunes a connected socket: no Nagle delay (writes are already coalesced and must go
/// out promptly, 6.2), keepalive so that a vanished peer is eventually noticed.
fn tune(sock: SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = sock.set_tcp_keepalive(&ka);
}

/// The io object of a connection (4.7): `<io: fd=N mode=rw>`.
fn conn_value(conn: Arc<Conn>) -> Value {
    let fd = conn.fd();
    Value::Io(Io::custom(fd, IoMode::ReadWrite, ConnBackend { conn }))
}

struct ConnBackend {
    conn: Arc<Conn>,
}

impl IoBackend for ConnBackend {
    fn make_reader(&self) -> Option<Arc<Stream>> {
        Some(Stream::source(Reader {
            conn: self.conn.clone(),
        }))
    }

    fn make_writer(&self) -> Option<Arc<Stream>> {
        let stream = Stream::sink(Writer {
            conn: self.conn.clone(),
        });
        let _ = self.conn.write_stream.set(Arc::downgrade(&stream));
        Some(stream)
    }
}

thread_local! {
    /// Read buffer of this worker thread: an idle connection holds none.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Errors that mean the peer has gone, not worth a report.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
    ) || e.raw_os_error() == Some(libc::ETIMEDOUT)
        || e.raw_os_error() == Some(libc::EHOSTUNREACH)
        || e.raw_os_error() == Some(libc::ENETUNREACH)
}

/// A line without a carriage return just before its end (D38).
#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

/// The line being assembled is longer than allowed (D38).
struct LineTooLong;

/// Where the lines of a read go.
#[derive(Clone, Copy)]
enum Lines {
    /// One value per line.
    Values,
    /// One string holding them joined by newlines: for destinations that only write
    /// lines, the same bytes as one value per line.
    Joined,
}

/// Emits the complete lines of `buf` (the first `from` bytes hold no newline) and
/// returns where its unterminated rest starts.
fn emit_lines(
    buf: &[u8],
    from: usize,
    out: &mut Outlet,
    max: usize,
    to: Lines,
) -> Result<usize, LineTooLong> {
    let mut start = 0;
    let mut cr = false;
    let per_line = matches!(to, Lines::Values);
    for pos in memchr::memchr_iter(b'\n', &buf[from..]) {
        let pos = from + pos;
        let line = strip_cr(&buf[start..pos]);
        if line.len() > max {
            return Err(LineTooLong);
        }
        if per_line {
            out.emit(Value::bytes(line));
        } else {
            cr |= line.len() != pos - start;
        }
        start = pos + 1;
    }
    if start == 0 {
        return Ok(0);
    }
    match to {
        Lines::Values => {}
        Lines::Joined if cr => {
            for line in buf[..start - 1].split(|&b| b == b'\n') {
                out.emit(Value::bytes(strip_cr(line)));
            }
        }
        Lines::Joined => out.emit(Value::bytes(&buf[..start - 1])),
    }
    Ok(start)
}

/// An echo (`s | s` whose writer has no other input) streams: each read's bytes go
/// straight back to the connection's own socket, with no value and no line held, as
/// an event-loop echo server does. The output is the bytes of the lines the values
/// would have been (D38: a CR before an LF dropped, an unterminated last line ended),
/// so only the line state crosses reads: the length of the current line (for the cap)
/// and a CR at the end of a read, held until the next byte shows whether an LF follows
/// it. While a line is partly written the echo holds the connection's write lock, so
/// no other writer can put a line inside it (docs/decisions.md, "the streaming echo").
#[derive(Default)]
struct Echo {
    /// Bytes of the current line read so far, a held CR included.
    line: usize,
    /// The last byte read is a CR not yet written.
    held_cr: bool,
    /// What the socket did not take at once: written before anything more is read.
    backlog: Vec<u8>,
}

impl Echo {
    /// Echoes one read, as far as the socket takes it without waiting (the rest goes
    /// to the backlog). `held` is the write lock while the echo holds it.
    fn bytes<'c>(
        &mut self,
        data: &[u8],
        max: usize,
        conn: &'c Conn,
        sock: &tokio::net::TcpStream,
        held: &mut Option<tokio::sync::MutexGuard<'c, ()>>,
    ) -> Result<(), LineTooLong> {
        let n = data.len();
        // One pass in the common case: back to the last LF (a CR met first means the
        // slow path anyway), then forward for a CR before it.
        let (last_nl, has_cr) = match memchr::memrchr2(b'\n', b'\r', data) {
            None => (None, false),
            Some(p) if data[p] == b'\n' => (Some(p), memchr::memchr(b'\r', &data[..p]).is_some()),
            Some(p) => (memchr::memrchr(b'\n', &data[..p]), true),
        };
        // D38's cap: only the line that continues into this read can be over it,
        // since the others lie within the read.
        match last_nl {
            None => {
                let pending = self.line + n;
                if pending > max + 1 || (pending == max + 1 && data[n - 1] != b'\r') {
                    return Err(LineTooLong);
                }
            }
            Some(_) if self.line + n > max => {
                let first = memchr::memchr(b'\n', data).unwrap_or(0);
                let ends_cr = if first > 0 {
                    data[first - 1] == b'\r'
                } else {
                    self.held_cr
                };
                if self.line + first - usize::from(ends_cr) > max {
                    return Err(LineTooLong);
                }
            }
            Some(_) => {}
        }
        self.line = match last_nl {
            Some(last) => n - 1 - last,
            None => self.line + n,
        };
        if !self.held_cr && !has_cr {
            self.write(data, conn, sock, held);
            return Ok(());
        }
        // A CR somewhere: drop the ones just before an LF, hold one at the end.
        let mut clean = Vec::with_capacity(n + 1);
        if self.held_cr && data[0] != b'\n' {
            clean.push(b'\r');
        }
        let mut from = 0;
        for cr in memchr::memchr_iter(b'\r', data) {
            if cr + 1 == n || data[cr + 1] == b'\n' {
                clean.extend_from_slice(&data[from..cr]);
                from = cr + 1;
            }
        }
        self.held_cr = data[n - 1] == b'\r';
        clean.extend_from_slice(&data[from..]);
        self.write(&clean, conn, sock, held);
        Ok(())
    }

    /// The input ended (or failed): an unterminated last line is still a line (D38).
    fn end(&mut self) {
        if self.held_cr {
            self.backlog.push(b'\r');
        }
        if self.line > 0 {
            self.backlog.push(b'\n');
        }
        self.line = 0;
        self.held_cr = false;
    }

    /// Whether a line is partly written: the write lock stays with the echo.
    fn mid_line(&self) -> bool {
        self.line > 0
    }

    /// Writes `bytes` as far as the socket takes them without waiting, if nothing
    /// waits before them and the lock is free; the rest goes to the backlog.
    fn write<'c>(
        &mut self,
        mut bytes: &[u8],
        conn: &'c Conn,
        sock: &tokio::net::TcpStream,
        held: &mut Option<tokio::sync::MutexGuard<'c, ()>>,
    ) {
        if self.backlog.is_empty() && held.is_none() {
            *held = conn.write_lock.try_lock().ok();
        }
        if self.backlog.is_empty() && held.is_some() {
            while !bytes.is_empty() {
                match sock.try_write(bytes) {
                    Ok(n) => bytes = &bytes[n..],
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // Full (or failed: the wait for room reports it).
                    Err(_) => break,
                }
            }
        }
        self.backlog.extend_from_slice(bytes);
    }

    /// Writes the backlog, waiting for room (D2: nothing more is read meanwhile) and
    /// for the lock (the writer may be writing a line of another input).
    async fn flush<'c>(
        &mut self,
        conn: &'c Conn,
        sock: &tokio::net::TcpStream,
        held: &mut Option<tokio::sync::MutexGuard<'c, ()>>,
    ) -> io::Result<()> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        if held.is_none() {
            *held = Some(conn.write_lock.lock().await);
        }
        let mut done = 0;
        while done < self.backlog.len() {
            match sock.try_write(&self.backlog[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => sock.writable().await?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.backlog.clear();
        if self.backlog.capacity() > WRITE_KEEP {
            self.backlog = Vec::new();
        }
        Ok(())
    }
}

/// A pending line may be one byte over the cap: a CR that may turn out to precede
/// the LF.
fn check_pending(partial: &[u8], max: usize) -> Result<(), LineTooLong> {
    if partial.len() > max + 1 || (partial.len() == max + 1 && partial.last() != Some(&b'\r')) {
        return Err(LineTooLong);
    }
    Ok(())
}

/// Reads once into this thread's scratch buffer and hands what came to `take`.
fn read_into_scratch(
    sock: &tokio::net::TcpStream,
    take: impl FnOnce(&[u8]) -> Result<(), LineTooLong>,
) -> ReadStep {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        match read_draining(sock, &mut buf) {
            Ok(0) => ReadStep::Eof,
            Ok(n) => match take(&buf[..n]) {
                Ok(()) => ReadStep::Data,
                Err(LineTooLong) => ReadStep::TooLong,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => ReadStep::WouldBlock,
            Err(e) if e.kind() == ErrorKind::Interrupted => ReadStep::Data,
            Err(e) => ReadStep::Failed(e),
        }
    })
}

/// `try_read`, except that a read shorter than `buf` (which, for TCP, found the
/// receive queue empty) also clears the socket's readiness, as tokio's own `poll_read`
/// does: the next read then waits for new data (an edge of the edge-triggered epoll)
/// instead of making a system call only to learn that there is none. A third of the
/// reads of an echo server were such calls.
fn read_draining(sock: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_raw_fd();
    let mut drained = None;
    let r = sock.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        match usize::try_from(n) {
            Err(_) => Err(io::Error::last_os_error()),
            Ok(n) if n > 0 && n < buf.len() => {
                drained = Some(n);
                Err(ErrorKind::WouldBlock.into())
            }
            Ok(n) => Ok(n),
        }
    });
    match (r, drained) {
        (_, Some(n)) => Ok(n),
        (r, None) => r,
    }
}

/// Makes room for a read of [`READ_CHUNK`] bytes after the pending line. A grown
/// buffer gets room for two reads, so that a line crossing reads settles in one
/// allocation, and only the bytes held are copied (`reserve` would realloc, and the
/// allocator copies the whole old block).
fn make_room(partial: &mut Vec<u8>) {
    if partial.capacity() - partial.len() < READ_CHUNK {
        let len = partial.len();
        let mut grown = Vec::with_capacity((len + 2 * READ_CHUNK).max(2 * len));
        grown.extend_from_slice(partial);
        *partial = grown;
    }
}

/// Splits `data` (read into the scratch buffer while no line was pending) into lines;
/// the unterminated rest goes to the empty `partial`.
fn split_lines(
    data: &[u8],
    partial: &mut Vec<u8>,
    out: &mut Outlet,
    max: usize,
    to: Lines,
) -> Result<(), LineTooLong> {
    debug_assert!(partial.is_empty());
    let start = emit_lines(data, 0, out, max, to)?;
    partial.extend_from_slice(&data[start..]);
    check_pending(partial, max)
}

/// Like [`split_lines`] for data read straight into `partial` after its first `from`
/// bytes (which hold no newline): a long line is not copied once more. What is left
/// unterminated moves to the front.
fn split_in_place(
    partial: &mut Vec<u8>,
    from: usize,
    out: &mut Outlet,
    max: usize,
    to: Lines,
) -> Result<(), LineTooLong> {
    let start = emit_lines(partial, from, out, max, to)?;
    if start > 0 {
        let rest = partial.len() - start;
        if rest == 0 {
            // No line pending: reads go through the scratch buffer again, and an idle
            // connection keeps no buffer.
            *partial = Vec::new();
        } else if partial.capacity() > 4 * READ_CHUNK && rest < READ_CHUNK {
            // A long line has gone: do not keep its buffer.
            *partial = partial[start..].to_vec();
        } else {
            partial.copy_within(start.., 0);
            partial.truncate(rest);
        }
    }
    check_pending(partial, max)
}

/// The read side of a connection: a producer of lines (5.9, D38).
struct Reader {
    conn: Arc<Conn>,
}

impl Source for Reader {
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
        Box::pin(async move { self.read_loop(out).await })
    }

    fn io_bound(&self) -> bool {
        true
    }
}

enum ReadStep {
    Data,
    Eof,
    WouldBlock,
    TooLong,
    Failed(io::Error),
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
                    os_reason(&e)
                )));
                return;
            }
        };
        let max = max_line();
        let mut partial: Vec<u8> = Vec::new();
        // An echo (`s | s`) streams the bytes straight back: decided at the first
        // read, given up (for good, once its current line is done) when the writer
        // gets another input.
        let mut echo: Option<bool> = None;
        // The connection's write stream, held once it exists (not upgraded per read).
        let mut writer: Option<Arc<Stream>> = None;
        let mut streamed = Echo::default();
        // The connection's write lock, while the echo holds it (mid-line).
        let mut held = None;
        loop {
            if out.destinations_gone() {
                return;
            }
            if let Err(e) = streamed.flush(conn, sock, &mut held).await {
                self.echo_failed(out, e);
                return;
            }
            if !streamed.mid_line() {
                held = None;
            }
            if echo != Some(false) {
                if writer.is_none() {
                    writer = conn.write_stream.get().and_then(std::sync::Weak::upgrade);
                }
                let now = self.is_echo(out, writer.as_ref());
                echo = Some(match echo {
                    None => now,
                    Some(_) => now || streamed.mid_line(),
                });
            }
            let step = if echo == Some(true) {
                read_into_scratch(sock, |data| {
                    streamed.bytes(data, max, conn, sock, &mut held)
                })
            } else {
                // Lines for destinations that only write them (`s | stdout`) travel
                // joined: one value per read, not one per line.
                let to = if out.only_line_writers() {
                    Lines::Joined
                } else {
                    Lines::Values
                };
                if !partial.is_empty() {
                    // Inside a line: read straight into its buffer.
                    make_room(&mut partial);
                    let from = partial.len();
                    match sock.try_read_buf(&mut partial) {
                        Ok(0) => ReadStep::Eof,
                        Ok(_) => match split_in_place(&mut partial, from, out, max, to) {
                            Ok(()) => ReadStep::Data,
                            Err(LineTooLong) => ReadStep::TooLong,
                        },
                        Err(e) if e.kind() == ErrorKind::WouldBlock => ReadStep::WouldBlock,
                        Err(e) if e.kind() == ErrorKind::Interrupted => ReadStep::Data,
                        Err(e) => ReadStep::Failed(e),
                    }
                } else {
                    read_into_scratch(sock, |data| split_lines(data, &mut partial, out, max, to))
                }
            };
            match step {
                ReadStep::Data => {
                    if out.pending() > 0 {
                        // Send what this read produced, waiting for room (D2): a slow
                        // graph stops the reading of the socket.
                        out.flush().await;
                    }
                }
                ReadStep::WouldBlock => {
                    if partial.is_empty() {
                        // An idle connection keeps no buffer.
                        partial = Vec::new();
                    }
                    if let Err(e) = sock.readable().await {
                        self.fail(out, e);
                        return;
                    }
                }
                ReadStep::Eof => {
                    conn.read_done.store(true, Ordering::Release);
                    // The peer has shut down its sending side: an unterminated last
                    // line is still a line (D38).
                    if echo == Some(true) {
                        streamed.end();
                        if let Err(e) = streamed.flush(conn, sock, &mut held).await {
                            self.echo_failed(out, e);
                        }
                    } else if !partial.is_empty() {
                        out.emit(Value::bytes(&partial));
                    }
                    return;
                }
                ReadStep::TooLong => {
                    if let Err(e) = streamed.flush(conn, sock, &mut held).await {
                        self.echo_failed(out, e);
                        return;
                    }
                    out.flush().await;
                    out.report(RuntimeError::new(format!(
                        "{}: line longer than {} bytes (limit set by STRM_MAX_LINE); \
                         its read side is closed",
                        conn.describe(),
                        max
                    )));
                    return;
                }
                ReadStep::Failed(e) => {
                    if echo == Some(true) {
                        streamed.end();
                        let _ = streamed.flush(conn, sock, &mut held).await;
                    } else if !partial.is_empty() {
                        out.emit(Value::bytes(&partial));
                    }
                    self.fail(out, e);
                    return;
                }
            }
        }
    }

    /// Whether the only destination is this connection's own writer, with no other
    /// input, and nothing is waiting to be sent to it: an echo.
    fn is_echo(&self, out: &mut Outlet, writer: Option<&Arc<Stream>>) -> bool {
        writer.is_some_and(|w| {
            out.pending() == 0 && w.input_count() == 1 && out.sole_destination_is(w)
        })
    }

    /// An echo's write failed: as for the writer, EPIPE/ECONNRESET end the write side
    /// quietly (D40), anything else is reported; the writer is told, and nothing more
    /// is read.
    fn echo_failed(&self, out: &Outlet, e: io::Error) {
        if !is_disconnect(&e) {
            out.report(RuntimeError::new(format!(
                "{}: write error: {}",
                self.conn.describe(),
                os_reason(&e)
            )));
        }
        self.conn.mark_reset();
    }

    /// A read error ends the read side; the write side is told (a reset ends it too).
    fn fail(&self, out: &Outlet, e: io::Error) {
        self.conn.read_done.store(true, Ordering::Release);
        self.conn.mark_reset();
        if !is_disconnect(&e) {
            out.report(RuntimeError::new(format!(
                "{}: read error: {}",
                self.conn.describe(),
                os_reason(&e)
            )));
        }
    }
}

/// The write side of a connection: each value's text plus a newline (5.9, 6.2).
struct Writer {
    conn: Arc<Conn>,
}

impl Sink for Writer {
    fn run<'a>(self: Box<Self>, input: &'a mut Inlet) -> BoxFuture<'a> {
        Box::pin(async move { self.write_loop(input).await })
    }

    fn writes_lines(&self) -> bool {
        true
    }

    fn io_bound(&self) -> bool {
        true
    }
}

/// What waiting for the writer's next input gave.
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

    /// The next batch if one is already waiting (`None` inside: nothing waiting).
    /// `Inlet::next` is cancel-safe: an unfinished call has consumed nothing.
    async fn next_now(input: &mut Inlet) -> Option<Option<Vec<Value>>> {
        tokio::select! {
            biased;
            b = input.next() => Some(b),
            _ = std::future::ready(()) => None,
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
                    os_reason(&e)
                )));
                return;
            }
        };
        let mut buf = OutBuf::default();
        loop {
            let batch = match self.next(input).await {
                Next::Batch(b) => b,
                Next::End => break,
                Next::Reset => return,
            };
            buf.append(input, batch);
            // Gather what is already waiting into one write (6.2).
            let mut ended = false;
            while buf.bytes < WRITE_COALESCE {
                match Self::next_now(input).await {
                    Some(Some(b)) => buf.append(input, b),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let written = {
                let _guard = conn.write_lock.lock().await;
                buf.write_to(sock).await
            };
            if let Err(e) = written {
                // EPIPE/ECONNRESET end this write side only (D40).
                if !is_disconnect(&e) {
                    input.report(RuntimeError::new(format!(
                        "{}: write error: {}",
                        conn.describe(),
                        os_reason(&e)
                    )));
                }
                return;
            }
            if ended {
                break;
            }
        }
        // Input ended: half-close, the peer reads end of file and may go on sending
        // (6.2). The descriptor stays open while the read side runs (D43).
        let _ = SockRef::from(sock).shutdown(Shutdown::Write);
    }
}

/// A line at least this long is written from the value itself (vectored write)
/// instead of being copied into the writer's buffer.
const BIG_LINE: usize = 2048;
/// Most slices per vectored write.
const MAX_IOV: usize = 64;

/// One piece of pending output.
enum Seg {
    /// A range of `OutBuf::small`.
    Small(usize, usize),
    /// A long string written in place.
    Big(Str),
}

/// Output gathered for one (vectored) write: short lines and newlines copied into one
/// buffer, long strings referenced.
#[derive(Default)]
struct OutBuf {
    small: Vec<u8>,
    /// Start of the part of `small` not yet in `segs`.
    open: usize,
    segs: Vec<Seg>,
    bytes: usize,
}

impl OutBuf {
    fn append(&mut self, input: &Inlet, batch: Vec<Value>) {
        for v in batch {
            match v {
                Value::Str(s) if s.as_bytes().len() >= BIG_LINE => {
                    self.bytes += s.as_bytes().len() + 1;
                    self.close_small();
                    self.segs.push(Seg::Big(s));
                    self.small.push(b'\n');
                }
                Value::Str(s) => {
                    self.bytes += s.as_bytes().len() + 1;
                    self.small.extend_from_slice(s.as_bytes());
                    self.small.push(b'\n');
                }
                v => {
                    let mark = self.small.len();
                    if let Err(e) = input.display(&v, &mut self.small) {
                        self.small.truncate(mark);
                        input.report(e);
                        continue;
                    }
                    self.small.push(b'\n');
                    self.bytes += self.small.len() - mark;
                }
            }
        }
    }

    fn close_small(&mut self) {
        if self.small.len() > self.open {
            self.segs.push(Seg::Small(self.open, self.small.len()));
            self.open = self.small.len();
        }
    }

    fn seg_bytes<'a>(&'a self, seg: &'a Seg) -> &'a [u8] {
        match seg {
            Seg::Small(a, b) => &self.small[*a..*b],
            Seg::Big(s) => s.as_bytes(),
        }
    }

    /// Writes everything, waiting while the socket is full (D2), then empties the
    /// buffer (releasing a large one).
    async fn write_to(&mut self, sock: &tokio::net::TcpStream) -> io::Result<()> {
        self.close_small();
        let (mut idx, mut off) = (0usize, 0usize);
        while idx < self.segs.len() {
            let r = if idx + 1 == self.segs.len() {
                sock.try_write(&self.seg_bytes(&self.segs[idx])[off..])
            } else {
                let mut iov: smallvec::SmallVec<[io::IoSlice<'_>; MAX_IOV]> =
                    smallvec::SmallVec::new();
                for (k, seg) in self.segs[idx..].iter().take(MAX_IOV).enumerate() {
                    let b = self.seg_bytes(seg);
                    iov.push(io::IoSlice::new(if k == 0 { &b[off..] } else { b }));
                }
                sock.try_write_vectored(&iov)
            };
            match r {
                Ok(mut n) => {
                    while n > 0 {
                        let left = self.seg_bytes(&self.segs[idx]).len() - off;
                        if n >= left {
                            n -= left;
                            idx += 1;
                            off = 0;
                        } else {
                            off += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => sock.writable().await?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.segs.clear();
        self.open = 0;
        self.bytes = 0;
        if self.small.capacity() > WRITE_KEEP {
            self.small = Vec::new();
        } else {
            self.small.clear();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// tcp_server

/// Creates one listening socket.
fn listen_on(addr: SocketAddr, v6only: bool) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(v6only)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {}", os_reason(&e))))?;
    sock.listen(BACKLOG)
        .map_err(|e| io::Error::new(e.kind(), format!("listen {addr}: {}", os_reason(&e))))?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Listening sockets for `tcp_server(port [, host])` (D42).
fn listeners(
    name: &str,
    port: &str,
    host: Option<&str>,
) -> Result<Vec<std::net::TcpListener>, RuntimeError> {
    let sock_err = |e: io::Error| {
        let what = if e.to_string().starts_with("listen") {
            "listen"
        } else {
            "bind"
        };
        let msg = e.to_string();
        let detail = msg.strip_prefix(what).map(str::trim_start).unwrap_or(&msg);
        RuntimeError::new(format!("{name}: socket error: {what}: {detail}"))
    };
    match host {
        None => {
            let port = service_port(name, port)?;
            // One dual-stack socket; IPv4 alone if the system has no IPv6.
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match listen_on(v6, false) {
                Ok(l) => Ok(vec![l]),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAFNOSUPPORT)
                            | Some(libc::EADDRNOTAVAIL)
                            | Some(libc::EPROTONOSUPPORT)
                    ) || e.kind() == ErrorKind::AddrNotAvailable =>
                {
                    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                    listen_on(v4, false).map(|l| vec![l]).map_err(sock_err)
                }
                Err(e) => Err(sock_err(e)),
            }
        }
        Some(h) => {
            let addrs = resolve(Some(h), port, true).map_err(|msg| {
                RuntimeError::new(format!(
                    "{name}: cannot resolve {}: {msg}",
                    host_port(h, port)
                ))
            })?;
            // Several addresses (a name with IPv4 and IPv6 ones): one socket each, the
            // IPv6 ones IPv6-only so that they do not collide with the IPv4 ones.
            let v6only = addrs.iter().any(|a| a.is_ipv4());
            addrs
                .iter()
                .map(|a| listen_on(*a, v6only).map_err(sock_err))
                .collect()
        }
    }
}

/// The producer of `tcp_server`: one io object per accepted connection.
struct Server {
    listeners: Vec<std::net::TcpListener>,
}

impl Source for Server {
    fn run<'a>(self: Box<Self>, out: &'a mut Outlet) -> BoxFuture<'a> {
        Box::pin(async move { self.accept_loop(out).await })
    }

    fn io_bound(&self) -> bool {
        true
    }
}

/// Rate-limited reporting of accept failures.
struct AcceptErrors {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn report(&mut self, out: &Outlet, e: &io::Error) {
        let now = Instant::now();
        if let Some(t) = self.last {
            if now.duration_since(t) < ACCEPT_REPORT_INTERVAL {
                self.suppressed += 1;
                return;
            }
        }
        let more = match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} more accept errors in the last second)"),
        };
        out.report(RuntimeError::new(format!(
            "tcp_server: socket error: accept: {}{more}; the server goes on",
            os_reason(e)
        )));
        self.last = Some(now);
        self.suppressed = 0;
    }
}

impl Server {
    async fn accept_loop(self, out: &mut Outlet) {
        // Accepted sockets stay unregistered until their reader or writer first uses
        // them, so that they join the reactor of the thread their tasks run on (the
        // I/O thread for an echo), whichever thread accepts them.
        let mut ls = Vec::with_capacity(self.listeners.len());
        for l in self.listeners {
            let registered = l.set_nonblocking(true).and_then(|()| {
                // SAFETY: the listener owns its descriptor, open and the same for as
                // long as the `AsyncFd` holds it.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        l,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(|e| e.into_parts().1)
            });
            match registered {
                Ok(l) => ls.push(l),
                Err(e) => {
                    out.report(RuntimeError::new(format!(
                        "tcp_server: socket error: listen: {}",
                        os_reason(&e)
                    )));
                    return;
                }
            }
        }
        let mut errors = AcceptErrors {
            last: None,
            suppressed: 0,
        };
        let mut turn = 0usize;
        loop {
            if out.destinations_gone() {
                return;
            }
            let n = ls.len();
            let r = std::future::poll_fn(|cx| {
                for k in 0..n {
                    let i = (turn + k) % n;
                    // Until the listener is not ready (which registers the waker).
                    while let Poll::Ready(ready) = ls[i].poll_read_ready(cx) {
                        let mut ready = match ready {
                            Ok(r) => r,
                            Err(e) => return Poll::Ready(Err(e)),
                        };
                        if let Ok(r) = ready.try_io(|l| l.get_ref().accept()) {
                            turn = i + 1;
                            return Poll::Ready(r);
                        }
                    }
                }
                Poll::Pending
            })
            .await;
            match r {
                Ok((stream, _peer)) => {
                    tune(SockRef::from(&stream));
                    out.emit(conn_value(Conn::from_std(stream)));
                    out.flush().await;
                }
                Err(e) => {
                    errors.report(out, &e);
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        // Out of descriptors or memory: give the others time to finish.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

fn tcp_server(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("tcp_server", vals);
    a.arity(1, 2)?;
    let port = port_arg(&a, 0)?;
    let host = match a.get(1) {
        None | Some(Value::Nil) => None,
        Some(_) => Some(a.str(1)?.to_str_lossy().into_owned()),
    };
    raise_nofile_limit();
    let ls = blocking(|| listeners("tcp_server", &port, host.as_deref()))?;
    Ok(Value::Stream(Stream::source(Server { listeners: ls })))
}

// ---------------------------------------------------------------------------------------
// tcp_socket

/// Resolves and connects, trying every address in order (6.2, D42).
fn connect(host: &str, port: &str) -> Result<std::net::TcpStream, RuntimeError> {
    let hp = host_port(host, port);
    let addrs = resolve(Some(host), port, false)
        .map_err(|msg| RuntimeError::new(format!("tcp_socket: cannot resolve {hp}: {msg}")))?;
    let mut last: Option<io::Error> = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map_or_else(|| "no address".to_string(), |e| os_reason(&e));
    Err(RuntimeError::new(format!(
        "tcp_socket: socket error: connect to {hp}: {reason}"
    )))
}

fn tcp_socket(vals: &[Value]) -> Result<Value, RuntimeError> {
    let a = Args::new("tcp_socket", vals);
    a.arity(2, 2)?;
    let host = a.str(0)?.to_str_lossy().into_owned();
    if host.is_empty() {
        return Err(a.error(0, "host name required"));
    }
    let port = port_arg(&a, 1)?;
    let s = blocking(|| connect(&host, &port))?;
    tune(SockRef::from(&s));
    Ok(conn_value(Conn::from_std(s)))
}

pub fn register(r: &Registry) {
    r.define_stage_fn("tcp_server", |_cx, vals| tcp_server(vals));
    r.define_fn("tcp_socket", |_cx, vals| tcp_socket(vals));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_one_cr() {
        assert_eq!(strip_cr(b"a\r"), b"a");
        assert_eq!(strip_cr(b"a\r\r"), b"a\r");
        assert_eq!(strip_cr(b""), b"");
        assert_eq!(strip_cr(b"\r"), b"");
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("::1", "80"), "[::1]:80");
        assert_eq!(host_port("localhost", "80"), "localhost:80");
    }

    #[test]
    fn resolves_numeric_and_service_ports() {
        assert_eq!(service_port("t", "8007").ok(), Some(8007));
        let addrs = resolve(Some("127.0.0.1"), "80", false).unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap()]);
        assert!(resolve(None, "no-such-service-xyz", true).is_err());
    }
}
