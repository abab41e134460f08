//! Helpers for unit tests that need a glommio executor (file and socket I/O).

/// Runs `f` to completion on a fresh unpinned executor with a little io_uring memory.
pub fn run_on_executor<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 * 1024)
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("join");
}
