//! Shared test harness: runs the real `keyhold` binary, starts servers on
//! ephemeral loopback ports, stops them by their own process id, and
//! keeps everything they printed for secret scans.
//!
//! Over 500 lines: the one harness every suite shares (vault, server,
//! client, store helpers).
#![allow(dead_code)]

pub mod browser;
pub mod postgres;
pub mod tls;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyhold");

/// The binary under test: `KEYHOLD_BIN` (a release build, for the crash
/// script) or the one cargo built for these tests.
pub fn bin() -> String {
    std::env::var("KEYHOLD_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Every environment variable that can hold a keyring.
pub const KEY_VARS: [&str; 4] = [
    "FERNET_KEY",
    "FERNET_KEYS",
    "FERNET_KEY_FILE",
    "KEYHOLD_KEY_COMMAND",
];

/// A `keyhold` command with no keyring and no KEYHOLD_* settings inherited.
pub fn keyhold() -> Command {
    let mut c = Command::new(bin());
    for v in KEY_VARS {
        c.env_remove(v);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYHOLD_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Runs keyhold with `FERNET_KEY=key` and the arguments.
pub fn run_with_key(key: &str, args: &[&str]) -> Output {
    keyhold()
        .env("FERNET_KEY", key)
        .args(args)
        .output()
        .expect("run keyhold")
}

/// Fails the test, with what the command said on stderr, unless it exited 0.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn keygen() -> String {
    let out = keyhold().arg("keygen").output().expect("run keygen");
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A fresh data directory, initialised with `key`; returns the admin token.
pub fn init(dir: &Path, key: &str) -> String {
    let out = run_with_key(key, &["init", "--data-dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim().to_string();
    assert!(token.starts_with("kh_"), "init printed {token:?}");
    token
}

/// The backend `Vault::new` puts its store on: sled, or PostgreSQL when
/// `KEYHOLD_TEST_BACKEND=postgres` (scripts/test.sh runs the API, rate
/// limit, reveal-audit, export and lifecycle suites so, each vault on a server of
/// its own).
pub fn on_postgres() -> bool {
    std::env::var("KEYHOLD_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// A workspace: temp dir, key, initialised store and admin token.
pub struct Vault {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub key: String,
    pub admin: String,
    /// The PostgreSQL server and database URL, on that backend.
    pub pg: Option<(postgres::Cluster, String)>,
}

impl Vault {
    pub fn new() -> Vault {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let key = keygen();
        if on_postgres() {
            let cluster =
                postgres::cluster().expect("KEYHOLD_TEST_BACKEND=postgres needs PostgreSQL");
            let url = cluster.database("vault");
            let out = run_with_key(&key, &["init", "--database-url", &url]);
            assert_ok(&out);
            let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
            return Vault {
                tmp,
                dir,
                key,
                admin,
                pg: Some((cluster, url)),
            };
        }
        let admin = init(&dir, &key);
        Vault {
            tmp,
            dir,
            key,
            admin,
            pg: None,
        }
    }

    pub fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Where offline commands find the store: `--data-dir DIR` or
    /// `--database-url URL`.
    pub fn store_args(&self) -> [&str; 2] {
        match &self.pg {
            Some((_, url)) => ["--database-url", url],
            None => ["--data-dir", self.dir_str()],
        }
    }

    /// Starts a server on this vault with extra environment.
    pub fn serve(&self, env: &[(&str, &str)]) -> Server {
        let mut all = vec![("FERNET_KEY", self.key.as_str())];
        all.extend_from_slice(env);
        self.serve_env(&all)
    }

    /// Runs `f` on this vault's stopped store, unlocked with the Fernet
    /// key `key` (sled: the directory; PostgreSQL: the database).
    pub fn with_unlocked<T>(
        &self,
        key: &str,
        f: impl FnOnce(&keyhold::internals::store::Store) -> T,
    ) -> T {
        match &self.pg {
            None => with_unlocked_store(&self.dir, key, f),
            Some((_, url)) => {
                let url: keyhold::internals::store::DatabaseUrl = url.parse().unwrap();
                let opts = keyhold::internals::store::PgOptions::new(url, None, "test".into());
                let store = keyhold::internals::store::Store::connect(&opts, false).unwrap();
                unlock(&store, key);
                f(&store)
            }
        }
    }

    /// Starts a server on this vault with exactly this environment.
    pub fn serve_env(&self, env: &[(&str, &str)]) -> Server {
        if let Some((_, url)) = &self.pg {
            // With the key the server is given (a rotation may have
            // replaced the vault's first one).
            let key = env
                .iter()
                .find(|(k, _)| *k == "FERNET_KEY")
                .map_or(self.key.as_str(), |(_, v)| *v);
            pg_rate(url, key, env);
        }
        match &self.pg {
            Some((_, url)) => Server::start_args(
                &[
                    "--database-url",
                    url,
                    "--node-name",
                    "test-node",
                    "--listen",
                    "127.0.0.1:0",
                ],
                env,
            ),
            None => Server::start(&self.dir, env),
        }
    }

    /// An offline token of `role`.
    pub fn token(&self, name: &str, role: &str, providers: Option<&str>) -> String {
        let [flag, place] = self.store_args();
        let mut args = vec![
            "token", "create", flag, place, "--name", name, "--role", role,
        ];
        if let Some(p) = providers {
            args.push("--providers");
            args.push(p);
        }
        let out = run_with_key(&self.key, &args);
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A token record as an older keyhold stored it, whose fields today's
    /// rules refuse at creation (an auditor limited to providers, a name
    /// starting with `kh_`): written
    /// through the library, with its audit record (sled stores only).
    pub fn stored_token(
        &self,
        name: &str,
        role: keyhold::internals::access::Role,
        provider: &str,
    ) -> String {
        with_unlocked_store(&self.dir, &self.key, |store| {
            let ring = keyhold::internals::keyring::Keyring::parse_list(
                keyhold::internals::keyring::KeySource::FernetKey,
                [self.key.as_str()],
            )
            .unwrap();
            let mut p = keyhold::internals::vault::prepare_token(
                store,
                "legacy",
                keyhold::internals::access::Role::Reader,
                Some(vec![provider.to_string()]),
            )
            .unwrap();
            // The name as it was stored, whatever today's rules say of it.
            p.record.name = name.into();
            p.record.role = role.as_str().into();
            p.record.scopes = role.scopes();
            let log = keyhold::internals::audit::AuditLog::open(store.clone(), &ring).unwrap();
            let ev = keyhold::internals::audit::AuditEvent::cli(
                keyhold::internals::audit::Action::TokenCreate,
                keyhold::internals::audit::Outcome::Success,
                None,
            );
            log.append(&[(ev, vec![p.write()])]).unwrap();
            p.token.secret.expose().to_string()
        })
    }

    /// The audit log, read back from the store offline (server stopped).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let [flag, place] = self.store_args();
        let out = run_with_key(&self.key, &["audit", "export", flag, place]);
        assert!(
            out.status.success(),
            "export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("jsonl line"))
            .collect()
    }
}

/// A running `keyhold serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr: they end at the pipes' EOF.
    pumps: Vec<std::thread::JoinHandle<()>>,
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    })
}

impl Server {
    /// `keyhold serve --data-dir DIR --listen 127.0.0.1:0` with `env`.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = keyhold();
        cmd.args([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        Self::spawn(cmd, env)
    }

    /// `keyhold serve --dev`.
    pub fn start_dev() -> Server {
        let mut cmd = keyhold();
        cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0"]);
        Self::spawn(cmd, &[])
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Server {
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn keyhold serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pumps = vec![pump(child.stderr.take().unwrap(), stderr.clone())];
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).expect("read serve stdout");
        let url = first
            .trim()
            .strip_prefix("keyhold listening on ")
            .map(str::to_string);
        let addr = match url
            .as_deref()
            .map(|u| u.split_once("://").map_or(u, |(_, a)| a))
        {
            Some(a) => a.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "serve did not start: stdout {first:?} stderr {}",
                    stderr.lock().unwrap()
                )
            }
        };
        stdout.lock().unwrap().push_str(&first);
        pumps.push(pump(reader, stdout.clone()));
        let base = url.unwrap_or_default();
        let s = Server {
            child: Some(child),
            addr,
            base,
            stdout,
            stderr,
            pumps,
        };
        if s.base.starts_with("http://") {
            s.wait_healthy();
        }
        s
    }

    /// `keyhold serve` with these arguments (the caller picks --listen).
    pub fn start_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = keyhold();
        cmd.arg("serve").args(args);
        Self::spawn(cmd, env)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(self.url("/healthz")).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server at {} never became healthy", self.base);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL by pid (a crash), and wait for the process to be gone.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid, wait for exit; returns (exit code, stdout, stderr).
    pub fn stop(mut self) -> (Option<i32>, String, String) {
        let code = self.terminate();
        // Everything the server printed, up to its exit.
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (code, out, err)
    }

    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed so far (stdout + stderr).
    pub fn output(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Small HTTP helpers bound to a server and a token.
pub struct Api<'a> {
    pub server: &'a Server,
    pub token: Option<String>,
    pub http: reqwest::blocking::Client,
}

impl<'a> Api<'a> {
    pub fn new(server: &'a Server, token: &str) -> Api<'a> {
        Api {
            server,
            token: Some(token.to_string()),
            http: client(),
        }
    }

    pub fn anonymous(server: &'a Server) -> Api<'a> {
        Api {
            server,
            token: None,
            http: client(),
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut r = self.http.request(method, self.server.url(path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.req(reqwest::Method::GET, path).send().unwrap()
    }

    pub fn delete(&self, path: &str) -> reqwest::blocking::Response {
        self.req(reqwest::Method::DELETE, path).send().unwrap()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::blocking::Response {
        self.req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .unwrap()
    }

    /// Creates a key and returns its id.
    pub fn create_key(&self, provider: &str, name: &str, api_key: &str) -> String {
        let r = self.post_json(
            "/api/keys",
            &serde_json::json!({"provider": provider, "key_name": name, "api_key": api_key}),
        );
        assert_eq!(r.status(), 200, "create: {:?}", r.text());
        let v: serde_json::Value = r.json().unwrap();
        v["id"].as_str().unwrap().to_string()
    }
}

/// The `detail` of an error answer (and checks it has one).
pub fn detail(r: reqwest::blocking::Response) -> String {
    let v: serde_json::Value = r.json().expect("error body is JSON");
    v["detail"]
        .as_str()
        .expect("error has a detail")
        .to_string()
}

/// Every regular file under `dir`, read whole.
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Copies a directory tree (a store, for tampering or rollback tests).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Runs `f` on the stopped store in `dir`, opened with the library, and
/// returns once the store is closed and free for the next `keyhold` run
/// (sled lets go of its lock a moment after the handle is dropped).
pub fn with_store<T>(dir: &Path, f: impl FnOnce(&keyhold::internals::store::Store) -> T) -> T {
    let store = keyhold::internals::store::Store::open(dir).unwrap();
    let out = f(&store);
    store.close().unwrap();
    out
}

/// As [`with_store`], with the store unlocked by the Fernet key `key`
/// (records are authenticated, so reading them takes the keyring).
pub fn with_unlocked_store<T>(
    dir: &Path,
    key: &str,
    f: impl FnOnce(&keyhold::internals::store::Store) -> T,
) -> T {
    with_store(dir, |store| {
        unlock(store, key);
        f(store)
    })
}

/// Applies the record keys of `store` with the Fernet key `key`.
pub fn unlock(store: &keyhold::internals::store::Store, key: &str) {
    let ring = keyhold::internals::keyring::Keyring::parse_list(
        keyhold::internals::keyring::KeySource::FernetKey,
        [key],
    )
    .unwrap();
    keyhold::internals::unlock::unlock(store, &ring).unwrap();
}

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/make_reference_fixture.py"
);

/// Builds the Python reference's `api_keys` fixture in `dir`
/// (scripts/make_reference_fixture.py); `None` outside CI when Python or
/// `cryptography` is missing (under CI=true that fails, saying why).
pub fn reference_fixture(key: &str, dir: &Path, extra: &[&str]) -> Option<()> {
    let out = Command::new("python3")
        .arg(FIXTURE)
        .arg(dir)
        .args(extra)
        .env("FERNET_KEY", key)
        .output();
    let why = match &out {
        Err(e) => format!("python3 cannot be started: {e}"),
        Ok(o) if o.status.code() == Some(3) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Ok(o) => {
            assert!(
                o.status.success(),
                "fixture: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return Some(());
        }
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "the import fixture needs Python 3 with `cryptography` (.ci/run installs it): {why}"
        );
    }
    eprintln!("import test not run here: {why}");
    None
}

/// `keyhold import --json --data-dir DIR --from FILE`, which must succeed;
/// its JSON report.
pub fn import_json(key: &str, dir: &Path, file: &Path) -> serde_json::Value {
    let out = run_with_key(
        key,
        &[
            "import",
            "--json",
            "--data-dir",
            dir.to_str().unwrap(),
            "--from",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `keyhold serve` on the data directory `dir` with `FERNET_KEY=key`: it
/// must refuse to start (exit 2 within 20 s; killed by its own pid and
/// failed otherwise). Returns what it said on stderr.
pub fn serve_must_refuse(dir: &Path, key: &str) -> String {
    let mut child = keyhold()
        .env("FERNET_KEY", key)
        .args(["serve", "--data-dir", dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .as_mut()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert_eq!(status.code(), Some(2), "serve: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started on a store it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens the store's files with sled itself, as someone with write access
/// to the disk can (the server stopped), runs `f`, and lets go of the lock.
pub fn with_sled<T>(dir: &Path, f: impl FnOnce(&sled::Db) -> T) -> T {
    keyhold::internals::store::wait_until_released(dir).unwrap();
    let db = sled::open(keyhold::internals::store::sled_dir(dir).unwrap()).unwrap();
    let out = f(&db);
    db.flush().unwrap();
    drop(db);
    keyhold::internals::store::wait_until_released(dir).unwrap();
    out
}

/// `GET /metrics` with `token` (one with `metrics:read`): the text.
pub fn metrics_text(s: &Server, token: &str) -> String {
    client()
        .get(s.url("/metrics"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// On PostgreSQL every node uses the reveal rate the database stores: a
/// test that starts a node with `KEYHOLD_REVEAL_RATE` sets the cluster's
/// rate to it first (an audited `settings` record), if it differs.
pub fn pg_rate(url: &str, key: &str, env: &[(&str, &str)]) {
    let Some((_, rate)) = env.iter().find(|(k, _)| *k == "KEYHOLD_REVEAL_RATE") else {
        return;
    };
    let out = run_with_key(key, &["reveal-rate", "--database-url", url]);
    assert_ok(&out);
    if String::from_utf8_lossy(&out.stdout).trim() != *rate {
        assert_ok(&run_with_key(
            key,
            &["reveal-rate", rate, "--database-url", url],
        ));
    }
}

/// Runs a command that must refuse to start: its exit code and stderr.
/// A server that starts after all is stopped (by its own pid) after 15 s,
/// so the test fails instead of hanging.
pub fn refused_within(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (code, stderr)
}
