//! How kernels share a layer among the pool's threads: the caller's thread
//! takes the first share and then waits for the rest awake.
//!
//! Rayon's own wait, in `join`, sleeps after some tens of microseconds
//! without work, and waking up costs as much again. At batch 1 the thread
//! that ended its share first lost that at nearly every layer: 0.4 ms of a
//! ResNet-50 pass.

use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `mine` on this thread and `theirs` on the pool, and returns once
/// `mine` is done and `theirs` has called its argument `count` times (once
/// per share it finished), waiting awake: running the pool's other jobs
/// meanwhile (`theirs` itself, if no other thread took it) and spinning
/// between them. Allocates nothing.
pub(crate) fn join_awake(
    mine: impl FnOnce() + Send,
    count: usize,
    theirs: impl FnOnce(&(dyn Fn() + Sync)) + Send,
) {
    if count == 0 {
        mine();
        return;
    }
    let pending = AtomicUsize::new(count);
    let done = || {
        pending.fetch_sub(1, Ordering::Release);
    };
    rayon::join(
        || {
            mine();
            while pending.load(Ordering::Acquire) > 0 {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        },
        || theirs(&done),
    );
}

/// Calls `work(t)` for each `t` in `0..threads`, `t = 0` on this thread,
/// which waits for the others awake ([`join_awake`]).
pub(crate) fn on_each(threads: usize, work: impl Fn(usize) + Sync) {
    join_awake(
        || work(0),
        threads.max(1) - 1,
        |done| {
            (1..threads).into_par_iter().for_each(|t| {
                work(t);
                done();
            })
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Every share runs once, whether or not the pool has a thread for it:
    /// in a pool of one, the caller runs the others' shares while it waits.
    #[test]
    fn every_share_runs_once_on_pools_of_any_size() {
        for pool_threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(pool_threads)
                .build()
                .unwrap();
            for threads in [0, 1, 2, 5] {
                let runs: Vec<AtomicU64> = (0..threads.max(1)).map(|_| AtomicU64::new(0)).collect();
                pool.install(|| {
                    on_each(threads, |t| {
                        runs[t].fetch_add(1, Ordering::Relaxed);
                    })
                });
                let runs: Vec<u64> = runs.iter().map(|r| r.load(Ordering::Relaxed)).collect();
                assert_eq!(
                    runs,
                    vec![1; threads.max(1)],
                    "{threads} shares on {pool_threads} threads"
                );
            }
        }
    }
}
