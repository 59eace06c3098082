//! A global allocator wrapper that can count live heap bytes, so the engine benchmark reports
//! real memory per pending key instead of an estimate.
//!
//! Counting is off until [`enable_counting`] is called (only `recjoin bench engine` does), so the
//! other commands of the binary — multi-threaded services — pay one read of a never-written flag
//! per allocation, not a contended atomic add.

use std::alloc::{GlobalAlloc, Layout};

// Forwards to the broker's allocator, which survives absurd sizes that malformed Kafka requests
// claim (see `broker_core::alloc`); without it one bad frame could abort the whole process.
use broker_core::alloc::ReserveLargeAlloc as System;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Counts bytes in use once enabled; install with `#[global_allocator]` in a binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

/// Starts counting. Bytes allocated before are not counted (their frees are, so read
/// [`live_bytes`] as a difference from a baseline taken after enabling).
pub fn enable_counting() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Net heap bytes allocated through [`CountingAlloc`] since counting was enabled (0 if it is
/// not installed or not enabled).
pub fn live_bytes() -> usize {
    usize::try_from(LIVE.load(Ordering::Relaxed).max(0)).unwrap_or(0)
}

#[inline]
fn add(n: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_add(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }
}

#[inline]
fn sub(n: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_sub(isize::try_from(n).unwrap_or(isize::MAX), Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter
// is only bookkeeping.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}
