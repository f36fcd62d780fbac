//! The parser must return (Ok or Err) for every input: no panic, no stack overflow,
//! no hang. Property tests feed random bytes, random token soup and mutated example
//! programs; deterministic cases cover deep nesting and large inputs.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use streem::{parse, ParseError};

/// Parses and checks the basic invariants of the result.
fn check(src: &[u8]) -> Option<ParseError> {
    match parse(src) {
        Ok(_) => None,
        Err(e) => {
            assert!(e.span.start <= e.span.end, "bad span {:?}", e.span);
            assert!(
                e.span.end as usize <= src.len(),
                "span {:?} beyond input of {} bytes",
                e.span,
                src.len()
            );
            assert!(!e.message.is_empty());
            let _ = e.to_diagnostic();
            Some(e)
        }
    }
}

fn examples() -> &'static Vec<Vec<u8>> {
    static EXAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/examples");
        let mut files: Vec<PathBuf> = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in rd.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "strm") {
                    files.push(path);
                }
            }
        }
        files.sort();
        let mut out: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
        if out.is_empty() {
            // examples not available: use a few built-in programs instead
            out.push(b"def f(x) { x * 2 }\nseq(10) | map{x -> f(x)} | stdout\n".to_vec());
            out.push(
                b"fib = {\n  case 0 -> 0\n  case n if n > 1 -> fib(n - 1)\n  else -> 1\n}\n"
                    .to_vec(),
            );
            out.push(b"x = if (a == 1) \"s\\x41\" else 2015.8.1T12:00Z\n[a: 1, *b] & c\n".to_vec());
        }
        out
    })
}

const TOKENS: &[&str] = &[
    "x",
    "foo",
    "_",
    "π",
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
    "0",
    "42",
    "3.25",
    "1e3",
    "0x1F",
    "0o17",
    "012",
    "9223372036854775807",
    "99999999999999999999",
    "2015.8.1",
    "2015.8.1T12:00:00.5+09:00",
    "2015.13.1",
    "\"str\"",
    "\"a\\x4Ab\"",
    "'sq'",
    ":sym",
    "lbl:",
    "\"s\":",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "~",
    "&",
    "|",
    "=",
    "=>",
    "->",
    "<-",
    "::",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    ".",
    "@",
    ":",
    "\n",
    "# comment\n",
    "\r\n",
    "\"unterminated",
    "$",
    "\u{a0}",
];

#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    InsertToken(usize, usize),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, t)| Mutation::InsertToken(p, t)),
        (any::<usize>(), 0usize..20).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>(), 0usize..200)
            .prop_map(|(p, f, q, n)| Mutation::Splice(p, f, q, n)),
    ]
}

fn apply(src: &mut Vec<u8>, m: &Mutation) {
    let len = src.len();
    let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
    match *m {
        Mutation::Replace(p, b) => {
            if len > 0 {
                src[p % len] = b;
            }
        }
        Mutation::Insert(p, b) => src.insert(at(p), b),
        Mutation::InsertToken(p, t) => {
            let pos = at(p);
            let tok = TOKENS[t % TOKENS.len()].as_bytes();
            src.splice(pos..pos, tok.iter().copied());
        }
        Mutation::Delete(p, n) => {
            let start = at(p);
            let end = (start + n).min(len);
            src.drain(start..end);
        }
        Mutation::Truncate(p) => src.truncate(at(p)),
        Mutation::Splice(p, f, q, n) => {
            let ex = examples();
            let other = &ex[f % ex.len()];
            let from = if other.is_empty() { 0 } else { q % other.len() };
            let to = (from + n).min(other.len());
            let pos = at(p);
            src.splice(pos..pos, other[from..to].iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 700, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(src in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&src);
    }

    #[test]
    fn token_soup(
        toks in proptest::collection::vec((0..TOKENS.len(), 0u8..4), 0..80)
    ) {
        let mut src = Vec::new();
        for (t, sep) in toks {
            src.extend_from_slice(TOKENS[t].as_bytes());
            match sep {
                0 => {}
                1 => src.push(b' '),
                2 => src.push(b'\n'),
                _ => src.extend_from_slice(b"  "),
            }
        }
        check(&src);
    }

    #[test]
    fn mutated_examples(
        which in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 1..6)
    ) {
        let ex = examples();
        let mut src = ex[which % ex.len()].clone();
        for m in &muts {
            apply(&mut src, m);
        }
        check(&src);
    }
}

#[test]
fn every_prefix_of_an_example() {
    let ex = examples();
    let src = ex.iter().max_by_key(|s| s.len()).unwrap();
    let step = (src.len() / 300).max(1);
    let mut n = 0;
    while n <= src.len() {
        check(&src[..n]);
        n += step;
    }
}

fn expect_too_deep(src: &[u8]) {
    let e = check(src).expect("deep nesting must be an error");
    assert!(
        e.message.contains("nesting too deep"),
        "unexpected message {:?}",
        e.message
    );
    assert!(!e.incomplete);
}

#[test]
fn deep_nesting_of_every_bracket() {
    for open in [
        "(", "[", "{", "f(", "a.(", "[x: ", "(x) -> ", "{ x -> ", "if (c) ", "if (c) {", "-", "!",
    ] {
        let src = open.repeat(100_000);
        expect_too_deep(src.as_bytes());
        let closed = format!("x = {}1", open.repeat(100_000));
        expect_too_deep(closed.as_bytes());
    }
    // balanced but too deep
    let src = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    expect_too_deep(src.as_bytes());
    let src = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    expect_too_deep(src.as_bytes());
    let src = format!("{}{}", "{".repeat(100_000), "}".repeat(100_000));
    expect_too_deep(src.as_bytes());
    // patterns
    let src = format!("{{ case {} -> 1 }}", "[".repeat(100_000));
    expect_too_deep(src.as_bytes());
    let src = format!("{{ case {} -> 1 }}", "[*".repeat(100_000));
    expect_too_deep(src.as_bytes());
    // else-if chains nest too
    let src = "if (a) 1 else ".repeat(100_000) + "2";
    expect_too_deep(src.as_bytes());
    // moderate nesting is fine
    let src = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    assert!(check(src.as_bytes()).is_none());
}

#[test]
fn long_flat_inputs() {
    // 1 MB of `-`
    let src = vec![b'-'; 1 << 20];
    check(&src);
    // long operator and postfix chains make deep trees: bounded like nesting
    for (op, n_ok) in [(" + 1", 400), (".b", 400), (" | b", 400), (" * 2", 400)] {
        let src = format!("x = a{}", op.repeat(n_ok));
        assert!(check(src.as_bytes()).is_none(), "{op} x {n_ok}");
        let src = format!("x = a{}", op.repeat(100_000));
        expect_too_deep(src.as_bytes());
    }
    // an `&` chain is one flat node
    let src = format!("x = a{}", " & b".repeat(100_000));
    assert!(check(src.as_bytes()).is_none());
    let src = format!("[{}1]", "1, ".repeat(100_000));
    assert!(check(src.as_bytes()).is_none());
    let src = "x = 1\n".repeat(100_000);
    assert!(check(src.as_bytes()).is_none());
    let src = format!("f({}", "a, ".repeat(100_000));
    assert!(check(src.as_bytes()).unwrap().incomplete);
    let src = format!("{{ {}", "a, ".repeat(100_000));
    check(src.as_bytes());
    let src = format!("({}", "a, ".repeat(100_000));
    check(src.as_bytes());
    // huge literals
    let src = format!("x = {}", "9".repeat(100_000));
    assert!(check(src.as_bytes()).is_some());
    let src = format!("x = 1e{}", "9".repeat(100_000));
    assert!(check(src.as_bytes()).is_none());
    let src = format!("x = 1.{}", "5".repeat(100_000));
    assert!(check(src.as_bytes()).is_none());
    let src = format!(
        "x = {0}.{0}.{0}T{0}:{0}:{0}.{0}+{0}:{0}",
        "7".repeat(10_000)
    );
    assert!(check(src.as_bytes()).is_some());
    let src = format!("x = \"{}", "\\x".repeat(100_000));
    assert!(check(src.as_bytes()).unwrap().incomplete);
}

#[test]
fn binary_garbage() {
    // a deterministic pseudo-random byte stream
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut src = Vec::with_capacity(1 << 20);
    for _ in 0..(1 << 20) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        src.push((state >> 24) as u8);
    }
    check(&src);
    for chunk in src.chunks(997).take(300) {
        check(chunk);
    }
    // every single byte, alone and after a valid prefix
    for b in 0..=255u8 {
        check(&[b]);
        check(&[b'x', b' ', b'=', b' ', b]);
        check(&[b'"', b]);
        check(&[b'\'', b'\\', b]);
        check(&[b'#', b]);
    }
    // truncated UTF-8 sequences
    for s in [
        &b"\xe3\x81"[..],
        b"x\xf0\x9f",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
    ] {
        check(s);
    }
}

#[test]
fn unterminated_strings() {
    for src in [
        &b"\""[..],
        b"'",
        b"\"\\",
        b"'\\",
        b"x = \"abc",
        b"print(\"a\nb\nc",
        b"\"\\x4",
        b"[\"a\": ",
    ] {
        let e = check(src).expect("must fail");
        assert!(
            e.incomplete,
            "{:?} should be incomplete: {}",
            src, e.message
        );
    }
}
