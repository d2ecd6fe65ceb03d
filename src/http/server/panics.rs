//! No request panics the server: a panic in a request's handler is caught
//! where the server polls the request, logged once (with the route and the
//! request id the answer carries), counted
//! (`keyhold_request_panics_total{route}`), and answered 500 with a JSON
//! detail, instead of an empty reply or a reset HTTP/2 stream.
//!
//! The log line comes from the panic hook, which runs where the panic
//! happens, before unwinding: while a request is polled its route and id
//! are in a task-local, and on the blocking threads it uses they are in a
//! thread-local ([`crate::blocking`]), so the hook can name them. A panic
//! on a blocking thread is resumed in the request's task and caught here
//! like any other. Panics outside a request go to the hook that was there
//! before (Rust's default prints them on stderr).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

use futures_util::FutureExt;
use http::{HeaderValue, StatusCode};

use warp::reply::Response;

use crate::blocking::Request;

/// Installs the hook (once per process), chained before the one in place.
pub(super) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| match crate::blocking::current() {
            Some(p) => {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(
                    target: "keyhold::panic",
                    request_id = %p.request_id,
                    route = p.route,
                    location = %location,
                    "a request's handler panicked ({message}); the request was answered 500 \
                     and the server goes on: please report this with the request id"
                );
            }
            None => previous(info),
        }));
    });
}

/// Polls `handle` as the request `request_id` of `route`; a panic in it
/// is caught and answered 500.
pub(super) async fn guarded<E>(
    route: &'static str,
    request_id: String,
    handle: impl Future<Output = Result<Response, E>>,
) -> Result<Response, E> {
    let polled = Request {
        route,
        request_id: request_id.clone(),
    };
    match crate::blocking::scope(polled, AssertUnwindSafe(handle).catch_unwind()).await {
        Ok(answered) => answered,
        Err(_) => {
            metrics::counter!("keyhold_request_panics_total", "route" => route).increment(1);
            Ok(panicked(&request_id))
        }
    }
}

/// The answer to a request whose handler panicked.
fn panicked(request_id: &str) -> Response {
    let mut r = crate::http::context::json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({
            "detail": format!(
                "an internal error stopped this request (a keyhold bug, logged under request id \
                 {request_id}); nothing of it was done unless its audit record says so: retry, \
                 and report the request id"
            )
        }),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use warp::Filter;

    /// Sends `GET /boom` then `GET /fine` on one connection; checks the
    /// first was answered 500 with a request id; returns the whole answer.
    async fn boom_then_fine(
        routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    ) -> String {
        let got = super::super::tests::exchange(
            routes,
            b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\nGET /fine HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 500"), "{got:?}");
        assert!(got.contains("x-request-id: "), "{got:?}");
        got
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_connection_goes_on() {
        let routes = warp::path("boom")
            .map(|| -> warp::reply::Response { panic!("a handler bug") })
            .or(warp::path("fine").map(|| warp::reply::Response::new("fine".into())))
            .unify()
            .boxed();
        // Two requests on one connection: the panic is answered 500 with a
        // JSON detail and the request id, and the next request is served.
        let got = boom_then_fine(routes).await;
        assert!(
            got.contains("an internal error stopped this request"),
            "{got:?}"
        );
        assert!(got.contains("HTTP/1.1 200"), "{got:?}");
        assert!(got.ends_with("fine"), "{got:?}");
    }

    #[tokio::test]
    async fn a_panic_on_a_blocking_thread_is_answered_500_too() {
        let routes = warp::path("boom")
            .and_then(|| async {
                // Exports, verification and PostgreSQL calls run like this.
                let v = crate::blocking::run(|| -> u8 { panic!("a blocking bug") })
                    .await
                    .map_err(|_| warp::reject::not_found())?;
                Ok::<_, warp::Rejection>(warp::reply::Response::new(v.to_string().into()))
            })
            .or(warp::path("fine").map(|| warp::reply::Response::new("fine".into())))
            .unify()
            .boxed();
        let got = boom_then_fine(routes).await;
        assert!(got.ends_with("fine"), "{got:?}");
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_broken_not_whole() {
        let routes = warp::path("stream")
            .map(|| {
                crate::http::stream::stream_blocking(|out| {
                    use std::io::Write;
                    out.write_all(b"first line\n")?;
                    if out.flush().is_ok() {
                        panic!("a producer bug");
                    }
                    Ok::<_, std::io::Error>(())
                })
            })
            .boxed();
        let got = super::super::tests::exchange(
            routes,
            b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        // A whole chunked body ends with the zero-length chunk; a broken
        // one does not, so the client knows it was cut.
        assert!(!got.ends_with("0\r\n\r\n"), "{got:?}");
    }
}
