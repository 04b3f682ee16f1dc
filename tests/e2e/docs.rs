//! The docs are run: the README's tour (tests/docs/run_readme_tour.sh), the Python consumer
//! (examples/consumer.py), the DuckDB recipe for CSV exports, the CLI synopses against
//! `--help`, the envelope example against a real envelope, and the binary started from a
//! directory that holds nothing of the checkout. Every fenced block under docs/ must be of
//! a kind one of these tests runs (`every_code_block_in_the_docs_is_of_a_kind_a_test_runs`).
//!
//! The Python tests need `pip install -r tests/docs/requirements.txt`; without it they fail
//! and say so (they never pass without running).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::admin::{admin_env, chronicle};
use crate::event_log::{stream_holds, workload};
use crate::support::{eventually, pg_base, TestEnv};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_chronicle");

/// The fenced blocks of a Markdown file: (line of the opening fence, info string, body).
fn fenced_blocks(path: &Path) -> Vec<(usize, String, String)> {
    let text = std::fs::read_to_string(path).expect("readable doc");
    let mut blocks = vec![];
    let mut open: Option<(usize, String, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((n + 1, info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some((_, _, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{}: a fence is not closed", path.display());
    blocks
}

fn docs() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        // generated from the code and checked by aggregates' catalog test
        .filter(|p| !p.ends_with("EVENT-CATALOG.md"))
        .collect();
    docs.sort();
    docs
}

pub fn block(path: &str, info: &str) -> String {
    let found: Vec<_> = fenced_blocks(&Path::new(ROOT).join(path))
        .into_iter()
        .filter(|(_, i, _)| i == info)
        .collect();
    assert_eq!(found.len(), 1, "{path}: one ```{info} block");
    found
        .into_iter()
        .next()
        .map(|(_, _, b)| b)
        .unwrap_or_default()
}

/// PYTHON, else the test peers' virtualenv that `scripts/test` makes (tests/.venv), else
/// `python3`, with `modules` importable; or a failure that says how to get them.
async fn python_with(modules: &[&str]) -> PathBuf {
    let venv = Path::new(ROOT).join("tests/.venv/bin/python");
    let python = match std::env::var("PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) if venv.exists() => venv,
        Err(_) => PathBuf::from("python3"),
    };
    let check = format!("import {}", modules.join(", "));
    let ok = Command::new(&python)
        .args(["-c", &check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{} -c '{check}'` failed: install the docs' Python packages with \
         `scripts/test` (it makes tests/.venv), or `pip install -r tests/docs/requirements.txt` \
         (or point PYTHON at a python that has them)",
        python.display()
    );
    python
}

async fn output(cmd: &mut Command, deadline: Duration) -> (i32, String, String) {
    let out = tokio::time::timeout(deadline, cmd.kill_on_drop(true).output())
        .await
        .expect("finished within its deadline")
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_readme_tour_runs_as_written_against_a_fresh_server() {
    let (code, out, err) = output(
        Command::new("bash")
            .arg(Path::new(ROOT).join("tests/docs/run_readme_tour.sh"))
            .env("CHRONICLE_BIN", BIN)
            .env("TEST_PG_BASE", pg_base())
            .env("TEST_NATS_URL", crate::support::nats_url()),
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("==> README.md"), "{out}");
    assert!(out.contains("==> docs/IDEMPOTENCY.md"), "{out}");
    assert!(out.contains("checks passed"), "{out}");
}

#[tokio::test]
async fn the_binary_runs_from_any_directory_with_only_the_addresses_of_postgres_and_nats() {
    let env = TestEnv::new();
    let dir = tempfile_dir("anywhere");
    // nothing of the checkout: no plans.json, no .env, no PLANS_FILE
    let bare = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&dir)
            .args(args);
        for var in [
            "DATABASE_URL",
            "NATS_URL",
            "CHRONICLE_STREAM",
            "CHRONICLE_SUBJECT_PREFIX",
        ] {
            cmd.env(var, &env.vars[var]);
        }
        cmd
    };
    let deadline = Duration::from_secs(60);

    let (code, out, err) = output(&mut bare(&["events", "export", "--help"]), deadline).await;
    assert_eq!(code, 0, "{err}");
    for var in ["DATABASE_URL", "MASTER_KEY", "DATA_DIR"] {
        assert!(out.contains(var), "export --help names {var}: {out}");
    }
    let (code, out, _) = output(&mut bare(&["events", "tail", "--help"]), deadline).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("NATS_URL") && out.contains("CHRONICLE_STREAM"),
        "{out}"
    );
    let (code, out, _) = output(&mut bare(&["serve", "--help"]), deadline).await;
    assert_eq!(code, 0);
    assert!(out.contains("PLANS_FILE") && out.contains("BIND"), "{out}");

    let (code, out, err) = output(&mut bare(&["migrate"]), deadline).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("PLANS_FILE"), "{err}");
    let (code, out, err) = output(&mut bare(&["events", "export"]), deadline).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "", "an empty log exports nothing");

    // an explicit PLANS_FILE that cannot be read is still an error
    let (code, _, err) = output(bare(&["migrate"]).env("PLANS_FILE", "plans.json"), deadline).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("PLANS_FILE=plans.json: cannot read it"),
        "{err}"
    );

    // serve: up, healthy, with the built-in plans
    let mut server = bare(&["serve"])
        .env("BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("log line") {
            if line.contains("Chronicle API listening") {
                let at = line.find("127.0.0.1:").expect("an address");
                let rest = &line[at..];
                let end = rest.find(|c: char| c != '.' && c != ':' && !c.is_ascii_digit());
                return rest[..end.unwrap_or(rest.len())].to_owned();
            }
        }
        panic!("serve exited before it listened");
    })
    .await
    .expect("serve listens within 60 s");
    // keep reading the log so the server never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let client = reqwest::Client::new();
    let live: u16 = eventually("/health/live answers", Duration::from_secs(30), || {
        let r = client.get(format!("http://{addr}/health/live")).send();
        async move { r.await.ok().map(|r| r.status().as_u16()) }
    })
    .await;
    assert_eq!(live, 200);
    let plans: Value = client
        .get(format!("http://{addr}/api/v1/plans"))
        .send()
        .await
        .expect("plans")
        .json()
        .await
        .expect("json");
    let built_in: Value = serde_json::from_str(include_str!("../../plans.json")).expect("plans");
    let names = |v: &Value, key: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        names(&serde_json::json!({"d": plans["data"]}), "d"),
        names(&built_in, "plans")
    );
    assert!(dir.join("data").is_dir(), "development keys under ./data");
    let pid = server.id().expect("pid").to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("stops on SIGTERM within 30 s")
        .expect("status");
    assert!(status.success(), "{status}");
    env.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chronicle-docs-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn the_python_consumer_counts_what_the_log_holds_and_waits_out_an_idle_stream() {
    let python = python_with(&["nats"]).await;
    let app = admin_env().spawn_all().await;
    workload(&app, "py", 2).await;
    let total = app.scalar_i64("select count(*) from events").await as u64;
    stream_holds(&app, total).await;
    let dir = tempfile_dir("consumer");
    let checkpoint = dir.join("cursor");
    let run = |durable: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(Path::new(ROOT).join("examples/consumer.py"))
            .args(["--durable", durable, "--idle-exit", "3", "--json"])
            .arg("--checkpoint")
            .arg(&checkpoint)
            .env("NATS_URL", &app.env.vars["NATS_URL"])
            .env("CHRONICLE_STREAM", &app.env.stream)
            .env(
                "CHRONICLE_SUBJECT_PREFIX",
                &app.env.vars["CHRONICLE_SUBJECT_PREFIX"],
            );
        cmd
    };
    // idle for 3 s after the last message: several empty fetches (each a TimeoutError in
    // nats-py) before it stops, and it must not die on the first one
    let (code, out, err) = output(&mut run("docs-python"), Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let counts: Value = serde_json::from_str(out.trim()).expect("JSON counts");
    assert_eq!(counts["total"], total, "{counts}");
    let registered = app
        .scalar_i64("select count(*) from events where event_type = 'UserRegistered'")
        .await;
    assert_eq!(counts["by_type"]["UserRegistered"], registered, "{counts}");
    let last: String = sqlx::query_scalar(
        "select lpad(to_hex(transaction_id::text::bigint), 16, '0') || '-' || lpad(to_hex(position), 16, '0') \
         from events order by transaction_id desc, position desc limit 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("last cursor");
    assert_eq!(counts["last_cursor"], last);
    assert_eq!(
        std::fs::read_to_string(&checkpoint).expect("checkpoint"),
        last
    );

    // a second consumer with the same checkpoint skips everything (its own dedup), and a
    // SIGTERM stops one that would otherwise wait for ever
    let mut forever = run("docs-python-2");
    let forever = forever
        .args(["--idle-exit", "600"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    let pid = forever.id().expect("pid").to_string();
    // it is connected and idle once NATS lists its durable consumer
    let js = app.bus.jetstream.clone();
    let stream = app.env.stream.clone();
    eventually("the consumer is bound", Duration::from_secs(30), || {
        let js = js.clone();
        let stream = stream.clone();
        async move {
            let s = js.get_stream(&stream).await.ok()?;
            s.consumer_info("docs-python-2").await.ok().map(|_| ())
        }
    })
    .await;
    let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
    let out = tokio::time::timeout(Duration::from_secs(30), forever.wait_with_output())
        .await
        .expect("stops on SIGTERM")
        .expect("output");
    assert!(out.status.success(), "{out:?}");
    let counts: Value = serde_json::from_slice(&out.stdout).expect("JSON counts after a SIGTERM");
    assert_eq!(
        counts["total"], 0,
        "everything was at or before the checkpoint"
    );
    app.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_duckdb_recipe_reads_a_csv_export_with_the_documented_types() {
    let python = python_with(&["duckdb"]).await;
    let app = admin_env().spawn_all().await;
    workload(&app, "csv", 2).await;
    let env = app.env.clone();
    app.stop().await;
    let events = {
        let pool = sqlx::PgPool::connect(&env.vars["DATABASE_URL"])
            .await
            .expect("pg");
        sqlx::query_scalar::<_, i64>("select count(*) from events")
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    let dir = tempfile_dir("duckdb");
    let csv = dir.join("events.csv");
    let (code, _, err) = chronicle(
        &env,
        &[
            "events",
            "export",
            "--format",
            "csv",
            "--output",
            &csv.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let recipe = block("docs/EVENT-LOG.md", "sql duckdb");
    std::fs::write(dir.join("recipe.sql"), &recipe).expect("write");
    // run the recipe as written (in the export's directory), then look at what it made
    let script = r#"
import duckdb, json
con = duckdb.connect()
for statement in open("recipe.sql").read().split(";"):
    if statement.strip():
        result = con.sql(statement)
summary = result.fetchall()
types = {name: kind for name, kind, *_ in con.sql("describe events").fetchall()}
count = con.sql("select count(*) from events").fetchall()[0][0]
versions = [v for (v,) in con.sql("select distinct event_version from events").fetchall()]
print(json.dumps({"types": types, "count": count, "versions": versions,
                  "summary_rows": sum(r[2] for r in summary)}))
"#;
    let (code, out, err) = output(
        Command::new(&python).args(["-c", script]).current_dir(&dir),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let got: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(got["types"]["event_version"], "VARCHAR", "{got}");
    assert_eq!(got["types"]["sequence"], "BIGINT", "{got}");
    assert_eq!(got["types"]["payload"], "JSON", "{got}");
    assert_eq!(
        got["types"]["recorded_at"], "TIMESTAMP WITH TIME ZONE",
        "{got}"
    );
    assert_eq!(got["count"], events, "one row per event of the log: {got}");
    assert_eq!(got["summary_rows"], events, "{got}");
    assert!(
        got["versions"].as_array().is_some_and(|v| v
            .iter()
            .all(|v| v.as_str().is_some_and(|s| s.contains('.')))),
        "versions read as text: {got}"
    );
    env.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_envelope_in_the_docs_has_the_keys_of_a_real_one() {
    let app = admin_env().spawn_all().await;
    workload(&app, "env", 1).await;
    let total = app.scalar_i64("select count(*) from events").await as u64;
    stream_holds(&app, total).await;
    // the message body on the stream, as a consumer receives it
    let stream = app
        .bus
        .jetstream
        .get_stream(&app.env.stream)
        .await
        .expect("stream");
    let mut real = Value::Null;
    for seq in 1..=total {
        let m = stream.get_raw_message(seq).await.expect("a message");
        if m.subject.ends_with(".UserRegistered") {
            real = serde_json::from_slice(&m.payload).expect("json");
            break;
        }
    }
    assert!(real.is_object(), "a UserRegistered on the stream");
    let documented: Value =
        serde_json::from_str(&block("docs/EVENTS.md", "json envelope")).expect("the doc's JSON");
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(keys(&documented), keys(&real));
    assert_eq!(
        keys(&documented["payload"]["UserRegistered"]),
        keys(&real["payload"]["UserRegistered"])
    );
    let mut metadata = keys(&documented["metadata"]);
    metadata.insert("actor_id".into()); // documented in the table; absent for anonymous actors
    assert!(
        keys(&real["metadata"]).is_subset(&metadata),
        "{:?} ⊄ {metadata:?}",
        keys(&real["metadata"])
    );
    app.finish().await;
}

/// The command paths a synopsis line names: `chronicle events export|import` gives
/// `events export` and `events import`; words after the path are values or flags.
fn synopsis_paths(line: &str) -> Vec<Vec<String>> {
    // the description starts after two spaces
    let line = line.replace(" | ", "|");
    let line = line.split("  ").next().unwrap_or_default();
    let mut paths = vec![vec![]];
    for word in line.split_whitespace().skip(1) {
        let alternatives: Vec<&str> = word.split('|').collect();
        let is_word = |w: &&str| {
            w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        if !alternatives.iter().all(is_word) {
            break;
        }
        paths = paths
            .into_iter()
            .flat_map(|p: Vec<String>| {
                alternatives.iter().map(move |a| {
                    let mut p = p.clone();
                    p.push((*a).to_owned());
                    p
                })
            })
            .collect();
    }
    paths
}

async fn help(path: &[String]) -> (i32, String) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, out, err) = output(
        Command::new(BIN)
            .args(&args)
            .env_clear()
            .current_dir(std::env::temp_dir()),
        Duration::from_secs(30),
    )
    .await;
    (code, format!("{out}{err}"))
}

/// Every `chronicle ...` line of a `text cli` block names real commands (or values their
/// help lists), and every `--flag` on it is in that command's help.
async fn check_synopsis(doc: &str, body: &str) {
    let mut commands: Vec<String> = vec![];
    for line in body.lines() {
        if line.starts_with("chronicle ") {
            commands.push(line.to_owned());
        } else if line.starts_with(char::is_whitespace) && !commands.is_empty() {
            let last = commands.len() - 1;
            commands[last].push_str(line);
        } else if !line.trim().is_empty() {
            panic!("{doc}: a `text cli` line that is not a chronicle command: {line}");
        }
    }
    assert!(!commands.is_empty(), "{doc}: an empty `text cli` block");
    for command in commands {
        let mut helps = vec![];
        for path in synopsis_paths(&command) {
            // walk down: a word that is not a subcommand must be a value its parent lists
            let mut known: Vec<String> = vec![];
            let mut text = help(&known).await.1;
            for word in &path {
                let mut next = known.clone();
                next.push(word.clone());
                let (code, sub) = help(&next).await;
                let usage = format!("chronicle {}", next.join(" "));
                if code == 0 && sub.contains(&usage) {
                    known = next;
                    text = sub;
                } else {
                    assert!(
                        text.contains(word.as_str()),
                        "{doc}: `{command}`: `{word}` is neither a subcommand of `chronicle {}` nor in its help",
                        known.join(" ")
                    );
                }
            }
            helps.push(text);
        }
        for flag in command
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            assert!(
                helps.iter().any(|h| h.contains(flag)),
                "{doc}: `{command}`: {flag} is not in its --help"
            );
        }
    }
}

#[tokio::test]
async fn every_code_block_in_the_docs_is_of_a_kind_a_test_runs() {
    // sh tour: run by tests/docs/run_readme_tour.sh; sql duckdb and json envelope: by the
    // tests above; text cli: checked here against --help; text files: every path exists;
    // text figure: a drawing, nothing to run.
    let mut checked = 0;
    for doc in docs() {
        let name = doc.strip_prefix(ROOT).unwrap_or(&doc).display().to_string();
        for (line, info, body) in fenced_blocks(&doc) {
            match info.as_str() {
                "sh tour" | "sql duckdb" | "json envelope" | "text figure" => {}
                "text cli" => check_synopsis(&name, &body).await,
                "text files" => check_files(&name, &body),
                other => panic!(
                    "{name}:{line}: a ```{other} block no test runs: make it one of the kinds \
                     tests/e2e/docs.rs runs, or say it in prose"
                ),
            }
            checked += 1;
        }
    }
    // the README: sh two-commands and text ready are checked by the tests below and by
    // dev_default.rs
    for (line, info, body) in fenced_blocks(&Path::new(ROOT).join("README.md")) {
        match info.as_str() {
            "text cli" => check_synopsis("README.md", &body).await,
            "sh tour" | "sh two-commands" | "text ready" => {}
            other => panic!("README.md:{line}: a ```{other} block no test runs"),
        }
        checked += 1;
    }
    assert!(checked >= 9, "{checked} blocks");
}

/// A `text files` block: a directory, then its files indented, each with a description.
fn check_files(doc: &str, body: &str) {
    let mut lines = body.lines();
    let root = Path::new(ROOT).join(lines.next().expect("a root").trim());
    assert!(
        root.is_dir(),
        "{doc}: {} is not a directory",
        root.display()
    );
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let entry = line.split_whitespace().next().expect("a path");
        match entry.split_once('*') {
            Some((dir, ext)) => {
                let dir = root.join(dir);
                let any = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .any(|e| e.file_name().to_string_lossy().ends_with(ext))
                    })
                    .unwrap_or(false);
                assert!(any, "{doc}: nothing matches {entry}");
            }
            None => assert!(root.join(entry).exists(), "{doc}: {entry} does not exist"),
        }
    }
}

/// The README's two commands, without their comments.
fn readme_two_commands() -> Vec<String> {
    block("README.md", "sh two-commands")
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readmes_test_command_is_what_ci_runs_and_its_serve_command_what_the_tests_start() {
    let commands = readme_two_commands();
    assert_eq!(
        commands,
        ["cargo run --release -- serve", "scripts/test"],
        "README.md's two commands"
    );
    // CI runs exactly the test command
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).expect(".ci/run");
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(last, Some("exec scripts/test"));
    let script = Path::new(ROOT).join("scripts/test");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&script)
            .expect("scripts/test")
            .permissions(),
    );
    assert!(mode & 0o111 != 0, "scripts/test is executable");
    // `cargo run` needs one binary to choose: the package has exactly one, chronicle
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).expect("manifest");
    assert!(!manifest.contains("[[bin]]") || manifest.contains("default-run"));
    assert!(Path::new(ROOT).join("src/main.rs").exists());
    assert!(!Path::new(ROOT).join("src/bin").exists());
}
