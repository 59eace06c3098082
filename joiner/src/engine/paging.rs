//! Paging hints to the kernel for the engine's large allocations.
//!
//! Transparent huge pages for the large, randomly accessed tables (slot pages, key index).
//! With 4 KiB pages, nearly every random access to a table of tens or hundreds of MiB misses the
//! TLB and walks the page tables; on Linux, asking for transparent huge pages on those regions
//! (before they are first touched) removes most of those walks and most of the page faults of
//! a growing table. Elsewhere, or when the kernel declines, this does nothing.
//!
//! Populating for the payload store's fresh chunks: filled front to back right away, they are
//! faulted in with one system call instead of one fault per 4 KiB page.

/// Size of a huge page on x86_64 and aarch64 Linux.
const HUGE: usize = 2 << 20;

/// Advises the kernel to back the whole huge pages inside `[ptr, ptr + len)` with transparent
/// huge pages. Only a hint: the memory's contents and validity do not change.
pub(crate) fn advise(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize).saturating_add(len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside one live allocation of the caller; MADV_HUGEPAGE
            // only changes how the kernel backs those pages, never their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Faults in the whole pages inside `[ptr, ptr + len)` for writing with one system call, instead
/// of one page fault per 4 KiB page as they are first written. For a freshly allocated buffer
/// that is about to be filled front to back. Only a hint: contents and validity do not change,
/// and on kernels without `MADV_POPULATE_WRITE` (before 5.14) or elsewhere it does nothing.
pub(crate) fn populate(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize).saturating_add(len) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies inside one live allocation of the caller;
            // MADV_POPULATE_WRITE only faults pages in (as a write of their current contents
            // would), never changes them.
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end - start,
                    libc::MADV_POPULATE_WRITE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}
