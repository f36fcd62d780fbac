//! Standard streams and files (6.1).

use std::fs::{File, OpenOptions};

use crate::ext::{Args, Registry, RuntimeError, Value};
use crate::runtime::io::{Io, IoMode};

/// The OS reason without Rust's "(os error N)" suffix.
pub fn os_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub fn register(r: &Registry) {
    r.define_global("stdin", Value::Io(Io::stdin()));
    r.define_global("stdout", Value::Io(Io::stdout()));
    r.define_global("stderr", Value::Io(Io::stderr()));

    r.define_fn("fread", |_cx, vals| {
        let a = Args::new("fread", vals);
        a.arity(1, 1)?;
        let path = a.str(0)?.to_str_lossy().into_owned();
        match File::open(&path) {
            Ok(f) => Ok(Value::Io(Io::file(f, IoMode::Read))),
            Err(e) => Err(RuntimeError::new(format!(
                "fread: cannot open \"{path}\": {}",
                os_reason(&e)
            ))),
        }
    });

    r.define_fn("fwrite", |_cx, vals| {
        let a = Args::new("fwrite", vals);
        a.arity(1, 1)?;
        let path = a.str(0)?.to_str_lossy().into_owned();
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path);
        match f {
            Ok(f) => Ok(Value::Io(Io::file(f, IoMode::Write))),
            Err(e) => Err(RuntimeError::new(format!(
                "fwrite: cannot open \"{path}\": {}",
                os_reason(&e)
            ))),
        }
    });
}
