//! Blocking work (the spill files of streamed transactions) kept off the
//! async worker threads.
//!
//! Invariant: on a multi-threaded runtime, the closure runs under
//! `block_in_place`, so the worker's other tasks move to another thread
//! while it blocks; elsewhere (a current-thread runtime in a test, no
//! runtime) it simply runs.

use tokio::runtime::{Handle, RuntimeFlavor};

pub fn off_the_async_threads<R>(work: impl FnOnce() -> R) -> R {
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::off_the_async_threads;

    #[test]
    fn runs_without_a_runtime_and_on_both_flavors() {
        assert_eq!(off_the_async_threads(|| 1), 1);
        let current = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        assert_eq!(current.block_on(async { off_the_async_threads(|| 2) }), 2);
        let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
        assert_eq!(
            multi.block_on(async { tokio::spawn(async { off_the_async_threads(|| 3) }).await }).ok(),
            Some(3)
        );
    }
}
