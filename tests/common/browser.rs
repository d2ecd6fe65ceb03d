//! Real browsers for the console's tests: Debian's `chromium` through
//! `chromedriver` (plain W3C WebDriver calls over HTTP) and `firefox-esr`
//! through its own Marionette socket (the same commands; Debian has no
//! geckodriver), each on a loopback port and stopped by its own pid.
//! Screenshots go to `target/ui-screenshots/` (git-ignored).
//!
//! Over 500 lines: two browser transports (WebDriver, Marionette) behind
//! the one session type the console's tests drive.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

// -------------------------------------------------------------- webdriver

/// The W3C name of an element reference in WebDriver answers.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` on a loopback port, stopped by its own pid.
pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// SIGTERM to `child` by its pid; SIGKILL if it has not exited after
/// `grace`.
fn stop(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn find_binary(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(var) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Chromium and chromedriver, or why they cannot run here (a failure
/// under CI=true).
pub fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_binary(
        "KEYHOLD_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    let driver = find_binary("KEYHOLD_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => {
            let why = format!(
                "chromium {} and chromedriver {}",
                if c.is_some() { "found" } else { "missing" },
                if d.is_some() { "found" } else { "missing" }
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "the console's browser test needs Debian's chromium and chromium-driver \
                     (scripts/test.sh installs them): {why}"
                );
            }
            eprintln!(
                "console browser test not run here: {why} (apt-get install chromium \
                 chromium-driver, or run scripts/test.sh)"
            );
            None
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    pub fn start(path: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Ok(r) = d.http.get(format!("{}/status", d.base)).send() {
                if let Ok(v) = r.json::<Value>() {
                    if v["value"]["ready"] == true {
                        return d;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn session(&self, chromium: &Path, profile: &Path, extra: &[&str]) -> Session<'_> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-default-apps",
            "--disable-extensions",
            "--window-size=1280,800",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let downloads = profile.join("downloads");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args, "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
            }},
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
        }}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .expect("new session")
            .json()
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Session {
            transport: Transport::WebDriver { driver: self, id },
        }
    }
}

/// A browser session: W3C WebDriver over HTTP (chromedriver), or the
/// same commands over Firefox's own Marionette socket (Debian has no
/// geckodriver package; Marionette is what geckodriver itself speaks).
pub struct Session<'a> {
    transport: Transport<'a>,
}

pub enum Transport<'a> {
    WebDriver { driver: &'a Driver, id: String },
    Marionette(std::cell::RefCell<Marionette>),
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Transport::WebDriver { driver, id } = &self.transport {
            let _ = driver
                .http
                .delete(format!("{}/session/{}", driver.base, id))
                .send();
        }
    }
}

impl Session<'_> {
    /// A W3C WebDriver command (method, path under the session).
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match &self.transport {
            Transport::WebDriver { driver, id } => {
                let url = format!("{}/session/{}{}", driver.base, id, path);
                let mut req = driver.http.request(method.clone(), url);
                if let Some(b) = body {
                    req = req.json(&b);
                }
                let r: Value = req.send().expect("webdriver call").json().unwrap();
                if r["value"].get("error").is_some() {
                    panic!("webdriver {method} {path}: {}", r["value"]);
                }
                r["value"].clone()
            }
            Transport::Marionette(m) => m.borrow_mut().w3c(path, body.unwrap_or(json!({}))),
        }
    }
    pub fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }
    pub fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }
    pub fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}));
    }
    pub fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }
    pub fn find(&self, css: &str) -> String {
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap().to_string()
    }
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.post(&format!("/element/{e}/value"), json!({ "text": text }));
    }
    /// Keys sent to whatever has the focus (the keyboard, not a click).
    pub fn keys(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        );
    }
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.get(&format!("/element/{e}/text"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    /// Waits until `condition` (a JS expression) is true.
    #[track_caller]
    pub fn wait_for(&self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(45);
        let script = format!("return !!({condition});");
        while Instant::now() < deadline {
            if self.js(&script) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let page = self.js("return document.body.innerText;");
        panic!("timed out waiting for {condition}; the page shows:\n{page}");
    }
    pub fn screenshot(&self, name: &str) {
        self.save_screenshot(name, &self.get("/screenshot"));
    }
    /// A screenshot of one element only (WebDriver; Chromium).
    pub fn element_screenshot(&self, css: &str, name: &str) {
        let e = self.find(css);
        self.save_screenshot(name, &self.get(&format!("/element/{e}/screenshot")));
    }
    fn save_screenshot(&self, name: &str, b64: &Value) {
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
    /// The network requests the page sent since the last call: (url,
    /// request headers), from Chromium's performance log. The browser's
    /// own pages (`chrome://`, the blank start page) are left out.
    pub fn requests(&self) -> Vec<(String, Value)> {
        let entries = self.post("/se/log", json!({"type": "performance"}));
        let mut out = Vec::new();
        for e in entries.as_array().cloned().unwrap_or_default() {
            let Ok(msg) = serde_json::from_str::<Value>(e["message"].as_str().unwrap_or("{}"))
            else {
                continue;
            };
            let m = &msg["message"];
            if m["method"] == "Network.requestWillBeSent" {
                let req = &m["params"]["request"];
                let url = req["url"].as_str().unwrap_or_default();
                if !(url.starts_with("http:") || url.starts_with("https:")) {
                    continue;
                }
                out.push((
                    req["url"].as_str().unwrap_or_default().to_string(),
                    req["headers"].clone(),
                ));
            }
        }
        out
    }
    /// Script errors the page raised since the last call (Chromium's
    /// console log; the missing favicon's 404 is not one).
    pub fn script_errors(&self) -> Vec<String> {
        let entries = self.post("/se/log", json!({"type": "browser"}));
        entries
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .filter(|m| !m.contains("favicon.ico"))
            .collect()
    }
    /// Every place a page can keep something: storage, cookies (the
    /// page's and the browser's), IndexedDB names, Cache Storage names.
    pub fn everything_stored(&self) -> String {
        let page = self.js(
            "var s = {}; \
             for (var i = 0; i < localStorage.length; i++) { var k = localStorage.key(i); s['local:' + k] = localStorage.getItem(k); } \
             for (var j = 0; j < sessionStorage.length; j++) { var q = sessionStorage.key(j); s['session:' + q] = sessionStorage.getItem(q); } \
             s.cookie = document.cookie; s.url = location.href; s.name = window.name; s.history = JSON.stringify(history.state); \
             return JSON.stringify(s);",
        );
        let async_stores = self.post(
            "/execute/async",
            json!({"script": "var done = arguments[arguments.length - 1]; \
                Promise.all([indexedDB.databases ? indexedDB.databases() : [], caches.keys()]) \
                  .then(function (r) { done(JSON.stringify(r)); }, function (e) { done('error ' + e); });",
                "args": []}),
        );
        let cookies = self.get("/cookie");
        format!("{page} {async_stores} {cookies}")
    }
}

// ---------------------------------------------------------------- firefox

/// Firefox ESR, headless, with Marionette on a loopback port and a fresh
/// profile; stopped by its own pid.
pub struct Firefox {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Firefox {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}

impl Firefox {
    pub fn start(binary: &Path) -> Firefox {
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        // The machine's network is closed: nothing that phones home.
        let prefs = [
            format!("user_pref(\"marionette.port\", {port});"),
            "user_pref(\"app.update.enabled\", false);".into(),
            "user_pref(\"app.normandy.enabled\", false);".into(),
            "user_pref(\"browser.shell.checkDefaultBrowser\", false);".into(),
            "user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);".into(),
            "user_pref(\"toolkit.telemetry.enabled\", false);".into(),
            "user_pref(\"network.captive-portal-service.enabled\", false);".into(),
            "user_pref(\"network.connectivity-service.enabled\", false);".into(),
            "user_pref(\"browser.safebrowsing.malware.enabled\", false);".into(),
            "user_pref(\"browser.safebrowsing.phishing.enabled\", false);".into(),
            "user_pref(\"extensions.update.enabled\", false);".into(),
            "user_pref(\"browser.aboutwelcome.enabled\", false);".into(),
            "user_pref(\"messaging-system.rsexperimentloader.enabled\", false);".into(),
        ];
        std::fs::write(profile.path().join("user.js"), prefs.join("\n")).unwrap();
        let child = Command::new(binary)
            .args(["--headless", "--marionette", "--no-remote", "-profile"])
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_HEADLESS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start firefox");
        Firefox {
            child,
            port,
            _profile: profile,
        }
    }

    pub fn session(&self) -> Session<'static> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "Firefox's Marionette never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut m = Marionette { stream, next: 0 };
        let hello = m.read();
        assert_eq!(hello["marionetteProtocol"], 3, "{hello}");
        m.command("WebDriver:NewSession", json!({"capabilities": {}}));
        Session {
            transport: Transport::Marionette(std::cell::RefCell::new(m)),
        }
    }
}

/// Marionette's wire format: `LEN:JSON`, commands `[0, id, name, params]`,
/// answers `[1, id, error, result]`.
pub struct Marionette {
    stream: std::net::TcpStream,
    next: u64,
}

impl Marionette {
    pub fn read(&mut self) -> Value {
        use std::io::Read;
        let mut len = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            self.stream.read_exact(&mut byte).unwrap();
            if byte[0] == b':' {
                break;
            }
            len.push(byte[0]);
        }
        let n: usize = String::from_utf8(len).unwrap().parse().unwrap();
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).unwrap();
        serde_json::from_slice(&buf).unwrap()
    }

    pub fn command(&mut self, name: &str, params: Value) -> Value {
        use std::io::Write;
        self.next += 1;
        let msg = serde_json::to_vec(&json!([0, self.next, name, params])).unwrap();
        self.stream
            .write_all(format!("{}:", msg.len()).as_bytes())
            .unwrap();
        self.stream.write_all(&msg).unwrap();
        let answer = self.read();
        if !answer[2].is_null() {
            panic!("marionette {name}: {}", answer[2]);
        }
        let result = answer[3].clone();
        match result.get("value") {
            Some(v) => v.clone(),
            None => result,
        }
    }

    /// The W3C WebDriver commands the tests use, as Marionette names them.
    pub fn w3c(&mut self, path: &str, body: Value) -> Value {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let with_id = |mut b: Value, id: &str| {
            b["id"] = json!(id);
            b
        };
        match parts.as_slice() {
            ["url"] => self.command("WebDriver:Navigate", body),
            ["window", "rect"] => self.command("WebDriver:SetWindowRect", body),
            ["execute", "sync"] => self.command("WebDriver:ExecuteScript", body),
            ["execute", "async"] => self.command("WebDriver:ExecuteAsyncScript", body),
            ["element"] => self.command("WebDriver:FindElement", body),
            ["element", id, "click"] => self.command("WebDriver:ElementClick", with_id(body, id)),
            ["element", id, "value"] => {
                self.command("WebDriver:ElementSendKeys", with_id(body, id))
            }
            ["element", id, "text"] => self.command("WebDriver:GetElementText", with_id(body, id)),
            ["actions"] => self.command("WebDriver:PerformActions", body),
            ["screenshot"] => self.command("WebDriver:TakeScreenshot", json!({"full": false})),
            ["cookie"] => self.command("WebDriver:GetCookies", body),
            _ => panic!("no Marionette command for {path}"),
        }
    }
}
