//! Blocking work done for a request (an export, a verification, a
//! PostgreSQL call, a lock) runs on tokio's blocking threads. A panic there
//! used to come back as a `JoinError` that callers answered 503
//! "interrupted", unlogged and uncounted. [`run`] keeps the request's route
//! and id with the blocking thread, so the panic hook can name them, and
//! resumes the panic in the request's task, where the server's guard
//! catches it, counts it and answers 500 (see `http::server::panics`).
//!
//! Outside a request (background upkeep, offline commands) nothing guards
//! the task, so a panic there comes back as [`Interrupted`], as before.

use std::cell::RefCell;
use std::future::Future;

/// The request being served: what the panic hook names.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// The route's name, as in the metrics' `route` label.
    pub route: &'static str,
    /// The id the answer carries in `x-request-id`.
    pub request_id: String,
}

tokio::task_local! {
    static IN_TASK: Request;
}

thread_local! {
    static ON_THREAD: RefCell<Option<Request>> = const { RefCell::new(None) };
}

/// The request this task or blocking thread serves, if any.
pub(crate) fn current() -> Option<Request> {
    IN_TASK
        .try_with(Request::clone)
        .ok()
        .or_else(|| ON_THREAD.with(|r| r.borrow().clone()))
}

/// Polls `fut` as `request`.
pub(crate) async fn scope<F: Future>(request: Request, fut: F) -> F::Output {
    IN_TASK.scope(request, fut).await
}

/// The blocking work did not finish: the runtime is shutting down, or it
/// panicked outside a request.
#[derive(Debug, thiserror::Error)]
#[error("the work was interrupted (the server is stopping, or it hit an internal error)")]
pub(crate) struct Interrupted;

/// Runs `f` on a blocking thread as the current request. A panic in `f`
/// is resumed here when a request is served (the server's guard answers
/// 500); otherwise it is [`Interrupted`].
pub(crate) async fn run<T, F>(f: F) -> Result<T, Interrupted>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let request = current();
    let guarded = request.is_some();
    match tokio::task::spawn_blocking(move || on_thread(request, f)).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() && guarded => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Interrupted),
    }
}

/// Runs `f` on this (blocking) thread as `request`: what `run` does on the
/// thread, for producers that are spawned some other way.
pub(crate) fn on_thread<T>(request: Option<Request>, f: impl FnOnce() -> T) -> T {
    struct Leave(Option<Request>);
    impl Drop for Leave {
        fn drop(&mut self) {
            let previous = self.0.take();
            ON_THREAD.with(|r| *r.borrow_mut() = previous);
        }
    }
    let previous = ON_THREAD.with(|r| r.replace(request));
    // Put back on the way out, unwinding included: blocking threads are
    // reused by other requests.
    let _leave = Leave(previous);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            route: "test",
            request_id: "r1".into(),
        }
    }

    #[tokio::test]
    async fn the_blocking_thread_knows_the_request_and_forgets_it_after() {
        let seen = scope(request(), run(|| current().map(|r| r.request_id)))
            .await
            .unwrap();
        assert_eq!(seen.as_deref(), Some("r1"));
        let after = run(|| current().is_none()).await.unwrap();
        assert!(after);
    }

    #[tokio::test]
    async fn a_panic_is_resumed_in_a_request_and_interrupted_outside_one() {
        use futures_util::FutureExt;
        let outside = run(|| -> u8 { panic!("outside") }).await;
        assert!(outside.is_err());
        let inside =
            std::panic::AssertUnwindSafe(scope(request(), run(|| -> u8 { panic!("inside") })))
                .catch_unwind()
                .await;
        assert!(inside.is_err(), "the panic reaches the request's task");
    }
}
