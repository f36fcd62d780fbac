//! The interactive session API (what the REPL is built on).

use streem::{Interpreter, Outcome};

fn shown(s: &mut streem::Session, text: &str) -> String {
    match s.eval("-", text) {
        Outcome::Done { value: Some(v) } => s.inspect(&v),
        Outcome::Done { value: None } => "(no value)".into(),
        Outcome::Incomplete => "(incomplete)".into(),
        Outcome::Error(e) => format!("(error) {e}"),
    }
}

#[test]
fn bindings_persist_and_may_be_rebound() {
    let mut s = Interpreter::new().session(vec![]).unwrap();
    assert_eq!(shown(&mut s, "x = 1"), "(no value)");
    assert_eq!(shown(&mut s, "x + 1"), "2");
    assert_eq!(shown(&mut s, "def f(a) = a * 10"), "(no value)");
    assert_eq!(shown(&mut s, "f(x)"), "10");
    assert_eq!(shown(&mut s, "x = 5"), "(no value)");
    assert_eq!(shown(&mut s, "[x, f(x), \"s\"]"), "[5, 50, \"s\"]");
    // Rebinding twice in one input is still an error (D11).
    assert!(shown(&mut s, "y = 1; y = 2").contains("already defined"));
}

#[test]
fn incomplete_input_asks_for_more() {
    let mut s = Interpreter::new().session(vec![]).unwrap();
    assert_eq!(shown(&mut s, "print(1,\n"), "(incomplete)");
    assert_eq!(shown(&mut s, "x = 1 +\n"), "(incomplete)");
    assert!(shown(&mut s, "x = 1 + * 2\n").starts_with("(error)"));
    assert!(shown(&mut s, "nope\n").contains("undefined variable 'nope'"));
    assert_eq!(shown(&mut s, "1 + 1\n"), "2");
}
