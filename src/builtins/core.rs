//! Core functions (6.1) and the operators of the builtin namespaces (4.3, 6.7, 6.8).

use crate::eval::ir::Arith;
use crate::eval::ops;
use crate::eval::print;
use crate::ext::{Args, CallContext, Func, Registry, RuntimeError, Value};

/// `print`/`puts` (6.1): a space between arguments unless the earlier one is a string.
fn print_values(cx: &mut CallContext, vals: &[Value]) -> Result<Value, RuntimeError> {
    let mut line = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        if i > 0 && !matches!(vals[i - 1], Value::Str(_)) {
            line.push(b' ');
        }
        cx.write_display(&mut line, v)?;
    }
    let out = &cx.globals().out;
    out.write_line(&line);
    if out.is_broken() {
        // D40: nowhere left to write; end quietly like exit(0).
        return Err(cx.globals().request_exit(0));
    }
    Ok(Value::Nil)
}

fn arith_method(r: &Registry, ns: &str, name: &'static str, op: Arith) {
    r.namespace(ns).define_method(name, move |_cx, vals| {
        let a = Args::method(name, vals);
        a.arity(2, 2)?;
        if !vals[1].is_number() && op == Arith::Pipe {
            return Err(crate::builtins::pipe::bad_source(&vals[0]));
        }
        ops::arith(op, &vals[0], &vals[1])
    });
}

fn string_compare(r: &Registry, name: &'static str, test: fn(std::cmp::Ordering) -> bool) {
    r.namespace("string").define_method(name, move |_cx, vals| {
        let a = Args::method(name, vals);
        a.arity(2, 2)?;
        let x = a.bytes(0)?;
        let y = a.bytes(1)?;
        Ok(Value::Bool(test(x.cmp(y))))
    });
}

pub fn register(r: &Registry) {
    r.define_fn("print", print_values);
    r.define_fn("puts", print_values);

    r.define_fn("string", |cx, vals| {
        Args::new("string", vals).arity(1, 1)?;
        Ok(Value::bytes(&cx.to_display_string(&vals[0])?))
    });

    r.define_fn("exit", |cx, vals| {
        let a = Args::new("exit", vals);
        a.arity(0, 1)?;
        let status = if vals.is_empty() { 0 } else { a.int(0)? };
        // Ends the process (command line) or unwinds to `Interpreter::run` (embedded).
        Err(cx.globals().request_exit(status as i32))
    });

    r.define_fn("match", |cx, vals| {
        let a = Args::new("match", vals);
        a.arity(2, usize::MAX)?;
        let f = &vals[vals.len() - 1];
        let ok = match f {
            Value::Func(func) => match &**func {
                Func::Closure { code, .. } => code.arity().is_none(),
                Func::Native(_) | Func::Generic { .. } => true,
            },
            _ => false,
        };
        if !ok {
            return Err(a.error(vals.len() - 1, "not a case function"));
        }
        cx.call(f, &vals[..vals.len() - 1])
    });

    r.define_fn("==", |_cx, vals| {
        Args::new("==", vals).arity(2, 2)?;
        Ok(Value::Bool(ops::equals(&vals[0], &vals[1])))
    });
    r.define_fn("!=", |_cx, vals| {
        Args::new("!=", vals).arity(2, 2)?;
        Ok(Value::Bool(!ops::equals(&vals[0], &vals[1])))
    });

    for (name, op) in [
        ("+", Arith::Add),
        ("*", Arith::Mul),
        ("/", Arith::Div),
        ("%", Arith::Mod),
        ("|", Arith::Pipe),
        ("<", Arith::Lt),
        ("<=", Arith::Le),
        (">", Arith::Gt),
        (">=", Arith::Ge),
    ] {
        arith_method(r, "number", name, op);
    }
    r.namespace("number").define_method("-", |_cx, vals| {
        let a = Args::method("-", vals);
        a.arity(1, 2)?;
        if vals.len() == 1 {
            return Ok(ops::negate(a.number(0)?));
        }
        ops::arith(Arith::Sub, &vals[0], &vals[1])
    });
    r.namespace("number").define_method("&", |_cx, vals| {
        let a = Args::method("&", vals);
        a.arity(2, 2)?;
        match (&vals[0], &vals[1]) {
            (Value::Int(x), Value::Int(y)) => Ok(Value::Int(x & y)),
            _ => Err(RuntimeError::new(format!(
                "& requires two integers, got {} and {}",
                print::inspect_plain(&vals[0]),
                print::inspect_plain(&vals[1])
            ))),
        }
    });

    r.namespace("string").define_method("+", |_cx, vals| {
        let a = Args::method("+", vals);
        a.arity(2, 2)?;
        let x = a.bytes(0)?;
        let y = a.bytes(1).map_err(|_| {
            RuntimeError::new(format!(
                "cannot add {} to a string: string required (value: {}); use string(v) to convert",
                vals[1].type_name(),
                print::inspect_plain(&vals[1])
            ))
        })?;
        let mut s = Vec::with_capacity(x.len() + y.len());
        s.extend_from_slice(x);
        s.extend_from_slice(y);
        Ok(Value::bytes(&s))
    });
    string_compare(r, "<", |o| o.is_lt());
    string_compare(r, "<=", |o| o.is_le());
    string_compare(r, ">", |o| o.is_gt());
    string_compare(r, ">=", |o| o.is_ge());
}
