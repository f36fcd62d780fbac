//! Io objects (4.7), line input (5.9, D38) and the ordered output writers (D39, D40).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};

use super::stream::{Produce, Role, Stage, StageContext, Stream};
use crate::eval::error::RuntimeError;
use crate::eval::ops::Num;
use crate::eval::value::{Fields, Value};

/// Buffer size above which an output writer hands its buffer over to be written.
const OUTPUT_FLUSH_AT: usize = 256 * 1024;
/// Lines a reader emits per turn before letting other producers run.
const READ_CHUNK: usize = 256 * 1024;
/// At most this much input (and whatever line it ends in) goes out per turn.
const BLOCK: usize = 64 * 1024;

/// One ordered, buffered writer for a standard stream (D39). Lines are appended whole,
/// so concurrent writers never interleave mid-line.
///
/// Large output is written behind: a full buffer goes to a writer thread of its own
/// (started with the first full buffer), so the `write` system calls (the kernel's copy
/// into the page cache is most of `stdin | stdout > file`) overlap with the graph's work
/// instead of stalling it. At most two buffers are in flight, so memory stays bounded
/// and a slow reader of our stdout still paces the program. Every explicit flush waits
/// until all of it is written, so ordering with stderr and exit is as before.
pub struct Output {
    inner: Mutex<OutputInner>,
    shared: Arc<OutputShared>,
    /// Told when output starts waiting in the buffer: the periodic flush (D39) sleeps
    /// until then, so a graph that prints nothing (a server) is never woken for it.
    unflushed: tokio::sync::Notify,
}

struct OutputInner {
    buf: Vec<u8>,
    /// Whether the writer thread runs (then every write of the sink happens there).
    behind: bool,
}

/// What the appending side and the writer thread share.
struct OutputShared {
    sink: Mutex<Box<dyn Write + Send>>,
    broken: AtomicBool,
    handoff: Mutex<Handoff>,
    changed: Condvar,
}

#[derive(Default)]
struct Handoff {
    /// The buffer waiting to be written.
    full: Option<Vec<u8>>,
    /// Written buffers, kept for reuse.
    spare: Vec<Vec<u8>>,
    /// The writer thread is inside `write`.
    writing: bool,
    /// The `Output` is gone: the writer thread ends.
    quit: bool,
}

/// A `Write` for a file descriptor the process does not own (0, 1, 2).
struct FdWriter(i32);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::FromRawFd;
        let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.0) });
        (&*f).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OutputShared {
    /// Writes `buf` to the sink; a failure (EPIPE/ECONNRESET, D40, or any other) means
    /// the sink is gone.
    fn write(&self, buf: &[u8]) {
        if buf.is_empty() || self.broken.load(Ordering::Relaxed) {
            return;
        }
        let mut sink = self.sink.lock();
        if sink.write_all(buf).and_then(|_| sink.flush()).is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
    }

    /// The writer thread: writes each handed-over buffer, in order.
    fn write_behind(&self) {
        let mut h = self.handoff.lock();
        loop {
            if let Some(mut buf) = h.full.take() {
                h.writing = true;
                self.changed.notify_all();
                drop(h);
                self.write(&buf);
                buf.clear();
                h = self.handoff.lock();
                h.spare.push(buf);
                h.writing = false;
                self.changed.notify_all();
            } else if h.quit {
                return;
            } else {
                self.changed.wait(&mut h);
            }
        }
    }
}

impl Output {
    /// A writer to `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> Arc<Output> {
        Arc::new(Output {
            inner: Mutex::new(OutputInner {
                buf: Vec::with_capacity(OUTPUT_FLUSH_AT),
                behind: false,
            }),
            shared: Arc::new(OutputShared {
                sink: Mutex::new(sink),
                broken: AtomicBool::new(false),
                handoff: Mutex::new(Handoff::default()),
                changed: Condvar::new(),
            }),
            unflushed: tokio::sync::Notify::new(),
        })
    }

    /// The writer of the process's standard output (descriptor 1).
    pub fn stdout() -> Arc<Output> {
        Output::new(Box::new(FdWriter(1)))
    }

    /// The writer of the process's standard error (descriptor 2).
    pub fn stderr() -> Arc<Output> {
        Output::new(Box::new(FdWriter(2)))
    }

    /// Replaces the sink (embedding: capture output). What was written before goes to
    /// the old sink.
    pub fn redirect(&self, sink: Box<dyn Write + Send>) {
        let mut inner = self.inner.lock();
        self.flush_locked(&mut inner);
        *self.shared.sink.lock() = sink;
    }

    /// Writing failed with EPIPE/ECONNRESET: the reader is gone (D40).
    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::Relaxed)
    }

    /// Appends `line` and a newline.
    pub fn write_line(&self, line: &[u8]) {
        let mut inner = self.inner.lock();
        if inner.buf.is_empty() {
            self.unflushed.notify_one();
        }
        inner.buf.extend_from_slice(line);
        inner.buf.push(b'\n');
        if inner.buf.len() >= OUTPUT_FLUSH_AT {
            self.hand_over(&mut inner);
        }
    }

    /// Appends bytes as they are.
    pub fn write_raw(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock();
        if inner.buf.is_empty() && !bytes.is_empty() {
            self.unflushed.notify_one();
        }
        inner.buf.extend_from_slice(bytes);
        if inner.buf.len() >= OUTPUT_FLUSH_AT {
            self.hand_over(&mut inner);
        }
    }

    /// Waits until output starts waiting in the buffer (at once if it did since the
    /// last call).
    pub async fn unflushed(&self) {
        self.unflushed.notified().await;
    }

    /// Flushes pending output unless another thread is writing right now (the
    /// periodic flush of D39). If some stays pending, the next [`Output::unflushed`]
    /// returns at once.
    pub fn flush_if_idle(&self) {
        let flushed = self.try_flush();
        if !flushed {
            self.unflushed.notify_one();
        }
    }

    /// Whether nothing is left pending.
    fn try_flush(&self) -> bool {
        let Some(mut inner) = self.inner.try_lock() else {
            return false;
        };
        if inner.buf.is_empty() {
            return true;
        }
        if !inner.behind {
            self.shared.write(&inner.buf);
            inner.buf.clear();
            return true;
        }
        let mut h = self.shared.handoff.lock();
        if h.full.is_none() {
            Self::put(&mut h, &mut inner.buf);
            self.shared.changed.notify_all();
            return true;
        }
        false
    }

    /// Writes pending output to the sink, and waits until it is written.
    pub fn flush(&self) {
        let mut inner = self.inner.lock();
        self.flush_locked(&mut inner);
    }

    /// Starts writing pending output without waiting for it to be written (before a
    /// read that may block: a prompt must show, but need not be on the screen before
    /// the read begins).
    pub fn flush_soon(&self) {
        let mut inner = self.inner.lock();
        if inner.buf.is_empty() {
            return;
        }
        if inner.behind {
            self.hand_over(&mut inner);
        } else {
            self.shared.write(&inner.buf);
            inner.buf.clear();
        }
    }

    fn flush_locked(&self, inner: &mut OutputInner) {
        if !inner.behind {
            self.shared.write(&inner.buf);
            inner.buf.clear();
            return;
        }
        let mut h = self.shared.handoff.lock();
        if !inner.buf.is_empty() {
            while h.full.is_some() {
                self.shared.changed.wait(&mut h);
            }
            Self::put(&mut h, &mut inner.buf);
            self.shared.changed.notify_all();
        }
        while h.full.is_some() || h.writing {
            self.shared.changed.wait(&mut h);
        }
    }

    /// A full buffer: to the writer thread (started now if need be), waiting while the
    /// one before is still waiting to be written.
    fn hand_over(&self, inner: &mut OutputInner) {
        if !inner.behind {
            let shared = self.shared.clone();
            let started = std::thread::Builder::new()
                .name("streem-output".into())
                .spawn(move || shared.write_behind());
            if started.is_err() {
                // No thread to be had: write here, as before.
                self.shared.write(&inner.buf);
                inner.buf.clear();
                return;
            }
            inner.behind = true;
        }
        let mut h = self.shared.handoff.lock();
        while h.full.is_some() {
            self.shared.changed.wait(&mut h);
        }
        Self::put(&mut h, &mut inner.buf);
        self.shared.changed.notify_all();
    }

    /// Moves `buf` into the hand-off slot and gives it a spare buffer in its place.
    fn put(h: &mut Handoff, buf: &mut Vec<u8>) {
        let spare = h
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(OUTPUT_FLUSH_AT));
        h.full = Some(std::mem::replace(buf, spare));
    }
}

impl Drop for Output {
    /// Ends the writer thread once what was handed over is written.
    fn drop(&mut self) {
        self.shared.handoff.lock().quit = true;
        self.shared.changed.notify_all();
    }
}

/// Whether descriptor `fd` is a regular file (reading it never waits for a person or
/// another program, so nothing needs flushing before a read).
fn is_regular_file(fd: i32) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer it is given; it is read only on success.
    let ok = unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0;
    ok && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// What an io object allows (4.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// Reading only (`stdin`, `fread`).
    Read,
    /// Writing only (`stdout`, `fwrite`).
    Write,
    /// Both (sockets).
    ReadWrite,
}

/// What an io object of an extension (a socket, ...) provides: its read stream (a
/// producer of lines) and write stream (a consumer), each created once on first use.
///
/// ```
/// use std::sync::Arc;
/// use streem::ext::{Capture, Io, IoBackend, IoMode, Stream, Value};
/// use streem::{Interpreter, RunOptions};
///
/// /// An io object reading fixed lines (a real one wraps a socket, see extensions/unix).
/// struct Canned;
///
/// impl IoBackend for Canned {
///     fn make_reader(&self) -> Option<Arc<Stream>> {
///         let lines = vec![Value::str("one"), Value::str("two")];
///         Some(Stream::source(Lines(lines)))
///     }
///     fn make_writer(&self) -> Option<Arc<Stream>> {
///         None
///     }
/// }
///
/// struct Lines(Vec<Value>);
///
/// impl streem::ext::Source for Lines {
///     fn run<'a>(self: Box<Self>, out: &'a mut streem::ext::Outlet) -> streem::ext::BoxFuture<'a> {
///         Box::pin(async move {
///             for v in self.0 {
///                 out.emit(v);
///             }
///         })
///     }
/// }
///
/// let interp = Interpreter::new();
/// interp.registry().define_fn("canned", |_cx, _vals| {
///     Ok(Value::Io(Io::custom(-1, IoMode::Read, Canned)))
/// });
/// let out = Capture::new();
/// interp.set_stdout(out.clone());
/// let status = interp.run_str("-e", "c = canned(); print(c); c | stdout",
///                             vec![], &RunOptions::default());
/// assert_eq!((status, out.text()), (0, "<io: fd=-1 mode=r>\none\ntwo\n".to_string()));
/// ```
pub trait IoBackend: Send + Sync + 'static {
    /// The read stream, usually `Stream::source(..)`; `None`: reads nothing.
    fn make_reader(&self) -> Option<Arc<Stream>>;
    /// The write stream, usually `Stream::sink(..)`; `None`: discards.
    fn make_writer(&self) -> Option<Arc<Stream>>;
}

enum IoKind {
    Custom(Box<dyn IoBackend>),
    Stdin,
    Stdout,
    Stderr,
    /// A file opened by `fread`/`fwrite`.
    File(Mutex<Option<File>>),
}

/// An io object: a file descriptor with a mode, whose read and write streams are
/// created on first use and then reused (4.7).
pub struct Io {
    fd: i32,
    /// Read, write or both.
    pub mode: IoMode,
    kind: IoKind,
    read_stream: OnceLock<Arc<Stream>>,
    write_stream: OnceLock<Arc<Stream>>,
}

impl Io {
    /// Standard input (`stdin`).
    pub fn stdin() -> Arc<Io> {
        Io::new(0, IoMode::Read, IoKind::Stdin)
    }

    /// Standard output (`stdout`).
    pub fn stdout() -> Arc<Io> {
        Io::new(1, IoMode::Write, IoKind::Stdout)
    }

    /// Standard error (`stderr`).
    pub fn stderr() -> Arc<Io> {
        Io::new(2, IoMode::Write, IoKind::Stderr)
    }

    /// Wraps an open file.
    pub fn file(file: File, mode: IoMode) -> Arc<Io> {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        Io::new(fd, mode, IoKind::File(Mutex::new(Some(file))))
    }

    /// An io object whose streams an extension provides (spec 9.2 item 8).
    pub fn custom(fd: i32, mode: IoMode, backend: impl IoBackend) -> Arc<Io> {
        Io::new(fd, mode, IoKind::Custom(Box::new(backend)))
    }

    fn new(fd: i32, mode: IoMode, kind: IoKind) -> Arc<Io> {
        Arc::new(Io {
            fd,
            mode,
            kind,
            read_stream: OnceLock::new(),
            write_stream: OnceLock::new(),
        })
    }

    /// The file descriptor it shows (`<io: fd=N ...>`).
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Whether it can be a pipe source.
    pub fn readable(&self) -> bool {
        matches!(self.mode, IoMode::Read | IoMode::ReadWrite)
    }

    /// Whether it can be a pipe destination.
    pub fn writable(&self) -> bool {
        matches!(self.mode, IoMode::Write | IoMode::ReadWrite)
    }

    /// `<io: fd=N mode=M>` (4.12 item 9).
    pub fn describe(&self) -> String {
        let m = match self.mode {
            IoMode::Read => "r",
            IoMode::Write => "w",
            IoMode::ReadWrite => "rw",
        };
        format!("<io: fd={} mode={}>", self.fd, m)
    }

    /// The read stream (a producer of lines); `None` if not readable.
    pub fn read_stream(self: &Arc<Io>) -> Option<Arc<Stream>> {
        if !self.readable() {
            return None;
        }
        if let IoKind::Custom(b) = &self.kind {
            return self
                .read_stream
                .get_or_init(|| match b.make_reader() {
                    Some(s) => s,
                    None => Stream::new(
                        Role::Producer,
                        LineReader::new(Box::new(std::io::empty()), false),
                    ),
                })
                .clone()
                .into();
        }
        Some(
            self.read_stream
                .get_or_init(|| {
                    let (reader, regular): (Box<dyn Read + Send>, bool) = match &self.kind {
                        IoKind::Stdin => (Box::new(std::io::stdin()), is_regular_file(0)),
                        IoKind::File(f) => match f.lock().as_ref().map(File::try_clone) {
                            Some(Ok(f)) => {
                                let regular = is_regular_file(std::os::fd::AsRawFd::as_raw_fd(&f));
                                (Box::new(f), regular)
                            }
                            _ => (Box::new(std::io::empty()), false),
                        },
                        _ => (Box::new(std::io::empty()), false),
                    };
                    let lines = if regular && read_ahead_enabled() {
                        // A file never makes a read wait for input: read it ahead.
                        LineReader::read_ahead(reader)
                    } else {
                        LineReader::new(reader, matches!(self.kind, IoKind::Stdin))
                    };
                    Stream::new(Role::Producer, lines)
                })
                .clone(),
        )
    }

    /// The write stream (a consumer writing one line per value); `None` if not
    /// writable.
    pub fn write_stream(self: &Arc<Io>) -> Option<Arc<Stream>> {
        if !self.writable() {
            return None;
        }
        if let IoKind::Custom(b) = &self.kind {
            return self
                .write_stream
                .get_or_init(|| match b.make_writer() {
                    Some(s) => s,
                    None => Stream::new(
                        Role::Consumer,
                        LineWriter {
                            target: WriteTarget::Closed,
                            buf: Vec::new(),
                        },
                    ),
                })
                .clone()
                .into();
        }
        Some(
            self.write_stream
                .get_or_init(|| {
                    let target = match &self.kind {
                        IoKind::Stdout => WriteTarget::Stdout,
                        IoKind::Stderr => WriteTarget::Stderr,
                        IoKind::File(f) => match f.lock().as_ref().map(File::try_clone) {
                            Some(Ok(f)) => {
                                WriteTarget::File(std::io::BufWriter::with_capacity(READ_CHUNK, f))
                            }
                            _ => WriteTarget::Closed,
                        },
                        IoKind::Stdin | IoKind::Custom(_) => WriteTarget::Closed,
                    };
                    Stream::new(
                        Role::Consumer,
                        LineWriter {
                            target,
                            buf: Vec::new(),
                        },
                    )
                })
                .clone(),
        )
    }
}

/// Strings lent for one call ([`Stage::on_lines`]), borrowed from a buffer: the
/// lines of a block a reader read (each ended by a newline except perhaps the input's
/// last line), or the words a stage found in such lines. Lines are found as they are
/// asked for: a stage that searches the block (`filter{l -> l.contains("x")}`) or
/// copies it (`stdout`) never splits it.
pub struct Lines<'a> {
    repr: Repr<'a>,
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// Whole lines; `terminated`: the block ends with a newline (else its last line is
    /// the input's unterminated last line).
    Block { block: &'a [u8], terminated: bool },
    /// The strings at these byte ranges of `buf`.
    Spans {
        buf: &'a [u8],
        spans: &'a [(usize, usize)],
    },
}

/// The line of `block` (from `start`, ending at the newline `nl` or the block's end)
/// without its line end (D38: a CR before the newline is dropped).
#[inline]
fn line_at(block: &[u8], start: usize, nl: Option<usize>) -> &[u8] {
    match nl {
        Some(nl) if nl > start && block[nl - 1] == b'\r' => &block[start..nl - 1],
        Some(nl) => &block[start..nl],
        None => &block[start..],
    }
}

/// The strings of [`Lines`], in order.
pub struct LinesIter<'a> {
    repr: Repr<'a>,
    /// Block: where the next line starts. Spans: the next span.
    at: usize,
}

impl<'a> Iterator for LinesIter<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        match self.repr {
            Repr::Block { block, .. } => {
                let start = self.at;
                if start >= block.len() {
                    return None;
                }
                let nl = memchr::memchr(b'\n', &block[start..]).map(|p| start + p);
                self.at = nl.map_or(block.len(), |nl| nl + 1);
                Some(line_at(block, start, nl))
            }
            Repr::Spans { buf, spans } => {
                let &(a, b) = spans.get(self.at)?;
                self.at += 1;
                Some(&buf[a..b])
            }
        }
    }
}

impl<'a> Lines<'a> {
    /// The strings at `spans` (byte ranges) of `buf`: words found in lines.
    pub fn spans(buf: &'a [u8], spans: &'a [(usize, usize)]) -> Lines<'a> {
        Lines {
            repr: Repr::Spans { buf, spans },
        }
    }

    /// How many strings there are.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Block { block, terminated } => {
                let newlines = memchr::memchr_iter(b'\n', block).count();
                newlines + usize::from(!terminated && !block.is_empty())
            }
            Repr::Spans { spans, .. } => spans.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        match self.repr {
            Repr::Block { block, .. } => block.is_empty(),
            Repr::Spans { spans, .. } => spans.is_empty(),
        }
    }

    /// The strings, in order (lines without their line ends).
    pub fn iter(&self) -> LinesIter<'a> {
        LinesIter {
            repr: self.repr,
            at: 0,
        }
    }

    /// The whole lines of a reader's block, with their newlines, as one slice: for a
    /// stage that splits the text itself (words do not cross line ends). `None` for
    /// other strings.
    pub fn text(&self) -> Option<&'a [u8]> {
        match self.repr {
            Repr::Block { block, .. } => Some(block),
            Repr::Spans { .. } => None,
        }
    }

    /// The strings that contain `needle`, in order; `needle` must not be empty nor
    /// hold a CR or newline (so that a match lies within one line). Lines of a block
    /// are found by searching the whole block (not line by line).
    pub fn containing<'n>(
        &self,
        needle: &'n memchr::memmem::Finder<'n>,
    ) -> Box<dyn Iterator<Item = &'a [u8]> + 'n>
    where
        'a: 'n,
    {
        match self.repr {
            Repr::Block { block, .. } => {
                let mut from = 0;
                Box::new(std::iter::from_fn(move || {
                    let at = from + needle.find(&block[from..])?;
                    let start = memchr::memrchr(b'\n', &block[..at]).map_or(0, |p| p + 1);
                    let nl = memchr::memchr(b'\n', &block[at..]).map(|p| at + p);
                    from = nl.map_or(block.len(), |nl| nl + 1);
                    Some(line_at(block, start, nl))
                }))
            }
            Repr::Spans { .. } => Box::new(self.iter().filter(|s| needle.find(s).is_some())),
        }
    }

    /// The lines as they were read, line ends included, when writing them back is
    /// writing each line and a newline: a block whose every line is terminated, and
    /// by a single newline (no CR to drop).
    pub fn as_block(&self) -> Option<&'a [u8]> {
        match self.repr {
            Repr::Block { block, terminated } => {
                let plain = terminated && memchr::memmem::find(block, b"\r\n").is_none();
                plain.then_some(block)
            }
            Repr::Spans { .. } => None,
        }
    }
}

/// Records a stage made and lends to the stage fused after it
/// ([`Stage::on_records`]) before any of them is a value: `csv`'s records of a
/// block of lines, `map{w -> [w, 1]}`'s pairs. Each has `width` fields; a field may
/// be known as a number or as a string without being a value.
pub struct Records<'a> {
    names: Option<&'a Fields>,
    width: usize,
    /// `width` per record: the number a field is, if it is one.
    numbers: &'a [Option<Num>],
    /// One string per record: the fields in `string_fields` (a bit per field).
    strings: &'a [&'a [u8]],
    string_fields: u64,
    row: &'a dyn Fn(usize) -> Value,
}

impl<'a> Records<'a> {
    /// Records of `width` fields, named `names` if they are structs; `numbers` holds
    /// `width` entries per record (the number a field is, if it is one); the fields
    /// whose bits are set in `string_fields` are, in record `r`, the string
    /// `strings[r]`; `row(r)` makes record `r` as the value the stage would emit.
    pub(crate) fn new(
        names: Option<&'a Fields>,
        width: usize,
        numbers: &'a [Option<Num>],
        (strings, string_fields): (&'a [&'a [u8]], u64),
        row: &'a dyn Fn(usize) -> Value,
    ) -> Records<'a> {
        Records {
            names,
            width,
            numbers,
            strings,
            string_fields,
            row,
        }
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.numbers.len().checked_div(self.width).unwrap_or(0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// How many fields a record has.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The position of the first field called `name` (as `Array::field` finds it);
    /// `None` also when the records are plain arrays.
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        self.names?
            .iter()
            .position(|f| f.as_ref().is_some_and(|f| f.as_bytes() == name))
    }

    /// Field `i` of record `r` when it is a number.
    pub fn number(&self, r: usize, i: usize) -> Option<Value> {
        self.num(r, i).map(Num::value)
    }

    #[inline]
    pub(crate) fn num(&self, r: usize, i: usize) -> Option<Num> {
        self.numbers[r * self.width + i]
    }

    /// Field `i` of record `r` when it is a string known as such.
    #[inline]
    pub fn text(&self, r: usize, i: usize) -> Option<&'a [u8]> {
        if i < 64 && self.string_fields >> i & 1 == 1 {
            self.strings.get(r).copied()
        } else {
            None
        }
    }

    /// Record `r` as a value (a struct with the field names, or an array).
    pub fn row(&self, r: usize) -> Value {
        (self.row)(r)
    }
}

/// What a stage lends the stage fused after it ([`Stage::on_lent`]).
#[derive(Clone, Copy)]
pub enum Lent<'a> {
    /// Strings: lines of a reader, or words of lines.
    Lines(&'a Lines<'a>),
    /// Records: of a parser, or pairs of a `map`.
    Records(&'a Records<'a>),
}

/// Room left before the data of a read-ahead chunk, where the partial line before it
/// is copied so that it joins the chunk without moving the chunk.
const AHEAD_ROOM: usize = 16 * 1024;
/// How much a read-ahead chunk holds. Each hand-over wakes a thread, which costs tens
/// of microseconds on a small VM: chunks are large.
const AHEAD_CHUNK: usize = 512 * 1024;
/// Chunks read ahead and not yet taken, at most.
const AHEAD_CHUNKS: usize = 2;

/// Files are read ahead unless `STRM_READ_AHEAD=0` (for measurement).
fn read_ahead_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("STRM_READ_AHEAD").map_or(true, |v| v.trim() != "0"))
}

/// A chunk read ahead: a buffer whose data starts at `AHEAD_ROOM`, and its length
/// (0 at end of input).
type Chunk = std::io::Result<(Vec<u8>, usize)>;

/// Reads a file on a thread of its own, so that the kernel's copy of the next chunk
/// overlaps the work on this one. Empty buffers come back for reuse.
struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<Chunk>,
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl ReadAhead {
    fn start(mut reader: Box<dyn Read + Send>) -> ReadAhead {
        let (tx, chunks) = std::sync::mpsc::sync_channel::<Chunk>(AHEAD_CHUNKS);
        let (spent, back) = std::sync::mpsc::sync_channel::<Vec<u8>>(AHEAD_CHUNKS + 2);
        let run = move || loop {
            let mut buf = back
                .try_recv()
                .unwrap_or_else(|_| vec![0; AHEAD_ROOM + AHEAD_CHUNK]);
            let chunk = loop {
                match reader.read(&mut buf[AHEAD_ROOM..]) {
                    Ok(n) => break Ok((buf, n)),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let last = !matches!(chunk, Ok((_, n)) if n > 0);
            // The reader went away (the program no longer reads): stop.
            if tx.send(chunk).is_err() || last {
                return;
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("streem-read".into())
            .spawn(run)
        {
            // No thread: the reader says so at its first read.
            let (tx, chunks) = std::sync::mpsc::sync_channel::<Chunk>(1);
            let _ = tx.send(Err(e));
            return ReadAhead { chunks, spent };
        }
        ReadAhead { chunks, spent }
    }
}

/// Where a line reader's input comes from.
enum Input {
    /// Read when lines are needed (pipes, terminals, sockets: a read may wait).
    Direct(Box<dyn Read + Send>),
    /// Read ahead on another thread (regular files).
    Ahead(ReadAhead),
}

/// Splits input into lines (D38): any length, CR before LF dropped, an unterminated
/// last line emitted.
pub struct LineReader {
    input: Input,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Flush standard output before blocking (interactive use, D39).
    interactive: bool,
}

impl LineReader {
    /// A line reader over `reader`; `interactive`: flush standard output before each read.
    pub fn new(reader: Box<dyn Read + Send>, interactive: bool) -> LineReader {
        LineReader {
            input: Input::Direct(reader),
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            eof: false,
            interactive,
        }
    }

    /// A line reader over a file, which it reads ahead on a thread of its own: the
    /// kernel copies the next chunk while this one is worked on.
    pub fn read_ahead(reader: Box<dyn Read + Send>) -> LineReader {
        LineReader {
            input: Input::Ahead(ReadAhead::start(reader)),
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            interactive: false,
        }
    }

    /// The next line; `before_read` is called before each read and may refuse it
    /// (returns false): then `Ok(None)` is returned although the input has not ended.
    pub fn next_line(
        &mut self,
        before_read: &mut dyn FnMut() -> bool,
    ) -> std::io::Result<Option<&[u8]>> {
        if !self.fill(before_read)? {
            return Ok(None);
        }
        let s = self.start;
        let nl = memchr::memchr(b'\n', &self.buf[s..self.end]).map(|p| s + p);
        if nl.is_none() && s == self.end {
            return Ok(None);
        }
        self.start = nl.map_or(self.end, |nl| nl + 1);
        Ok(Some(line_at(&self.buf[..self.end], s, nl)))
    }

    /// Reads, as often as it takes, until a complete line is buffered or the input
    /// has ended; false when `before_read` refused a read.
    fn fill(&mut self, before_read: &mut dyn FnMut() -> bool) -> std::io::Result<bool> {
        while !self.eof && memchr::memchr(b'\n', &self.buf[self.start..self.end]).is_none() {
            if let Input::Ahead(ahead) = &self.input {
                let chunk = match ahead.chunks.try_recv() {
                    Ok(c) => c,
                    Err(_) => {
                        if !before_read() {
                            return Ok(false);
                        }
                        ahead.chunks.recv().unwrap_or(Ok((Vec::new(), 0)))
                    }
                };
                match chunk {
                    Ok((_, 0)) => self.eof = true,
                    Ok((mut data, n)) => {
                        let partial = self.end - self.start;
                        if partial <= AHEAD_ROOM {
                            // The partial line goes just before the chunk's data.
                            let at = AHEAD_ROOM - partial;
                            data[at..AHEAD_ROOM].copy_from_slice(&self.buf[self.start..self.end]);
                            let spent = std::mem::replace(&mut self.buf, data);
                            (self.start, self.end) = (at, AHEAD_ROOM + n);
                            if spent.len() == AHEAD_ROOM + AHEAD_CHUNK {
                                let _ = ahead.spent.try_send(spent);
                            }
                        } else {
                            // A long line: it grows in its own buffer.
                            self.buf.truncate(self.end);
                            self.buf.drain(..self.start);
                            self.buf
                                .extend_from_slice(&data[AHEAD_ROOM..AHEAD_ROOM + n]);
                            (self.start, self.end) = (0, self.buf.len());
                            let _ = ahead.spent.try_send(data);
                        }
                    }
                    Err(e) => {
                        self.eof = true;
                        return Err(e);
                    }
                }
                continue;
            }
            // Make room: move the partial line to the front, grow if it fills the buffer.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
            if !before_read() {
                return Ok(false);
            }
            let Input::Direct(reader) = &mut self.input else {
                unreachable!("read ahead above")
            };
            match reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.eof = true;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// The whole lines buffered, up to about `BLOCK` bytes (reading first if there is
    /// none: one wait at most), as a block `(start, end, terminated)`; empty at end of
    /// input. `before_read` runs before each read.
    fn take_block(
        &mut self,
        before_read: &mut dyn FnMut(),
    ) -> std::io::Result<(usize, usize, bool)> {
        self.fill(&mut || {
            before_read();
            true
        })?;
        let s = self.start;
        let window = &self.buf[s..self.end.min(s + BLOCK)];
        let last_nl = memchr::memrchr(b'\n', window)
            .or_else(|| memchr::memchr(b'\n', &self.buf[s..self.end]));
        let (end, terminated) = match last_nl {
            Some(p) => (s + p + 1, true),
            // At end of input: the unterminated last line, as it is.
            None => (self.end, false),
        };
        self.start = end;
        Ok((s, end, terminated))
    }
}

impl Stage for LineReader {
    fn is_blocking(&self) -> bool {
        true
    }

    fn produce(&mut self, cx: &mut StageContext) -> Result<Produce, RuntimeError> {
        self.produce_lines(cx, &mut |_| false)
            .expect("a line reader produces lines")
    }

    fn produce_lines(
        &mut self,
        cx: &mut StageContext,
        take: &mut dyn FnMut(&Lines<'_>) -> bool,
    ) -> Option<Result<Produce, RuntimeError>> {
        let out = cx.globals().out.clone();
        let interactive = self.interactive;
        // A read may block (a pipe, a terminal, `tail -f`): the lines of a turn need
        // at most one wait, and standard output is flushed before it (D2, D39).
        let read = self.take_block(&mut || {
            if interactive {
                out.flush_soon()
            }
        });
        let (start, end, terminated) = match read {
            Ok(block) => block,
            Err(e) => return Some(Err(RuntimeError::new(format!("read error: {e}")))),
        };
        if start == end {
            return Some(Ok(Produce::Done));
        }
        let lines = Lines {
            repr: Repr::Block {
                block: &self.buf[start..end],
                terminated,
            },
        };
        if !take(&lines) {
            for line in lines.iter() {
                if let Err(e) = cx.emit(Value::bytes(line)) {
                    return Some(Err(e));
                }
            }
        }
        Some(Ok(if cx.destinations_gone() {
            Produce::Done
        } else {
            Produce::More
        }))
    }
}

enum WriteTarget {
    Stdout,
    Stderr,
    File(std::io::BufWriter<File>),
    Closed,
}

/// Writes each value's printed form and a newline (5.9).
struct LineWriter {
    target: WriteTarget,
    buf: Vec<u8>,
}

impl Stage for LineWriter {
    fn on_value(&mut self, v: Value, cx: &mut StageContext) -> Result<(), RuntimeError> {
        self.buf.clear();
        match &v {
            Value::Str(s) => self.buf.extend_from_slice(s.as_bytes()),
            _ => cx.call_context().write_display(&mut self.buf, &v)?,
        }
        match &mut self.target {
            WriteTarget::Stdout => {
                let out = &cx.globals().out;
                out.write_line(&self.buf);
                if out.is_broken() {
                    cx.close();
                }
            }
            WriteTarget::Stderr => cx.globals().err.write_line(&self.buf),
            WriteTarget::File(f) => {
                self.buf.push(b'\n');
                if let Err(e) = f.write_all(&self.buf) {
                    self.target = WriteTarget::Closed;
                    cx.close();
                    return Err(RuntimeError::new(format!("write error: {e}")));
                }
            }
            WriteTarget::Closed => {}
        }
        Ok(())
    }

    /// Standard output and error take a batch as one block of text: one lock and one
    /// copy per batch instead of per line.
    fn on_batch(&mut self, _input: usize, vals: &mut Vec<Value>, cx: &mut StageContext) {
        if !matches!(self.target, WriteTarget::Stdout | WriteTarget::Stderr) {
            for v in vals.drain(..) {
                if let Err(e) = self.on_value(v, cx) {
                    cx.report(e);
                }
            }
            return;
        }
        self.buf.clear();
        // Numbers print plainly unless a script gave them a `string` method (4.12).
        let plain_numbers = !cx.globals().ns_number.has_string();
        for v in vals.drain(..) {
            let start = self.buf.len();
            match &v {
                Value::Str(s) => self.buf.extend_from_slice(s.as_bytes()),
                Value::Int(i) if plain_numbers => crate::eval::print::write_int(&mut self.buf, *i),
                _ => {
                    if let Err(e) = cx.call_context().write_display(&mut self.buf, &v) {
                        self.buf.truncate(start);
                        cx.report(e);
                        continue;
                    }
                }
            }
            self.buf.push(b'\n');
        }
        if matches!(self.target, WriteTarget::Stderr) {
            cx.globals().err.write_raw(&self.buf);
            return;
        }
        let out = &cx.globals().out;
        out.write_raw(&self.buf);
        if out.is_broken() {
            cx.close();
        }
    }

    fn writes_lines(&self) -> bool {
        true
    }

    /// Lines read go out as they came: one copy of the whole block when nothing was
    /// dropped from it (no CR), else line by line.
    fn on_lines(&mut self, lines: &Lines<'_>, cx: &mut StageContext) -> bool {
        if !matches!(self.target, WriteTarget::Stdout | WriteTarget::Stderr) {
            return false;
        }
        let block = match lines.as_block() {
            Some(b) => b,
            None => {
                self.buf.clear();
                for line in lines.iter() {
                    self.buf.extend_from_slice(line);
                    self.buf.push(b'\n');
                }
                &self.buf
            }
        };
        if matches!(self.target, WriteTarget::Stderr) {
            cx.globals().err.write_raw(block);
            return true;
        }
        let out = &cx.globals().out;
        out.write_raw(block);
        if out.is_broken() {
            cx.close();
        }
        true
    }

    fn on_close(&mut self, _cx: &mut StageContext) -> Result<(), RuntimeError> {
        if let WriteTarget::File(f) = &mut self.target {
            f.flush()
                .map_err(|e| RuntimeError::new(format!("write error: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod write_behind_tests {
    use super::Output;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A sink that is slow to take each write, like a busy disk or a slow pipe.
    struct SlowSink(Arc<Mutex<Vec<u8>>>);

    impl Write for SlowSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(30));
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn flush_returns_only_once_the_writer_thread_has_written_everything() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Output::new(Box::new(SlowSink(written.clone())));
        // More than a hand-off: the writer thread starts and takes the first buffer.
        let big = vec![b'x'; 300 * 1024];
        out.write_raw(&big);
        out.write_line(b"last");
        out.flush();
        let got = written.lock().unwrap();
        assert_eq!(got.len(), big.len() + 5, "flush returned before the write");
        assert!(got.ends_with(b"last\n"));
    }
}
