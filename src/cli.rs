//! The command line (specification 7.2, D67): parses the arguments, reads the program and
//! hands it to the [`Interpreter`].
//!
//! ```text
//! streem [OPTIONS] FILE [ARGS ...]
//! streem [OPTIONS] -e PROGRAM [ARGS ...]
//! streem [OPTIONS]                 # program from standard input, or the REPL
//! ```
//!
//! Parsing is the pure function [`parse_args`], so every rule of D67 is unit-tested
//! without starting a process; [`main`] only adds the effects (environment, files,
//! terminals, exit status).

use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches};

use crate::syntax::Source;
use crate::{Interpreter, RunOptions};

/// Exit status of a usage error (D67).
const USAGE_ERROR: i32 = 2;

/// Where the program text comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramSource {
    /// `-e PROGRAM`; several `-e` options are joined with newlines. Source name `-e`.
    Inline(Vec<u8>),
    /// A program file, named in messages by the path as given on the command line.
    File(PathBuf),
    /// Standard input, source name `-`. `explicit` is true for the FILE argument `-`,
    /// false when no program was given at all (where a terminal will later get the REPL).
    Stdin { explicit: bool },
}

/// A parsed command line: what to run, with which script arguments and options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub program: ProgramSource,
    /// The script arguments, `ARGV` of the program.
    pub argv: Vec<String>,
    /// `-c`: check only, do not run.
    pub check: bool,
    /// `-v`: dump the parse tree to standard error before running (implies `warnings`).
    pub dump_ast: bool,
    /// `-w` (or `-v`): extra warnings.
    pub warnings: bool,
}

impl Invocation {
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            warnings: self.warnings,
            dump_ast: self.dump_ast,
            handle_signals: true,
        }
    }
}

const HELP_TEMPLATE: &str = "\
{about}

{usage-heading} {usage}

Arguments:
  FILE     The program file; `-` reads the program from standard input
  ARGS     Script arguments, given to the program verbatim as ARGV (`--` and
           anything starting with `-` included). With -e, every argument after
           the options is a script argument

{all-args}{after-help}";

const AFTER_HELP: &str = "\
Examples:
  streem examples/fizzbuzz.strm            run a program file
  streem -e 'seq(3) | map{x -> x * 10} | stdout'
                                           run a program given on the command line
  streem -e 'print(ARGV)' a -x             prints [\"a\", \"-x\"]
  streem prog.strm a -- -x                 ARGV is [\"a\", \"--\", \"-x\"]
  streem -c prog.strm                      check only: Syntax OK or Syntax NG
  echo 'print(1 + 1)' | streem             the program from standard input
  streem                                   on a terminal: the interactive REPL
                                           (type :help there)
  seq 5 | streem -e 'stdin | map{l -> number(l) * 2} | stdout'

Environment:
  STRM_WORKER_MAX  number of worker threads, a positive integer
                   (default: the available parallelism)

Exit status: 0 on success, 1 for errors in the program, 2 for usage errors,
n for exit(n), 130/143 after SIGINT/SIGTERM.";

/// The clap definition. Option processing stops at the first positional argument
/// (`trailing_var_arg`): that one is the program file, or with `-e` the first script
/// argument, and everything after it is kept verbatim, `--` included. A `--` before it
/// ends option processing and is dropped, as usual.
fn command() -> clap::Command {
    clap::Command::new("streem")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Streem: a stream-based concurrent scripting language")
        .override_usage(
            "streem [OPTIONS] FILE [ARGS]...\n       \
             streem [OPTIONS] -e PROGRAM [ARGS]...\n       \
             streem [OPTIONS] < FILE",
        )
        .help_template(HELP_TEMPLATE)
        .after_help(AFTER_HELP)
        // `--version` only: no `-V`, which is not in D67.
        .disable_version_flag(true)
        // `-c -c` or `-ww` are harmless repetitions, not errors.
        .args_override_self(true)
        .arg(
            Arg::new("program")
                .short('e')
                .value_name("PROGRAM")
                .help("Run PROGRAM (source name `-e`); several -e are joined by newlines")
                .action(ArgAction::Append)
                // `-e '-1 | stdout'`: the program text may start with `-`.
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString)),
        )
        .arg(
            Arg::new("check")
                .short('c')
                .help("Check only: report the errors found before running, then print\n`Syntax OK` (exit 0) or `Syntax NG` (exit 1); nothing runs")
                .action(ArgAction::SetTrue),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .help("Dump the parse tree to standard error before running; implies -w")
                .action(ArgAction::SetTrue),
        )
        .arg(
            Arg::new("warnings")
                .short('w')
                .help("Extra warnings (e.g. unused streams)")
                .action(ArgAction::SetTrue),
        )
        .arg(
            Arg::new("version")
                .long("version")
                .help("Print the version")
                .action(ArgAction::Version),
        )
        .arg(
            Arg::new("args")
                .value_name("ARGS")
                .hide(true)
                .num_args(0..)
                .trailing_var_arg(true)
                .value_parser(clap::value_parser!(OsString)),
        )
}

/// Parses a command line (`args[0]` is the program name). `Err` is a usage error, or
/// the request to print help or the version: print it with `Error::print` and exit
/// with `Error::exit_code` (2 for usage errors, 0 for help and version).
pub fn parse_args<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let m = command().try_get_matches_from(args)?;
    Ok(invocation(&m))
}

fn invocation(m: &ArgMatches) -> Invocation {
    let mut rest: Vec<&OsString> = m
        .get_many::<OsString>("args")
        .into_iter()
        .flatten()
        .collect();
    let program = match m.get_many::<OsString>("program") {
        Some(texts) => {
            let texts: Vec<Vec<u8>> = texts.map(|t| os_bytes(t)).collect();
            ProgramSource::Inline(texts.join(&b'\n'))
        }
        None if rest.is_empty() => ProgramSource::Stdin { explicit: false },
        None => {
            let file = rest.remove(0);
            if file == "-" {
                ProgramSource::Stdin { explicit: true }
            } else {
                ProgramSource::File(PathBuf::from(file))
            }
        }
    };
    let dump_ast = m.get_flag("verbose");
    Invocation {
        program,
        argv: rest
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        check: m.get_flag("check"),
        dump_ast,
        warnings: dump_ast || m.get_flag("warnings"),
    }
}

/// The bytes of a command-line argument: exact on Unix, where arguments are bytes.
fn os_bytes(s: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

/// Validates `STRM_WORKER_MAX` (1.6): unset, or a positive integer. The runtime reads
/// the value itself; checking it here turns a typo into a usage error before anything runs.
pub fn check_worker_max(value: Option<&OsStr>) -> Result<(), String> {
    let Some(value) = value else { return Ok(()) };
    match value.to_str().and_then(|v| v.parse::<u64>().ok()) {
        Some(n) if n > 0 => Ok(()),
        _ => Err(format!(
            "STRM_WORKER_MAX must be a positive integer (it is {:?})",
            value.to_string_lossy()
        )),
    }
}

/// The operating system's reason for an I/O error, without Rust's ` (os error N)`.
fn reason(e: &io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(i)) => text[..i].to_string(),
        _ => text,
    }
}

/// Reads the program text. `Err` carries the name to put in the message and the error.
fn load(program: &ProgramSource) -> Result<Source, (String, io::Error)> {
    match program {
        ProgramSource::Inline(text) => Ok(Source::new("-e", text.clone())),
        ProgramSource::File(path) => {
            let name = path.to_string_lossy().into_owned();
            match std::fs::read(path) {
                Ok(text) => Ok(Source::new(name, text)),
                Err(e) => Err((name, e)),
            }
        }
        // Standard input that is not a terminal (a terminal gets the REPL instead,
        // see `main`; with `-c` or `-` it is read to end of file).
        ProgramSource::Stdin { .. } => {
            let mut text = Vec::new();
            match io::stdin().lock().read_to_end(&mut text) {
                Ok(_) => Ok(Source::new("-", text)),
                Err(e) => Err(("-".to_string(), e)),
            }
        }
    }
}

/// Whether diagnostics get ANSI colours: only on a terminal, and never with `NO_COLOR`.
fn use_color() -> bool {
    io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The `streem` command: returns the process exit status.
pub fn main() -> i32 {
    let invocation = match parse_args(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => {
            // Help and version go to standard output with status 0; usage errors to
            // standard error with status 2.
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => USAGE_ERROR,
            };
        }
    };
    if let Err(message) = check_worker_max(std::env::var_os("STRM_WORKER_MAX").as_deref()) {
        eprintln!("streem: {message}");
        return USAGE_ERROR;
    }
    // No program and a terminal: the interactive REPL (7.2). `-c` still checks what
    // standard input gives.
    if invocation.program == (ProgramSource::Stdin { explicit: false })
        && !invocation.check
        && io::stdin().is_terminal()
    {
        return crate::repl::run(invocation.argv);
    }
    let source = match load(&invocation.program) {
        Ok(source) => Arc::new(source),
        Err((name, e)) => {
            eprintln!("streem: cannot read {name}: {}", reason(&e));
            return 1;
        }
    };
    let interpreter = Interpreter::new();
    if invocation.check {
        return check(&interpreter, source);
    }
    let argv = invocation.argv.clone();
    interpreter.run(source, argv, &invocation.run_options())
}

/// `-c`: the errors found before running on standard error, then the verdict on
/// standard output.
fn check(interpreter: &Interpreter, source: Arc<Source>) -> i32 {
    let errors = interpreter.check(source, use_color());
    let mut stderr = io::stderr().lock();
    for e in &errors {
        let _ = stderr.write_all(e.as_bytes());
    }
    let _ = stderr.flush();
    let (verdict, status) = if errors.is_empty() {
        ("Syntax OK", 0)
    } else {
        ("Syntax NG", 1)
    };
    // A closed standard output (`streem -c p.strm | true`) does not change the verdict.
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{verdict}").and_then(|_| stdout.flush());
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        let mut full = vec!["streem"];
        full.extend_from_slice(args);
        match parse_args(full) {
            Ok(inv) => inv,
            Err(e) => panic!("{args:?} should parse, got: {e}"),
        }
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        let mut full = vec!["streem"];
        full.extend_from_slice(args);
        match parse_args(full) {
            Ok(inv) => panic!("{args:?} should fail, got {inv:?}"),
            Err(e) => e,
        }
    }

    fn file(p: &str) -> ProgramSource {
        ProgramSource::File(PathBuf::from(p))
    }

    fn inline(p: &str) -> ProgramSource {
        ProgramSource::Inline(p.as_bytes().to_vec())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn file_then_script_arguments() {
        let inv = parse(&["prog.strm", "a", "b"]);
        assert_eq!(inv.program, file("prog.strm"));
        assert_eq!(inv.argv, strings(&["a", "b"]));
        assert!(!inv.check && !inv.warnings && !inv.dump_ast);
    }

    #[test]
    fn d67_everything_after_the_file_is_verbatim() {
        let inv = parse(&["p.strm", "a", "--", "-x"]);
        assert_eq!(inv.program, file("p.strm"));
        assert_eq!(inv.argv, strings(&["a", "--", "-x"]));
        // Options after the file are script arguments, not options.
        let inv = parse(&["p.strm", "-c", "-w", "--help", "--version", "-e", "x"]);
        assert!(!inv.check && !inv.warnings);
        assert_eq!(
            inv.argv,
            strings(&["-c", "-w", "--help", "--version", "-e", "x"])
        );
    }

    #[test]
    fn d67_with_e_every_positional_is_a_script_argument() {
        let inv = parse(&["-e", "print(ARGV)", "a", "-x"]);
        assert_eq!(inv.program, inline("print(ARGV)"));
        assert_eq!(inv.argv, strings(&["a", "-x"]));
        // Option processing stops at the first of them.
        let inv = parse(&["-e", "p", "a", "-c", "--", "b"]);
        assert!(!inv.check);
        assert_eq!(inv.argv, strings(&["a", "-c", "--", "b"]));
        // A first script argument that looks like a program file is still an argument.
        let inv = parse(&["-e", "p", "x.strm"]);
        assert_eq!(inv.program, inline("p"));
        assert_eq!(inv.argv, strings(&["x.strm"]));
    }

    #[test]
    fn double_dash_ends_options() {
        let inv = parse(&["--", "-x.strm", "a"]);
        assert_eq!(inv.program, file("-x.strm"));
        assert_eq!(inv.argv, strings(&["a"]));
        let inv = parse(&["-c", "--", "-w"]);
        assert!(inv.check && !inv.warnings);
        assert_eq!(inv.program, file("-w"));
        // With -e, the argument after `--` is the first script argument.
        let inv = parse(&["-e", "p", "--", "-x", "y"]);
        assert_eq!(inv.program, inline("p"));
        assert_eq!(inv.argv, strings(&["-x", "y"]));
        // Only the first `--` is taken by option processing.
        let inv = parse(&["--", "--", "a"]);
        assert_eq!(inv.program, file("--"));
        assert_eq!(inv.argv, strings(&["a"]));
        // `--` alone: no program given.
        assert_eq!(
            parse(&["--"]).program,
            ProgramSource::Stdin { explicit: false }
        );
    }

    #[test]
    fn dash_is_standard_input() {
        let inv = parse(&["-", "a", "-"]);
        assert_eq!(inv.program, ProgramSource::Stdin { explicit: true });
        assert_eq!(inv.argv, strings(&["a", "-"]));
        let inv = parse(&["-e", "p", "-"]);
        assert_eq!(inv.program, inline("p"));
        assert_eq!(inv.argv, strings(&["-"]));
    }

    #[test]
    fn no_program_reads_standard_input() {
        let inv = parse(&[]);
        assert_eq!(inv.program, ProgramSource::Stdin { explicit: false });
        assert!(inv.argv.is_empty());
        let inv = parse(&["-c", "-w"]);
        assert_eq!(inv.program, ProgramSource::Stdin { explicit: false });
        assert!(inv.check && inv.warnings);
    }

    #[test]
    fn e_program_forms() {
        // Separate, attached, combined after other letters.
        assert_eq!(parse(&["-e", "print(1)"]).program, inline("print(1)"));
        assert_eq!(parse(&["-eprint(1)"]).program, inline("print(1)"));
        let inv = parse(&["-we", "print(1)", "a"]);
        assert!(inv.warnings);
        assert_eq!(inv.program, inline("print(1)"));
        assert_eq!(inv.argv, strings(&["a"]));
        let inv = parse(&["-cweprint(1)"]);
        assert!(inv.check && inv.warnings);
        assert_eq!(inv.program, inline("print(1)"));
        // The program text may start with `-`, or be empty.
        assert_eq!(parse(&["-e", "-1 | stdout"]).program, inline("-1 | stdout"));
        assert_eq!(parse(&["-e", "-c"]).program, inline("-c"));
        assert_eq!(parse(&["-e", ""]).program, inline(""));
        // Options may follow -e PROGRAM until the first script argument.
        let inv = parse(&["-e", "p", "-c", "a"]);
        assert!(inv.check);
        assert_eq!(inv.argv, strings(&["a"]));
    }

    #[test]
    fn several_e_are_joined_by_newlines() {
        let inv = parse(&["-e", "x = 1", "-e", "print(x)", "a"]);
        assert_eq!(inv.program, inline("x = 1\nprint(x)"));
        assert_eq!(inv.argv, strings(&["a"]));
    }

    #[test]
    fn combined_and_repeated_flags() {
        let inv = parse(&["-cw", "p.strm"]);
        assert!(inv.check && inv.warnings && !inv.dump_ast);
        let inv = parse(&["-c", "-c", "-ww", "p.strm"]);
        assert!(inv.check && inv.warnings);
        assert_eq!(inv.program, file("p.strm"));
    }

    #[test]
    fn verbose_implies_warnings() {
        let inv = parse(&["-v", "p.strm"]);
        assert!(inv.dump_ast && inv.warnings);
        let opts = inv.run_options();
        assert!(opts.dump_ast && opts.warnings);
        let opts = parse(&["-w", "p.strm"]).run_options();
        assert!(opts.warnings && !opts.dump_ast);
    }

    #[test]
    fn unknown_option_is_a_usage_error_naming_it() {
        for args in [
            &["-x", "p.strm"][..],
            &["-cx", "p.strm"],
            &["--frobnicate"],
            &["-V"],
        ] {
            let e = parse_err(args);
            assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{args:?}");
            assert_eq!(e.exit_code(), 2);
            let text = e.render().to_string();
            let bad = args[0].trim_start_matches("-c");
            let bad = if bad.starts_with('-') {
                bad.to_string()
            } else {
                format!("-{bad}")
            };
            assert!(text.contains(&bad), "{text:?} should name {bad}");
        }
    }

    #[test]
    fn missing_program_of_e_is_a_usage_error() {
        for args in [&["-e"][..], &["-c", "-e"], &["-we"]] {
            let e = parse_err(args);
            assert_eq!(e.kind(), ErrorKind::InvalidValue, "{args:?}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn help_and_version() {
        for args in [&["-h"][..], &["--help"], &["-c", "--help"]] {
            let e = parse_err(args);
            assert_eq!(e.kind(), ErrorKind::DisplayHelp);
            assert_eq!(e.exit_code(), 0);
            let text = e.render().to_string();
            assert!(
                text.contains("Usage: streem [OPTIONS] FILE [ARGS]..."),
                "{text}"
            );
            assert!(text.contains("Examples:"), "{text}");
            for option in ["-e <PROGRAM>", "-c", "-v", "-w", "-h, --help", "--version"] {
                assert!(text.contains(option), "help lacks {option}: {text}");
            }
        }
        let e = parse_err(&["--version"]);
        assert_eq!(e.kind(), ErrorKind::DisplayVersion);
        assert_eq!(e.exit_code(), 0);
        assert_eq!(
            e.render().to_string(),
            format!("streem {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'a', 0xff]);
        let inv = parse_args([
            OsString::from("streem"),
            "-e".into(),
            bad.clone(),
            bad.clone(),
        ])
        .unwrap();
        // The program keeps its bytes; the script argument is converted lossily.
        assert_eq!(inv.program, ProgramSource::Inline(vec![b'a', 0xff]));
        assert_eq!(inv.argv, vec!["a\u{fffd}".to_string()]);
        let inv = parse_args([OsString::from("streem"), bad]).unwrap();
        assert_eq!(
            inv.program,
            ProgramSource::File(PathBuf::from(OsString::from_vec(vec![b'a', 0xff])))
        );
    }

    #[test]
    fn worker_max_must_be_a_positive_integer() {
        assert!(check_worker_max(None).is_ok());
        assert!(check_worker_max(Some(OsStr::new("1"))).is_ok());
        assert!(check_worker_max(Some(OsStr::new("64"))).is_ok());
        for bad in ["0", "-1", "", "two", "1.5", " 2", "99999999999999999999999"] {
            let e = check_worker_max(Some(OsStr::new(bad))).unwrap_err();
            assert!(
                e.starts_with("STRM_WORKER_MAX must be a positive integer"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn io_reason_drops_the_os_error_number() {
        let e = io::Error::from_raw_os_error(2);
        let r = reason(&e);
        assert!(!r.contains("os error"), "{r}");
        assert!(!r.is_empty());
        let e = io::Error::other("plain message");
        assert_eq!(reason(&e), "plain message");
    }
}
