//! A global allocator that survives absurd allocation sizes read from the wire.
//!
//! `kafka-protocol` decodes an array by reserving room for the element count the peer claims before
//! reading any element. A malformed request claiming two billion elements asks for hundreds of GB;
//! the system allocator refuses, and Rust aborts the process on allocation failure — one bad frame
//! would take the broker down. This allocator serves requests of [`LARGE`] bytes or more from
//! anonymous `MAP_NORESERVE` mappings instead: they only reserve address space, so the bogus
//! reservation succeeds, decoding then fails on the missing bytes, and the mapping is released.
//! Smaller requests go to the system allocator unchanged. Binaries that decode untrusted requests
//! install it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are served by reserve-only mappings.
pub const LARGE: usize = 1 << 30;

/// The system allocator, with reserve-only mappings for huge blocks (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct ReserveLargeAlloc;

fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= 4096
}

// SAFETY: every block is returned by the allocator it came from: large blocks (decided by the
// layout, which callers must pass back unchanged) by munmap, others by `System`.
unsafe impl GlobalAlloc for ReserveLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            map(layout.size()) // anonymous mappings are zero-filled
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: `ptr` came from `map` with this size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_large(layout) && !is_large(new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocate, copy the common prefix, free the old block: each with valid layouts.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        ptr.cast()
    }
}

#[cfg(test)]
mod tests {
    #[global_allocator]
    static ALLOC: super::ReserveLargeAlloc = super::ReserveLargeAlloc;

    #[test]
    fn absurd_reservations_succeed_and_large_blocks_work() {
        // 200 GB on a 24 GiB machine: the system allocator would refuse and the process abort.
        let v: Vec<[u8; 100]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
        drop(v);
        // A large block grows (copying only its contents) and shrinks back to a small one.
        let mut big: Vec<u8> = Vec::with_capacity(super::LARGE + 10);
        big.extend_from_slice(b"abc");
        big.reserve(2 * super::LARGE);
        big.push(b'd');
        assert_eq!(big, b"abcd");
        big.shrink_to_fit();
        assert_eq!(big.capacity(), 4);
        assert_eq!(big, b"abcd");
    }
}
