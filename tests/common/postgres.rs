//! A PostgreSQL server of the test's own: `initdb` into a temporary
//! directory, run as an unprivileged user (postgres refuses root; as root
//! the harness uses the `keyhold-test` user, creating it if missing),
//! listening on a free loopback port and a private socket directory, and
//! stopped by the PID in its `postmaster.pid` (never by name).
//!
//! The binaries are found on PATH or in Debian's /usr/lib/postgresql/*/bin
//! (`.ci/run` installs the `postgresql` package when they are missing).
//! Without them, outside CI, the tests that need a server say so and pass;
//! under CI=true they fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The unprivileged user the server runs as when the tests run as root.
const USER: &str = "keyhold-test";

/// The directory holding initdb, pg_ctl, postgres and psql.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        versions.reverse();
        dirs.extend(versions);
    }
    // A link on PATH (such as /usr/local/bin/initdb) leads to the
    // directory that holds all of them.
    dirs.into_iter()
        .filter_map(|d| std::fs::canonicalize(d.join("initdb")).ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .find(|d| d.join("pg_ctl").is_file() && d.join("psql").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A running cluster; stopped (fast shutdown) when dropped.
pub struct Cluster {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    sockets: PathBuf,
    bin: PathBuf,
    pub port: u16,
    root: bool,
    /// Extra server settings (TLS).
    extra: String,
}

/// Starts a cluster, or `None` (outside CI) when PostgreSQL is not installed.
pub fn cluster() -> Option<Cluster> {
    let Some(bin) = bin_dir() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL's binaries are missing (.ci/run installs Debian's postgresql)");
        }
        eprintln!("PostgreSQL tests not run here: initdb not found");
        return None;
    };
    Some(Cluster::start(bin))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Cluster {
    fn start(bin: PathBuf) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("keyhold-pg-")
            .tempdir()
            .unwrap();
        let root = is_root();
        if root {
            ensure_user();
            // The server's user must reach its directories.
            std::fs::set_permissions(
                tmp.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
        let data = tmp.path().join("data");
        let sockets = tmp.path().join("sock");
        std::fs::create_dir_all(&sockets).unwrap();
        if root {
            chown(tmp.path());
            chown(&sockets);
        }
        let mut c = Cluster {
            _tmp: tmp,
            data,
            sockets,
            bin,
            port: free_port(),
            root,
            extra: String::new(),
        };
        let out = c
            .cmd("initdb")
            .args([
                "-D",
                c.data.to_str().unwrap(),
                "-U",
                "keyhold",
                "-A",
                "trust",
            ])
            .args(["--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.boot();
        c
    }

    /// A command of the PostgreSQL binaries, as the server's user.
    fn cmd(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (again) on its port; waits until it accepts.
    pub fn boot(&mut self) {
        let log = self.data.parent().unwrap().join("server.log");
        if self.root && !log.exists() {
            std::fs::write(&log, b"").unwrap();
            chown(&log);
        }
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200{}",
            self.port,
            self.sockets.display(),
            self.extra
        );
        let out = self
            .cmd("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-o", &opts])
            .args(["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Restarts the server with TLS only over TCP (`hostssl` in
    /// pg_hba.conf): its certificate `cert`/`key` (PEM), copied into the
    /// data directory for the server's user.
    pub fn require_tls(&mut self, cert: &Path, key: &Path) {
        self.halt();
        let crt = self.data.join("server.crt");
        let k = self.data.join("server.key");
        std::fs::copy(cert, &crt).unwrap();
        std::fs::copy(key, &k).unwrap();
        std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if self.root {
            chown(&self.data);
        }
        self.extra = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        self.boot();
    }

    /// The server's data directory (tables' files under `base/`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Runs SQL over the private socket (works when TCP requires TLS).
    pub fn psql_local(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                self.sockets.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                "keyhold",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A streaming-replication standby of this server: `pg_basebackup -R`
    /// into a directory of its own, started on its own port.
    pub fn standby(&self) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("keyhold-pg-standby-")
            .tempdir()
            .unwrap();
        if self.root {
            std::fs::set_permissions(
                tmp.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
        let data = tmp.path().join("data");
        let sockets = tmp.path().join("sock");
        std::fs::create_dir_all(&sockets).unwrap();
        if self.root {
            chown(tmp.path());
        }
        let mut c = Cluster {
            _tmp: tmp,
            data,
            sockets,
            bin: self.bin.clone(),
            port: free_port(),
            root: self.root,
            extra: String::new(),
        };
        let out = c
            .cmd("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "keyhold",
            ])
            // A fast checkpoint: the default spreads it over minutes.
            .args([
                "-D",
                c.data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.boot();
        c
    }

    /// Promotes a standby to primary; waits until it accepts writes.
    pub fn promote(&self) {
        let out = self
            .cmd("pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "-w", "promote"])
            .output()
            .expect("run pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The postmaster's PID, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the server (fast shutdown: SIGINT to the postmaster's PID)
    /// and waits until it is gone.
    pub fn halt(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A URL for database `db` (created by [`Cluster::database`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://keyhold@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
        self.url(db)
    }

    /// Runs SQL in database `db`; returns what psql printed (unaligned,
    /// tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "keyhold",
            ])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.halt();
    }
}

fn ensure_user() {
    // The tests of one binary start clusters from several threads at once:
    // one of them makes the user and the others wait until it exists. (On
    // a new machine, with every thread racing to make it, initdb once
    // failed with "Permission denied"; not reproduced since, and this
    // removes the race.)
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(make_user);
}

fn make_user() {
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        // Several test binaries may race to create it: a second useradd
        // fails, and the check after it is what counts.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .output();
    }
    let ok = Command::new("id")
        .arg(USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot create the unprivileged user {USER} for PostgreSQL"
    );
}

fn chown(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", &format!("{USER}:"), path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "chown {}", path.display());
}
