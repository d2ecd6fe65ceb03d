//! What tests/docs_run.rs does with each shell block of the docs, keyed by
//! document and a marker string found in that block only.

use super::{Entry, How, Run};

/// Keys the client blocks hand to programs, and a reader limited to them.
const KEYS_AND_READER: &str = r#"
add_key claude prod sk-ant-prod >/dev/null
add_key gemini main gm-main >/dev/null
add_key github ci-bot gh-ci-bot >/dev/null
READER=$(keyhold token create --remote --name orchestrator --role reader --providers claude,gemini,github 2>/dev/null)
fake_program "$KH_DIR/bin/claude" ANTHROPIC_API_KEY
fake_program ./orchestrate.sh ANTHROPIC_API_KEY GEMINI_API_KEY GITHUB_TOKEN LOG_LEVEL KEYHOLD_TOKEN
fake_program ./run.sh ANTHROPIC_API_KEY LOG_LEVEL
printf 'LOG_LEVEL=debug\n' >app.env
"#;

/// An `exec` block that sets `KEYHOLD_TOKEN=kh_...   # a reader token`:
/// the reader of `KEYS_AND_READER`, the server running.
fn as_reader(file: &'static str, marker: &'static str, expect: &'static [&'static str]) -> Entry {
    Entry {
        file,
        marker,
        how: How::Run(Run {
            server: true,
            before: KEYS_AND_READER,
            edits: &[("KEYHOLD_TOKEN=kh_...", "KEYHOLD_TOKEN=$READER")],
            expect,
            ..Run::default()
        }),
    }
}

pub fn table() -> Vec<Entry> {
    vec![
        // ---------------------------------------------------------------- README.md
        Entry {
            file: "README.md",
            marker: "cargo run --release -- serve --dev",
            how: How::Run(Run {
                // A release build takes minutes: the binary the tests built
                // is the same program.
                edits: &[("cargo run --release -- serve --dev", "serves keyhold serve --dev")],
                expect: &["\"status\":\"ok\"", "root token (admin): kh_", "curl -s -H 'Authorization: Bearer kh_"],
                ..Run::default()
            }),
        },
        Entry {
            file: "README.md",
            marker: "scripts/test.sh",
            how: How::Skip(1, "the whole suite, which runs this test"),
        },
        Entry {
            file: "README.md",
            marker: "cargo build --release",
            how: How::Skip(
                2,
                "a release build (minutes) installed into /usr/local/bin; scripts/production-setup.sh installs the binary under test instead",
            ),
        },
        Entry {
            file: "README.md",
            marker: "useradd --system",
            how: How::Elsewhere("tests/production.rs", "the_production_script_runs_as_documented"),
        },
        Entry {
            file: "README.md",
            marker: "systemctl daemon-reload",
            how: How::Run(Run {
                server: true,
                drops: &[
                    ("install -m 0644 scripts/keyhold.service", "writes /etc/systemd/system; tests/production.rs checks the unit's lines"),
                    ("systemctl daemon-reload", "no systemd on the test machine; scripts/production-setup.sh serves as the unit would"),
                ],
                expect: &["\"status\":\"ok\""],
                ..Run::default()
            }),
        },
        Entry {
            file: "README.md",
            marker: "keyhold token create --data-dir /var/lib/keyhold --name dashboard",
            how: How::Run(Run {
                expect: &["dashboard", "orchestrator", "audit"],
                ..Run::default()
            }),
        },
        Entry {
            file: "README.md",
            marker: "\"api_key\":\"sk-ant-...\"}' $K/api/keys",
            how: How::Run(Run {
                server: true,
                expect: &["\"key_name\":\"prod\",\"api_key\":\"sk-ant-...\",\"version\":1"],
                ..Run::default()
            }),
        },
        as_reader(
            "README.md",
            "--env-file app.env -- ./run.sh",
            &[
                "claude: ANTHROPIC_API_KEY=sk-ant-prod",
                // `--provider claude` alone: the key it used, named on stderr.
                "(claude / prod, version 1), the newest live key of claude",
                "run.sh: ANTHROPIC_API_KEY=sk-ant-prod",
                "run.sh: LOG_LEVEL=debug",
            ],
        ),
        Entry {
            file: "README.md",
            marker: "keyhold audit export --remote -o all.jsonl",
            how: How::Run(Run {
                server: true,
                edits: &[
                    ("keyhold audit export --remote -o all.jsonl", "exported keyhold audit export --remote -o all.jsonl"),
                    ("SEQ:MAC", "\"$ANCHOR\""),
                ],
                expect: &["ok: ", ", signed by ed25519:"],
                ..Run::default()
            }),
        },
        // ---------------------------------------------------------------- CONTRIBUTING.md
        Entry {
            file: "CONTRIBUTING.md",
            marker: "scripts/test.sh --test reference",
            how: How::Skip(2, "the whole suite (or one file of it), which runs this test"),
        },
        Entry {
            file: "CONTRIBUTING.md",
            marker: "KEYHOLD_UPDATE_REFERENCE=1",
            how: How::Skip(1, "cargo inside cargo test: it runs tests/reference.rs, which checks docs/reference.md on every run"),
        },
        // ---------------------------------------------------------------- docs/api.md
        Entry {
            file: "docs/api.md",
            marker: "# Store a key (keys:write); ttl_seconds is optional.",
            how: How::Run(Run {
                server: true,
                edits: &[
                    // The id the reader reads off the answer.
                    (
                        "\"ttl_seconds\":2592000}' $K/api/keys\n",
                        "\"ttl_seconds\":2592000}' $K/api/keys | tee key.json\nID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])' <key.json)\n",
                    ),
                    (
                        "$K/api/tokens                                   #",
                        "$K/api/tokens | tee token.json; TOKEN_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])' <token.json) #",
                    ),
                ],
                after: "[ \"$(stat -c %a keyhold.backup)\" = 600 ]\n",
                expect: &["\"version\":2", "\"state\":\"previous\"", "\"status\":\"deleted\"", "\"status\":\"revoked\"", "\"rotated\":", "\"openapi\":"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/api.md",
            marker: "-X POST $K/api/reveal",
            how: How::Run(Run {
                server: true,
                before: r#"
H="Authorization: Bearer $TOKEN"; K=$KH_URL
add_key claude prod sk-ant-prod >/dev/null
add_key github ci gh-ci >/dev/null
ID=$(add_key openai main sk-openai-v1)
printf %s sk-openai-v2 | keyhold keys put "$ID" 2>/dev/null
"#,
                expect: &["sk-ant-prod", "gh-ci", "sk-openai-v2"],
                ..Run::default()
            }),
        },
        as_reader(
            "docs/api.md",
            "--pristine -- ./orchestrate.sh",
            &[
                "claude: ANTHROPIC_API_KEY=sk-ant-prod",
                "(claude / prod, version 1), the newest live key of claude",
                "orchestrate.sh: GEMINI_API_KEY=gm-main",
                "orchestrate.sh: KEYHOLD_TOKEN=unset",
            ],
        ),
        Entry {
            file: "docs/api.md",
            marker: "cat app.env",
            how: How::Run(Run {
                server: true,
                before: r#"
add_key claude prod sk-ant-prod >/dev/null
add_key github ci-bot gh-ci-bot >/dev/null
fake_program ./orchestrate.sh ANTHROPIC_API_KEY GITHUB_TOKEN LOG_LEVEL
printf '%s\n' ANTHROPIC_API_KEY=keyhold://claude GITHUB_TOKEN=keyhold://github/ci-bot LOG_LEVEL=debug >app.env
"#,
                expect: &[
                    "GITHUB_TOKEN=keyhold://github/ci-bot",
                    "orchestrate.sh: ANTHROPIC_API_KEY=sk-ant-prod",
                    "orchestrate.sh: GITHUB_TOKEN=gh-ci-bot",
                    "orchestrate.sh: LOG_LEVEL=debug",
                ],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/api.md",
            marker: "keyhold exec --provider claude --name prod --env ANTHROPIC_API_KEY \\",
            how: How::Run(Run {
                server: true,
                before: KEYS_AND_READER,
                expect: &["orchestrate.sh: ANTHROPIC_API_KEY=sk-ant-prod", "orchestrate.sh: GEMINI_API_KEY=gm-main"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/api.md",
            marker: "keyhold backup --remote keyhold.backup             # admin",
            how: How::Run(Run {
                server: true,
                before: "KEY=sk-ant-client\n",
                edits: &[
                    (
                        "printf %s \"$KEY\" | keyhold keys add --provider claude --name prod [--ttl 30d]",
                        "ID=$(printf %s \"$KEY\" | keyhold keys add --provider claude --name prod [--ttl 30d]); echo \"$ID\"",
                    ),
                    // The id of the token to revoke, as `token list` shows it.
                    (
                        "keyhold token list --remote [--format json]",
                        "TOKEN_ID=$(keyhold token list --remote --format json | python3 -c 'import json,sys; print([t[\"id\"] for t in json.load(sys.stdin) if t[\"name\"] == \"ci\"][0])')\nkeyhold token list --remote [--format json]",
                    ),
                    // Typed at a terminal: `script` gives it one.
                    (
                        "keyhold keys add --provider claude --name prod     #",
                        "printf 'sk-typed\\r' | script -qec 'keyhold keys add --provider claude --name prod' /dev/null #",
                    ),
                ],
                expect: &["sk-ant-client", "(claude / prod)", "\"expires_at\"", "rotated token `ci`", "downloaded a backup"],
                after: "[ \"$(stat -c %a keyhold.backup)\" = 600 ]\n",
                ..Run::default()
            }),
        },
        // ---------------------------------------------------------------- docs/audit.md
        Entry {
            file: "docs/audit.md",
            marker: "keyhold audit verify --data-dir /var/lib/keyhold            # exit 0 intact",
            how: How::Run(Run {
                // The anchor a server logged at its start.
                before: "start_server; stop_server\nSERVER_ANCHOR=$(sed -n 's/.* anchor=\\([0-9]*:[0-9a-f]*\\).*/\\1/p' server.log | tail -n 1)\n",
                edits: &[
                    ("keyhold audit export --data-dir /var/lib/keyhold > all.jsonl", "exported keyhold audit export --data-dir /var/lib/keyhold > all.jsonl"),
                    ("SEQ:MAC", "\"$ANCHOR\""),
                    ("1234:9f2c…", "\"$SERVER_ANCHOR\""),
                ],
                expect: &["ok: ", ", signed by ed25519:"],
                after: "grep -q '^seq,' nov.csv && test -s all.jsonl\n",
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/audit.md",
            marker: "keyhold audit public-key --remote                          # the key the server says",
            how: How::Run(Run {
                server: true,
                edits: &[("keyhold audit export --remote -o all.jsonl", "exported keyhold audit export --remote -o all.jsonl")],
                expect: &["ed25519:"],
                ..Run::default()
            }),
        },
        // ---------------------------------------------------------------- docs/migration.md
        Entry {
            file: "docs/migration.md",
            marker: "keyhold import --data-dir",
            how: How::Run(Run {
                // The Python app's table, its key, and keyhold's key file.
                before: r#"
REFERENCE_FERNET_KEY=$(keyhold keygen)
FERNET_KEY="$REFERENCE_FERNET_KEY" python3 "$KH_REPO/scripts/make_reference_fixture.py" ref --rows 3 >/dev/null
mv ref/api_keys.db app.db
"#,
                expect: &["3 rows: 3 would be imported", "3 rows: 3 imported"],
                after: "! test -e reference.key\n",
                ..Run::default()
            }),
        },
        // ---------------------------------------------------------------- docs/operations.md
        Entry {
            file: "docs/operations.md",
            marker: "keyhold token rotate --data-dir /var/lib/keyhold orchestrator --overlap 1h",
            how: How::Run(Run {
                expect: &["EXPIRES", "rotated token `orchestrator`", "revoked token `dashboard`"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold serve --listen 0.0.0.0:8443",
            how: How::Run(Run {
                tls: true,
                before: "export KEYHOLD_DATA_DIR=\"$KH_DIR/data\"\n",
                edits: &[
                    ("keyhold serve ", "serves keyhold serve "),
                    ("0.0.0.0:8443", "127.0.0.1:0"),
                    ("unix:/run/keyhold/keyhold.sock", "unix:$KH_DIR/keyhold.sock"),
                    ("localhost:8787", "localhost:0"),
                ],
                expect: &["<- https://127.0.0.1:", "<- unix:", "\"level\":"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold completions bash",
            how: How::Run(Run {
                edits: &[
                    ("/etc/bash_completion.d/keyhold", "$KH_DIR/keyhold.bash"),
                    ("/usr/local/share/man/man1", "$KH_DIR/man1"),
                ],
                before: "mkdir man1\n",
                expect: &["keyhold 0.", "(commit ", "\"commit\":"],
                after: "grep -q keyhold keyhold.bash && test -s man1/keyhold.1 && test -s man1/keyhold-serve.1\n",
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "scripts/rotate-key.sh",
            how: How::Run(Run {
                server: true,
                // The admin token in the file the docs name, and only there;
                // tests/rotation_procedure.rs restores a pre-rotation backup.
                before: "add_key claude prod sk-ant-prod >/dev/null\nprintf '%s\\n' \"$TOKEN\" >\"$KH_DIR/admin.token\"\nunset KEYHOLD_TOKEN\n",
                edits: &[
                    ("https://vault.example:8080", "$KH_URL"),
                    ("scripts/rotate-key.sh", "$KH_REPO/scripts/rotate-key.sh"),
                ],
                expect: &["retired"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold rotate --remote",
            how: How::Run(Run {
                server: true,
                before: "add_key claude prod sk-ant-prod >/dev/null\n",
                expect: &["\"rotated\": 1", "retired  "],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold rotate --data-dir /var/lib/keyhold",
            how: How::Run(Run {
                before: "start_server; add_key claude prod sk-ant-prod >/dev/null; stop_server\n",
                expect: &["nothing needs an older key"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold restore keyhold.backup",
            how: How::Run(Run {
                before: "printf '%s\\n' \"$TOKEN\" >keyhold-admin.token\n",
                edits: &[
                    // The offline backup, then the server for the online one.
                    ("\nKEYHOLD_TOKEN_FILE=/root/keyhold-admin.token", "\nstart_server\nKEYHOLD_TOKEN_FILE=$KH_DIR/keyhold-admin.token"),
                    ("chown -R keyhold:keyhold", "chown -R \"$(id -u):$(id -g)\""),
                ],
                expect: &["the restored store belongs to"],
                after: "for f in backups/keyhold-*.backup keyhold.backup; do [ \"$(stat -c %a \"$f\")\" = 600 ]; done\n",
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold backup --verify",
            how: How::Run(Run {
                before: "keyhold backup --data-dir \"$KH_DIR/data\" \"$KH_DIR/backups/keyhold-2026-12-03.backup\" 2>/dev/null\n",
                expect: &["is an intact keyhold backup"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/operations.md",
            marker: "keyhold keys put \"$ID\"",
            how: How::Run(Run {
                server: true,
                before: "ID=$(add_key claude prod sk-v1)\nNEW_KEY=sk-v2\n",
                expect: &["sk-v1", "sk-v2", "PURGE AT"],
                ..Run::default()
            }),
        },
        // ---------------------------------------------------------------- docs/postgresql.md
        Entry {
            file: "docs/postgresql.md",
            marker: "export KEYHOLD_DATABASE_URL=",
            how: How::Run(Run {
                pg: true,
                edits: &[(
                    "'postgres://keyhold:PASSWORD@db.internal:5432/keyhold?sslmode=verify-full'",
                    "\"postgres://keyhold:PASSWORD@$KH_PG/keyhold?sslmode=verify-full\"",
                )],
                expect: &["kh_", "initialised the database postgres://keyhold:***@localhost:"],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/postgresql.md",
            marker: "KEYHOLD_NODE_NAME=kh-1",
            how: How::Run(Run {
                pg: true,
                tls: true,
                // The set-up above it, on this node.
                before: r#"
export KEYHOLD_DATABASE_URL="postgres://keyhold:PASSWORD@$KH_PG/keyhold?sslmode=verify-full"
export KEYHOLD_DATABASE_CA="$KH_DIR/db-ca.pem"
keyhold init >/dev/null 2>&1
"#,
                edits: &[
                    ("keyhold serve ", "serves keyhold serve "),
                    ("0.0.0.0:8787", "127.0.0.1:0"),
                    ("--tls-cert ... --tls-key ...", "--tls-cert $KH_DIR/tls.crt --tls-key $KH_DIR/tls.key"),
                ],
                expect: &["<- https://127.0.0.1:", "\"node\":\"kh-1\",\"status\":\"ok\""],
                ..Run::default()
            }),
        },
        Entry {
            file: "docs/postgresql.md",
            marker: "keyhold migrate --from-data-dir",
            how: How::Run(Run {
                pg: true,
                before: r#"
start_server; add_key claude prod sk-ant-prod >/dev/null; stop_server
URL="postgres://keyhold@$KH_PG/keyhold?sslmode=verify-full&sslrootcert=$KH_DIR/db-ca.pem"
"#,
                expect: &["/data to postgres://keyhold@localhost:", "data-new (", "audit chain: ok"],
                ..Run::default()
            }),
        },
        // ---------------------------------------------------------------- docs/reference.md
        Entry {
            file: "docs/reference.md",
            marker: "KEYHOLD_UPDATE_REFERENCE=1",
            how: How::Skip(1, "cargo inside cargo test: it runs tests/reference.rs, which checks this file on every run"),
        },
    ]
}
