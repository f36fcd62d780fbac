/// mimalloc: per-thread free lists make the one allocation per input line (and its
/// free, often on another thread) several times cheaper than glibc's malloc.
/// Transparent huge pages stay off (`no_thp`, and `prctl` below for machines where
/// THP is "always"): 2 MiB pages in its arenas would push peak RSS over 32 MiB.
///
/// `mimalloc::MiMalloc` asks for every block with `mi_malloc_aligned`, whose checks
/// cost about a third more per allocation than `mi_malloc`; every block this program
/// asks for has an alignment `mi_malloc` already gives (16 bytes, or the size when
/// smaller), so only larger alignments take the aligned path.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

struct Mimalloc;

/// The alignment `mi_malloc` guarantees for a block of `size` bytes.
fn natural(layout: std::alloc::Layout) -> bool {
    layout.align() <= 16 && layout.align() <= layout.size()
}

// SAFETY: each method hands the request to the mimalloc function made for it; blocks
// from either path are freed and resized by `mi_free`/`mi_realloc*`, which accept
// both.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if natural(layout) {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if natural(layout) {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr as *mut std::ffi::c_void);
    }

    #[inline]
    unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: std::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        use libmimalloc_sys as mi;
        let grown = std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
        if natural(layout) && natural(grown) {
            mi::mi_realloc(ptr as *mut std::ffi::c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut std::ffi::c_void, new_size, layout.align())
                as *mut u8
        }
    }
}

fn main() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and changes only this
    // process's paging policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    std::process::exit(streem::cli::main());
}
