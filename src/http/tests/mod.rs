//! The route handlers without a socket (`warp::test`): one module per
//! handler module, each test driving [`routes`] on an in-memory vault
//! ([`Fx`]). Every request goes through [`Req::send`], which checks that
//! each error answer is JSON with a `detail` and an `X-Request-Id`, and
//! notes the route it reached; [`every_route_has_its_answer_and_a_refusal`]
//! runs every route test again and fails when a route in [`ROUTES`] was
//! not answered both a success and a refusal.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::route_patterns::route_label;
use super::{routes, AppState, State, ROUTES};
use crate::access::Role;
use crate::limiter::TrustedProxies;
use crate::vault::{Core, CorePolicy, KeyPolicy, Opened, Origin, TokenRequest};

/// The string field `name` of each item of a JSON list.
pub(super) fn each<'a>(list: &'a Value, name: &str) -> Vec<&'a str> {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|i| i[name].as_str()).collect()
}

/// `GET path?query` with `token` is refused 422 naming what is wrong, for
/// each `(query, says)`.
pub(super) async fn refuses_queries(fx: &Fx, path: &str, token: &str, cases: &[(&str, &str)]) {
    for (query, says) in cases {
        let a = fx.get(&format!("{path}?{query}"), token).await;
        a.refused(StatusCode::UNPROCESSABLE_ENTITY, says);
    }
}

/// Each `name` of a module as its own test (on a fresh [`Fx`]), and the
/// module's [`Case`]s as `ALL` for the coverage test.
macro_rules! route_tests {
    ($($name:ident),+ $(,)?) => {
        mod run {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::http::tests::Fx::new()).await
                }
            )+
        }

        pub(super) const ALL: &[crate::http::tests::Case] =
            &[$((stringify!($name), |fx| Box::pin($name(fx)))),+];
    };
}

mod admin_routes;
mod audit_routes;
mod key_routes;
mod refusals;
mod reveal_routes;
mod route_table;
mod served;

/// The requests a test sent: method, route pattern, status.
type Seen = Arc<Mutex<Vec<(String, &'static str, StatusCode)>>>;

/// How a fixture's vault is set up.
#[derive(Clone, Copy)]
pub(super) struct Setup {
    pub(super) rate: &'static str,
    pub(super) keep_versions: u32,
    /// Whether /metrics has a recorder to render.
    pub(super) metrics: bool,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            rate: "1000/min",
            keep_versions: 10,
            metrics: true,
        }
    }
}

/// A server state on a temporary in-memory store, its first admin token,
/// and the route table over it.
pub(super) struct Fx {
    pub(super) state: State,
    pub(super) admin: String,
    table: BoxedFilter<(Response,)>,
    seen: Seen,
}

impl Fx {
    pub(super) fn new() -> Fx {
        Fx::with(Setup::default())
    }

    pub(super) fn with(setup: Setup) -> Fx {
        Fx::recording(setup, Seen::default())
    }

    /// Another vault, set up as `setup`, whose requests are noted where
    /// this one's are.
    pub(super) fn another(&self, setup: Setup) -> Fx {
        Fx::recording(setup, self.seen.clone())
    }

    fn recording(setup: Setup, seen: Seen) -> Fx {
        let (opened, admin) = Opened::development("admin", setup.rate.parse().unwrap()).unwrap();
        let admin = admin.expose().to_string();
        let budget = (
            std::num::NonZeroU32::new(1000).unwrap(),
            Duration::from_secs(60),
        );
        let policy = CorePolicy {
            audit_timeout: Duration::from_secs(5),
            refusal_budget: budget,
            record_budget: budget,
            key_policy: KeyPolicy::new(setup.keep_versions, 3600).unwrap(),
        };
        // A recorder of its own, not installed: /metrics renders it.
        let metrics = setup.metrics.then(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle()
        });
        let state = Arc::new(AppState {
            core: Arc::new(Core::start(opened, policy, None)),
            proxies: TrustedProxies::default(),
            metrics,
            gauges: super::observe::Gauges::new(),
            read_timeout: Duration::from_secs(5),
            body_reads: tokio::sync::Semaphore::new(4),
        });
        Fx {
            table: routes(state.clone()),
            state,
            admin,
            seen,
        }
    }

    /// A token of `role`, limited to `providers` when some are given,
    /// minted by the operator.
    pub(super) async fn token(&self, role: Role, providers: &[&str]) -> String {
        let req = TokenRequest {
            name: format!("t-{}", uuid::Uuid::new_v4().simple()),
            role,
            providers: (!providers.is_empty())
                .then(|| providers.iter().map(|p| p.to_string()).collect()),
            ttl_seconds: None,
        };
        let minted = self
            .state
            .core
            .vault()
            .create_token(&Origin::cli(), None, req)
            .await
            .unwrap();
        minted.secret.expose().to_string()
    }

    /// A request to `path` (with its query, if any).
    pub(super) fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            fx: self,
            method: method.to_string(),
            path: path.to_string(),
            token: None,
            body: None,
            headers: Vec::new(),
        }
    }

    /// `GET path` with `token`.
    pub(super) async fn get(&self, path: &str, token: &str) -> Answer {
        self.req("GET", path).token(token).send().await
    }

    /// A key stored by the admin; its id.
    pub(super) async fn add_key(&self, provider: &str, name: &str, api_key: &str) -> String {
        let body = serde_json::json!({"provider": provider, "key_name": name, "api_key": api_key});
        let a = self
            .req("POST", "/api/keys")
            .token(&self.admin)
            .json(&body.to_string())
            .send()
            .await;
        a.ok()["id"].as_str().unwrap().to_string()
    }
}

/// One request being built.
pub(super) struct Req<'a> {
    fx: &'a Fx,
    method: String,
    path: String,
    token: Option<String>,
    body: Option<String>,
    headers: Vec<(String, String)>,
}

impl Req<'_> {
    pub(super) fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// A JSON body (sent as it is: it may be malformed on purpose).
    pub(super) fn json(mut self, body: &str) -> Self {
        self.body = Some(body.to_string());
        self
    }

    pub(super) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends it to the route table. Every error answer must be JSON with a
    /// `detail` and carry an `X-Request-Id`.
    pub(super) async fn send(self) -> Answer {
        let mut req = warp::test::request().method(&self.method).path(&self.path);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(b) = self.body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.reply(&self.fx.table).await;
        let answer = Answer {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.body().to_vec(),
        };
        let what = format!("{} {}", self.method, self.path);
        if answer.status.is_client_error() || answer.status.is_server_error() {
            let detail = answer.json()["detail"].as_str().map(String::from);
            assert!(
                detail.is_some_and(|d| !d.is_empty()),
                "{what}: an error answer ({}) says what happened in `detail`: {}",
                answer.status,
                answer.text()
            );
            assert!(
                answer.headers.contains_key("x-request-id"),
                "{what}: an error answer ({}) carries X-Request-Id",
                answer.status
            );
        }
        let path = self.path.split('?').next().unwrap_or_default();
        let method = http::Method::from_bytes(self.method.as_bytes()).unwrap();
        let label = route_label(&method, path);
        if let Ok(mut seen) = self.fx.seen.lock() {
            seen.push((self.method, label, answer.status));
        }
        answer
    }
}

/// An answer, read whole.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub(super) fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a 200, and answers its JSON body.
    #[track_caller]
    pub(super) fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        self.json()
    }

    /// Asserts a refusal with `status` whose `detail` says `says`.
    #[track_caller]
    pub(super) fn refused(&self, status: StatusCode, says: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let detail = self.detail();
        assert!(detail.contains(says), "{says:?} not in {detail:?}");
    }
}

/// One route test: its name, and its body on a fresh fixture.
pub(super) type Case = (&'static str, fn(Fx) -> Pin<Box<dyn Future<Output = ()>>>);

/// The usual refusals of a route that takes a token with `scope`: none
/// (401), an unknown one (401), one without the scope (403 naming it,
/// sent as `lacking`).
pub(super) async fn refuses_callers(fx: &Fx, method: &str, path: &str, scope: &str, lacking: &str) {
    let a = fx.req(method, path).send().await;
    a.refused(StatusCode::UNAUTHORIZED, "token");
    assert_eq!(a.header("www-authenticate"), "Bearer", "{method} {path}");
    let a = fx.req(method, path).token("kh_unknown").send().await;
    a.refused(StatusCode::UNAUTHORIZED, "token");
    let a = fx.req(method, path).token(lacking).send().await;
    a.refused(StatusCode::FORBIDDEN, &format!("`{scope}`"));
}

/// Routes whose success cannot happen in this process, and why: each is
/// answered by a test that starts the binary.
const SUCCESS_ELSEWHERE: &[(&str, &str, &str)] = &[(
    "POST",
    "/api/admin/reload",
    "a reload reads the keyring from the environment again, and this vault's keyring is a \
     random development key (tests/reload.rs reloads a served vault)",
)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_has_its_answer_and_a_refusal() {
    let seen = Seen::default();
    let cases = [
        key_routes::ALL,
        reveal_routes::ALL,
        admin_routes::ALL,
        audit_routes::ALL,
        served::ALL,
    ];
    for (name, case) in cases.iter().flat_map(|c| c.iter()) {
        eprintln!("running {name}");
        case(Fx::recording(Setup::default(), seen.clone())).await;
    }
    let seen = seen.lock().unwrap().clone();
    let answered = |method: &str, pattern: &str, success: bool| {
        seen.iter().any(|(m, p, s)| {
            m == method
                && *p == pattern
                && (s.is_success() || s.is_redirection()) == success
                && !s.is_server_error()
        })
    };
    let mut missing = Vec::new();
    for (method, pattern) in ROUTES {
        let elsewhere = SUCCESS_ELSEWHERE
            .iter()
            .any(|(m, p, _)| m == method && p == pattern);
        if answered(method, pattern, true) == elsewhere {
            missing.push(format!(
                "{method} {pattern}: {}",
                if elsewhere {
                    "succeeded here, so leave it out of SUCCESS_ELSEWHERE"
                } else {
                    "no test saw it succeed"
                }
            ));
        }
        if !answered(method, pattern, false) {
            missing.push(format!("{method} {pattern}: no test saw it refuse"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(
        seen.iter().all(|(_, _, s)| !s.is_server_error()),
        "no route test answers 5xx: {seen:?}"
    );
}
