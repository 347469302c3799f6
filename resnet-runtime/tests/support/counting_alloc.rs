//! A global allocator that counts allocations on every thread, for the
//! no-allocation tests (each includes this file with `#[path]` and installs
//! [`Counting`] as its binary's `#[global_allocator]`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting `alloc` and `realloc` calls.
pub struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far, on all threads.
pub fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Runs enough small jobs on the current pool that every worker steals
/// some: a worker registers with crossbeam-epoch (an allocation) on its
/// first steal, which is rayon's cost, not the code under test.
pub fn make_every_worker_steal() {
    use rayon::prelude::*;
    let sum: u32 = (0..100_000u32)
        .into_par_iter()
        .with_max_len(1)
        .map(|i| std::hint::black_box(i) % 7)
        .sum();
    assert!(sum > 0);
}
