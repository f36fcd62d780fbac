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
    std::process::exit(streem::cli::main());
}
