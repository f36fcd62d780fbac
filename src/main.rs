/// mimalloc: per-thread free lists make the one allocation per input line (and its
/// free, often on another thread) several times cheaper than glibc's malloc.
/// Transparent huge pages stay off (`no_thp`, and `prctl` below for machines where
/// THP is "always"): 2 MiB pages in its arenas would push peak RSS over 32 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and changes only this
    // process's paging policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // A bug that panics on a worker thread would otherwise leave the graph waiting
    // forever: say so and stop (EX_SOFTWARE).
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "streem: internal error: {what}{at}; this is a bug in streem, please report it"
        );
        std::process::exit(70);
    }));
    std::process::exit(streem::cli::main());
}
