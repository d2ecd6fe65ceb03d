//! The route table as data and as filters: the labels a request path
//! falls under, and the balanced tree the routes are joined into.

use http::StatusCode;

use crate::http::route_patterns::route_label;
use crate::http::ROUTES;

/// The label as it was computed before it stopped allocating: every
/// pattern and the path split into vectors.
fn label_by_vectors(method: &http::Method, path: &str) -> &'static str {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let segs: Vec<&str> = path.split('/').collect();
    let fits = |pattern: &str| {
        let p: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
        p.len() == segs.len()
            && p.iter()
                .zip(&segs)
                .all(|(a, b)| (a.starts_with('{') && !b.is_empty()) || a == b)
    };
    ROUTES
        .iter()
        .filter(|(_, p)| fits(p))
        .min_by_key(|(m, p)| (*m != method.as_str(), p.contains('{')))
        .map_or("unmatched", |(_, p)| p)
}

#[test]
fn route_labels_are_the_patterns_they_were() {
    use http::Method;
    let mut paths: Vec<String> = [
        "/",
        "",
        "//",
        "/api",
        "/api/",
        "/api/keys/",
        "/api/keys//",
        "/api/keys//versions",
        "/api/keys/x/versions/",
        "/api/keys/x/y/z",
        "/api/audit/verify",
        "/api/audit/verify/",
        "/api/audit/x",
        "/ui",
        "/ui/",
        "/ui/assets/app.js",
        "/ui/assets/",
        "/nope",
        "/api/providers/claude/keys/a%20b",
        "/api/providers//key",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (_, p) in ROUTES {
        paths.push(p.to_string());
        paths.push(p.replace("{id}", "0b6e").replace(['{', '}'], ""));
        paths.push(format!("{p}/"));
        paths.push(format!("{p}/extra"));
    }
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::from_bytes(b"BREW").unwrap(),
    ];
    for path in &paths {
        for m in &methods {
            assert_eq!(
                route_label(m, path),
                label_by_vectors(m, path),
                "{m} {path}"
            );
        }
    }
    assert_eq!(
        route_label(&Method::GET, "/api/keys/0b6e"),
        "/api/keys/{id}"
    );
    assert_eq!(
        route_label(&Method::GET, "/api/audit/verify"),
        "/api/audit/verify"
    );
    assert_eq!(route_label(&Method::GET, "/nope"), "unmatched");
}

#[tokio::test]
async fn routes_joined_as_a_tree_are_tried_first_to_last() {
    use warp::Filter;
    // Routes 0..n, each answering its number on /x/{n} and every even one
    // on /shared too: the first that accepts answers.
    for n in 1..=9usize {
        let table: Vec<crate::http::routes::Route> = (0..n)
            .map(|i| {
                let own = warp::path!("x" / usize)
                    .and_then(move |k: usize| async move {
                        if k == i {
                            Ok(())
                        } else {
                            Err(warp::reject::not_found())
                        }
                    })
                    .untuple_one();
                let shared = warp::path!("shared").and_then(move || async move {
                    if i % 2 == 0 {
                        Ok(())
                    } else {
                        Err(warp::reject::not_found())
                    }
                });
                own.or(shared)
                    .map(move |_| warp::reply::Response::new(i.to_string().into()))
                    .boxed()
            })
            .collect();
        let all = crate::http::routes::any_of(table).unwrap();
        for i in 0..n {
            let r = warp::test::request()
                .path(&format!("/x/{i}"))
                .reply(&all)
                .await;
            assert_eq!(r.body(), i.to_string().as_bytes(), "{n} routes, /x/{i}");
        }
        let r = warp::test::request().path("/shared").reply(&all).await;
        assert_eq!(r.body(), "0".as_bytes(), "{n} routes: the first wins");
        let r = warp::test::request().path("/none").reply(&all).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{n} routes");
    }
    assert!(crate::http::routes::any_of(Vec::new()).is_none());
}
