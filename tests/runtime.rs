//! Behaviour of the stream runtime seen from outside: bounded memory, long lines,
//! end of input, broken pipes and signals. Every test is bounded in time.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn streem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streem"))
}

/// Waits for the child at most `limit`, killing it if it does not end.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn infinite_producer_into_a_reader_that_does_not_read_stays_bounded() {
    // D2: `seq()` feeds a chain whose sink is a pipe nobody reads: the whole chain
    // must be suspended by backpressure instead of buffering.
    let mut child = streem()
        .args(["-e", "seq() | map{x -> [x, x * 2]} | stdout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    let rss = rss_kib(child.id()).expect("rss");
    let _ = child.kill();
    let _ = child.wait();
    assert!(rss < 100 * 1024, "RSS grew to {rss} KiB");
}

#[test]
fn a_ten_megabyte_line_is_read_whole() {
    let mut child = streem()
        .args(["-e", "stdin | map{l -> l.length()} | stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let line = vec![b'x'; 10 << 20];
        stdin.write_all(&line).unwrap();
        stdin.write_all(b"\nshort\r\nlast").unwrap();
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    writer.join().unwrap();
    assert!(wait_bounded(&mut child, Duration::from_secs(20)).is_some_and(|s| s.success()));
    assert_eq!(out, format!("{}\n5\n4\n", 10 << 20));
}

#[test]
fn dev_null_as_input_ends_at_once() {
    let mut child = streem()
        .args(["-e", "stdin | count() | stdout"])
        .stdin(Stdio::from(std::fs::File::open("/dev/null").unwrap()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("ended");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success());
    assert_eq!(out, "0\n");
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    // D40: `streem prog | head -1`.
    for prog in ["seq() | stdout", "seq() | each{x -> print(x)}"] {
        let mut child = streem()
            .args(["-e", prog])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut first = [0u8; 2];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        assert_eq!(&first, b"1\n");
        drop(child.stdout.take());
        let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("ended");
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{prog}: {err}");
        assert_eq!(err, "", "{prog}");
    }
}

#[test]
fn sigint_flushes_what_was_printed_and_exits_130() {
    // D66: output buffered before the signal is not lost.
    let mut child = streem()
        .args(["-e", "print(\"before\"); seq() | each{x -> nil}"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(10)).expect("ended");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(out, "before\n");
}

#[test]
fn a_busy_fused_chain_splits_across_threads_and_keeps_order() {
    // Two expensive halves: the fused task cuts itself in two (STRM_TRACE_SPLIT
    // reports the cut); values must still arrive complete and in order.
    let heavy = "if (x % 3 == 0) x * 2 + 1 else x * 3 - 1";
    let prog = format!(
        "seq(400000) | map{{x -> {heavy}}} | map{{x -> {heavy}}} | map{{x -> {heavy}}} \
         | map{{x -> {heavy}}} | map{{x -> {heavy}}} | map{{x -> {heavy}}} | stdout"
    );
    let out = streem()
        .args(["-e", &prog])
        .env("STRM_WORKER_MAX", "2")
        .env("STRM_TRACE_SPLIT", "1")
        .output()
        .expect("run");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("split at"), "no split: {stderr}");
    let f = |x: i64| if x % 3 == 0 { x * 2 + 1 } else { x * 3 - 1 };
    let want: String = (1..=400000i64)
        .map(|x| format!("{}\n", f(f(f(f(f(f(x))))))))
        .collect();
    assert!(
        String::from_utf8_lossy(&out.stdout) == want,
        "output differs"
    );
}

#[test]
fn a_trickle_on_a_pipe_is_delivered_while_the_pipe_stays_open() {
    // D2: what was read goes downstream before the reader waits for more, so a line
    // on a pipe that stays open (`tail -f | streem`) comes out at once.
    let mut child = streem()
        .args(["-e", "stdin | map{x -> x + \"!\"} | stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let _ = tx.send(got.clone());
        }
    });
    stdin.write_all(b"a\n").expect("write");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen != b"a!\n" && Instant::now() < deadline {
        if let Ok(g) = rx.recv_timeout(Duration::from_millis(100)) {
            seen = g;
        }
    }
    let on_time = seen == b"a!\n";
    drop(stdin);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    assert!(
        on_time,
        "the line did not come out while the pipe was open: {seen:?}"
    );
    assert!(status.is_some_and(|s| s.success()));
}

#[test]
fn large_output_is_complete_in_order_and_flushed_before_an_error_message() {
    // Megabytes of stdout are written behind by a thread of their own; an error
    // message must still come after the lines printed before it (D39), and nothing
    // may be lost at exit (D37). stdout and stderr share one pipe here. (The writer
    // usually wins the race anyway; the unit test `flush_returns_only_once_the_writer_
    // thread_has_written_everything` is the one that fails if flush does not wait.)
    let prog = "seq(300000) | map{x -> if (x == 200000) nosuch(x) else x} | stdout";
    let out = Command::new("sh")
        .args(["-c", &format!("\"$0\" -e '{prog}' 2>&1")])
        .arg(env!("CARGO_BIN_EXE_streem"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let err_at = lines
        .iter()
        .position(|l| l.contains("error"))
        .expect("an error message");
    // Values after the failing one in its batch may precede the message; lines
    // printed long before it may not follow it.
    assert!(
        err_at >= 199_000,
        "error message at line {err_at}, before output printed earlier"
    );
    let numbers: Vec<i64> = lines.iter().filter_map(|l| l.parse().ok()).collect();
    let want: Vec<i64> = (1..=300000).filter(|&x| x != 200000).collect();
    assert!(numbers == want, "numbers lost or out of order");
}

#[test]
fn an_expensive_pure_map_shares_its_batches_and_an_impure_one_does_not() {
    // A pure function's batch is shared out among cores (STRM_TRACE_SHARE reports
    // it); results keep their order. A function with a side effect is found out
    // before it acts and runs one value at a time.
    let fib = "def fib(n) { if (n < 2) n else fib(n - 1) + fib(n - 2) }";
    let run = |body: &str| {
        streem()
            .args([
                "-e",
                &format!("{fib}\nseq(40) | map{{x -> {body}}} | stdout"),
            ])
            .env("STRM_WORKER_MAX", "2")
            .env("STRM_TRACE_SHARE", "1")
            .output()
            .expect("run")
    };
    let pure = run("fib(18) + x");
    assert!(pure.status.success());
    assert!(String::from_utf8_lossy(&pure.stderr).contains("shared a batch"));
    let want: String = (1..=40).map(|x| format!("{}\n", 2584 + x)).collect();
    assert_eq!(String::from_utf8_lossy(&pure.stdout), want);

    let impure = run("print(x); fib(18) + x");
    assert!(impure.status.success());
    let err = String::from_utf8_lossy(&impure.stderr);
    assert!(err.contains("side effect"), "{err}");
    assert!(!err.contains("shared a batch"), "{err}");
    let want: String = (1..=40)
        .map(|x| format!("{x}\n"))
        .chain((1..=40).map(|x| format!("{}\n", 2584 + x)))
        .collect();
    let mut got: Vec<String> = String::from_utf8_lossy(&impure.stdout)
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    // `print` and `stdout` are two writers: the printed numbers are in order among
    // themselves, and so are the results.
    let printed: Vec<String> = got
        .iter()
        .filter(|l| l.trim().parse::<i64>().is_ok_and(|n| n <= 40))
        .cloned()
        .collect();
    got.retain(|l| l.trim().parse::<i64>().is_ok_and(|n| n > 40));
    assert_eq!(printed.concat() + &got.concat(), want);
}

/// What `run_lent` gives.
type Run = (Vec<u8>, String, i32, bool, bool);

/// Runs `program` on `input` without and with lending; asserts that both give the
/// same stdout, stderr and status, and that nothing was lent with `STRM_LEND=0`;
/// returns the run with lending.
fn compare_lending(program: &str, input: &[u8]) -> Run {
    let plain = run_lent(program, input, false);
    let lent = run_lent(program, input, true);
    let what = format!("{program} on {} bytes", input.len());
    assert!(!plain.3 && !plain.4, "{what}: lent with STRM_LEND=0");
    assert_eq!(
        String::from_utf8_lossy(&lent.0),
        String::from_utf8_lossy(&plain.0),
        "{what}: stdout"
    );
    assert_eq!(lent.1, plain.1, "{what}: stderr");
    assert_eq!(lent.2, plain.2, "{what}: status");
    lent
}

/// Runs `program` with `input` on standard input; `lend`: whether the reader may lend
/// its lines (`STRM_LEND`). Returns (stdout, stderr, status, whether the trace says the
/// lines were taken, whether it says records were taken).
fn run_lent(program: &str, input: &[u8], lend: bool) -> Run {
    let mut child = streem()
        .args(["-e", program])
        .env("STRM_LEND", if lend { "1" } else { "0" })
        .env("STRM_TRACE_LINES", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let (stdout, stderr) = drain_both(&mut child);
    let status = wait_bounded(&mut child, Duration::from_secs(60)).expect("finished in time");
    writer.join().expect("writer");
    let (stdout, stderr) = (
        stdout.join().expect("stdout"),
        stderr.join().expect("stderr"),
    );
    let err = String::from_utf8_lossy(&stderr).into_owned();
    let taken = err.contains("lines lent to stage 1: taken");
    let records = err.contains("records lent to stage 2: taken");
    let err: String = err
        .lines()
        .filter(|l| !l.contains(" lent to stage "))
        .map(|l| format!("{l}\n"))
        .collect();
    (stdout, err, status.code().unwrap_or(-1), taken, records)
}

#[test]
fn lines_lent_from_the_read_buffer_give_exactly_what_string_values_give() {
    // The lent-lines path (`Stage::on_lines`) against the ordinary one, byte for
    // byte, over inputs with CRLF, a CR inside a line, an unterminated last line
    // with a CR, non-ASCII text, empty lines, a line longer than a read and more
    // lines than one block.
    let mut big = Vec::new();
    for i in 0..12_000 {
        let end = if i % 7 == 0 { "\r\n" } else { "\n" };
        let mark = if i % 13 == 0 { "ERROR" } else { "" };
        let long = if i % 11 == 0 {
            " a-word-longer-than-fifteen-bytes"
        } else {
            ""
        };
        let ws = ["\t", "  ", "\x0b", "\x0c", "\r", " "][i % 6];
        big.extend_from_slice(format!("line {i}{ws}é{mark} x{long} w{}{end}", i % 50).as_bytes());
        if i == 6_000 {
            big.extend(std::iter::repeat_n(b'y', 200_000));
            big.extend_from_slice(b"ERROR\n\n\n");
        }
    }
    big.extend_from_slice(b"last ERROR\r");
    let inputs: [&[u8]; 5] = [
        b"alpha\r\nb\xc3\xa9ta ERROR\n\nERRORx\r\na\rb ERROR\nlast ERROR\r",
        b"",
        b"no newline at all ERROR",
        b"\n\n\r\n",
        &big,
    ];
    // (program, whether its lines are taken when lent)
    let programs = [
        ("stdin | map{l -> l.length()} | stdout", true),
        ("stdin | filter{l -> l.contains(\"ERROR\")} | stdout", true),
        ("stdin | filter{l -> l.contains(\"R\\r\")} | stdout", true),
        (
            "stdin | filter{l -> l.contains(\"\")} | count() | stdout",
            true,
        ),
        (
            "stdin | filter{l -> l.starts_with(\"ERR\")} | count() | stdout",
            true,
        ),
        ("stdin | flatmap{l -> l.split()} | stdout", true),
        ("stdin | count() | stdout", true),
        ("stdin | stdout", true),
        ("stdin | map{l -> l.index(5)} | stdout", true),
        ("stdin | map{l -> l.length(1)} | stdout", true),
        ("stdin | map{l -> l.length()} | take(2) | stdout", true),
        ("stdin | map{l -> l.upcase()} | stdout", false),
        ("stdin | map{l -> l + \"!\"} | stdout", false),
        // Words lent by flatmap, pairs by map, counted by reduce_by_key.
        (
            "stdin | flatmap{l -> l.split()} | map{w -> [w, 1]} | reduce_by_key{k, a, b -> a + b} | stdout",
            true,
        ),
        (
            "stdin | flatmap{l -> l.split(\" \")} | map{w -> [w, 2]} | reduce_by_key{k, a, b -> a * b} | stdout",
            true,
        ),
        (
            "stdin | flatmap{l -> l.split()} | map{w -> [w, 1]} | reduce_by_key{k, a, b -> a + b + 0.5} | stdout",
            true,
        ),
        (
            "stdin | flatmap{l -> l.split()} | map{w -> [w, 1]} | reduce_by_key{k, a, b -> k} | stdout",
            true,
        ),
        (
            "stdin | flatmap{l -> l.split()} | map{w -> [1, w]} | reduce_by_key{k, a, b -> a + b} | stdout",
            true,
        ),
        (
            "stdin | flatmap{l -> l.split()} | map{w -> [w, 1, w]} | reduce_by_key{k, a, b -> a + b} | stdout",
            true,
        ),
        ("stdin | flatmap{l -> l.split()} | map{w -> [w, 1]} | stdout", true),
        ("stdin | flatmap{l -> l.split()} | count() | stdout", true),
        ("stdin | flatmap{l -> l.split(\"E\")} | stdout", true),
    ];
    for (program, takes) in programs {
        for input in inputs {
            let lent = compare_lending(program, input);
            let what = format!("{program} on {} bytes", input.len());
            if !input.is_empty() {
                assert_eq!(lent.3, takes, "{what}: lines taken");
            }
        }
    }
}

#[test]
fn records_lent_by_csv_give_exactly_what_rows_give() {
    // `csv()` lends the records of plain lines to `map{row -> row.a * row.b}`
    // (`Stage::on_records`) against the ordinary path of rows, byte for byte: quoted
    // lines among plain ones, a type mismatch warning, a wrong field count, a field
    // that is not a number, a division by zero, CRLF and an unterminated last line.
    let mut big = String::from("id,name,price,qty\r\n");
    for i in 0..30_000 {
        match i % 1000 {
            7 => big.push_str(&format!("{i},\"quoted, name\",{i}.5,3\n")),
            8 => big.push_str(&format!("{i},x,abc,3\n")),
            9 => big.push_str(&format!("{i},x,1.5\n")),
            10 => big.push_str(&format!("{i},\"multi\nline\",2,2\n")),
            11 => big.push('\n'),
            _ => big.push_str(&format!("{i},n{i},{}.25,{}\r\n", i % 97, i % 13)),
        }
    }
    big.push_str("99,last,1.5,2");
    let inputs: [&[u8]; 5] = [
        b"a,b\n1,2\n3,4\n",
        b"a,b\n1,2\n\"x\",4\n5,6\n7,0\n",
        b"a,b\n",
        b"1,2\n3,4\n",
        big.as_bytes(),
    ];
    let programs = [
        (
            "stdin | csv() | map{r -> r.price * r.qty} | sum() | stdout",
            true,
        ),
        ("stdin | csv() | map{r -> r.a * r.b} | stdout", true),
        ("stdin | csv() | map{r -> r.a % r.b} | stdout", true),
        ("stdin | csv() | map{r -> r.a / r.b + 1} | stdout", true),
        ("stdin | csv() | map{r -> r.a < r.b} | stdout", false),
        (
            "stdin | csv() | map{r -> r.price > 50} | count() | stdout",
            false,
        ),
        ("stdin | csv() | map{r -> r.nothing * 2} | stdout", true),
        ("stdin | csv() | map{r -> r.id + r.qty} | stdout", true),
        ("stdin | csv() | map{r -> r} | stdout", false),
        ("stdin | csv(false) | map{r -> r(0)} | stdout", false),
    ];
    for (program, records) in programs {
        for input in inputs {
            let lent = compare_lending(program, input);
            let what = format!("{program} on {} bytes", input.len());
            if input.len() > 100 {
                assert_eq!(lent.4, records, "{what}: records taken");
            }
        }
    }
}

/// Runs `program` with standard input read from the file `path` (as `streem prog <
/// file`), with read-ahead on or off (`STRM_READ_AHEAD`).
fn run_from_file(program: &str, path: &std::path::Path, ahead: bool) -> (Vec<u8>, Vec<u8>, i32) {
    let file = std::fs::File::open(path).expect("open input");
    let mut child = streem()
        .args(["-e", program])
        .env("STRM_READ_AHEAD", if ahead { "1" } else { "0" })
        .stdin(Stdio::from(file))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (out, err) = drain_both(&mut child);
    let status = wait_bounded(&mut child, Duration::from_secs(60)).expect("finished in time");
    (
        out.join().expect("stdout"),
        err.join().expect("stderr"),
        status.code().unwrap_or(-1),
    )
}

/// Reads a child's stdout and stderr on threads of their own.
fn drain_both(
    child: &mut Child,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    (
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        }),
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            b
        }),
    )
}

#[test]
fn a_file_read_ahead_gives_exactly_what_reading_on_demand_gives() {
    // Regular files are read ahead on a thread in chunks of 512 KiB, the partial line
    // before a chunk copied in front of it (16 KiB of room) or, when longer, the
    // chunk appended to it. Lines of every length around those sizes, a CRLF split
    // by a chunk boundary, a line longer than a chunk and an unterminated last line.
    let mut data: Vec<u8> = Vec::new();
    let mut n = 0u64;
    while data.len() < 3 << 20 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = match n >> 60 {
            0 => 20_000 + (n >> 40) as usize % 30_000,
            1 => 15_000 + (n >> 40) as usize % 3_000,
            _ => (n >> 40) as usize % 120,
        };
        data.extend(std::iter::repeat_n(b'a' + (n >> 33) as u8 % 26, len));
        data.extend_from_slice(if n >> 59 & 1 == 0 { b"\n" } else { b"\r\n" });
    }
    // A CRLF across the boundary of the second chunk.
    let at = 2 * 512 * 1024 - 1;
    data[at] = b'\r';
    data[at + 1] = b'\n';
    data.extend(std::iter::repeat_n(b'L', 1_300_000));
    data.extend_from_slice(b"\nlast line without end\r");
    let dir = std::env::temp_dir().join(format!("streem-ahead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let inputs = [("big", data), ("empty", Vec::new()), ("one", b"x".to_vec())];
    let programs = [
        "stdin | stdout",
        "stdin | map{l -> l.length()} | stdout",
        "stdin | map{l -> l.length() * 2} | stdout",
        "stdin | count() | stdout",
        "stdin | take(3) | map{l -> l.length()} | stdout",
    ];
    for (name, bytes) in &inputs {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write input");
        for program in programs {
            let demand = run_from_file(program, &path, false);
            let ahead = run_from_file(program, &path, true);
            assert_eq!(demand.2, 0, "{program} on {name}");
            assert!(ahead.0 == demand.0, "{program} on {name}: stdout differs");
            assert_eq!(ahead.1, demand.1, "{program} on {name}: stderr");
            assert_eq!(ahead.2, demand.2, "{program} on {name}: status");
        }
    }
    // The copy is the file, byte for byte (CRs before newlines dropped, D38).
    let big = &inputs[0].1;
    let copy = run_from_file("stdin | stdout", &dir.join("big"), true).0;
    let text = String::from_utf8_lossy(big);
    let (body, last) = text.rsplit_once('\n').expect("lines");
    let mut want = String::new();
    for line in body.split('\n') {
        want.push_str(line.strip_suffix('\r').unwrap_or(line));
        want.push('\n');
    }
    // The unterminated last line keeps its CR.
    want.push_str(last);
    want.push('\n');
    assert!(copy == want.as_bytes(), "stdin | stdout changed the file");
    let _ = std::fs::remove_dir_all(&dir);
}
