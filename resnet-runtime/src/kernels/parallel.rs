//! How kernels share a layer among the pool's threads: the caller's thread
//! takes the first share and then waits for the rest awake.
//!
//! Rayon's own wait, in `join`, sleeps after some tens of microseconds
//! without work, and waking up costs as much again. At batch 1 the thread
//! that ended its share first lost that at nearly every layer: 0.4 ms of a
//! ResNet-50 pass.

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `mine` on this thread and `theirs` on the pool, and returns once
/// both are done, this thread waiting awake: running the pool's other
/// jobs meanwhile (`theirs` itself, if no other thread took it) and
/// spinning between them. A panic in either reaches the caller, as from
/// `rayon::join`. Allocates nothing.
pub(crate) fn join_awake(mine: impl FnOnce() + Send, theirs: impl FnOnce() + Send) {
    /// Sets its flag when dropped: when `theirs` returns or unwinds.
    struct Finished<'a>(&'a AtomicBool);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let finished = AtomicBool::new(false);
    rayon::join(
        || {
            mine();
            while !finished.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        },
        || {
            let _finished = Finished(&finished);
            theirs();
        },
    );
}

/// Calls `work(t)` for each `t` in `0..threads`, `t = 0` on this thread,
/// which waits for the others awake ([`join_awake`]).
pub(crate) fn on_each(threads: usize, work: impl Fn(usize) + Sync) {
    if threads <= 1 {
        work(0);
        return;
    }
    join_awake(|| work(0), || (1..threads).into_par_iter().for_each(&work));
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

    /// A share that panics does not leave the caller's thread waiting for
    /// it: the panic reaches the caller, wherever the share ran (within a
    /// minute; a caller still waiting then fails the test).
    #[test]
    fn a_panicking_share_reaches_the_caller() {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for pool_threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(pool_threads)
                    .build()
                    .unwrap();
                for panicking in [0, 1] {
                    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        pool.install(|| {
                            on_each(2, |t| {
                                if t == panicking {
                                    panic!("share {t}");
                                }
                            })
                        })
                    }));
                    sender
                        .send((pool_threads, panicking, caught.is_err()))
                        .unwrap();
                }
            }
        });
        for _ in 0..4 {
            let wait = std::time::Duration::from_secs(60);
            let (pool_threads, panicking, caught) = receiver
                .recv_timeout(wait)
                .expect("the caller still waits for a share that panicked");
            assert!(caught, "share {panicking} on {pool_threads} threads");
        }
    }
}
