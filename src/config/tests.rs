use std::collections::HashMap;

use std::time::Duration;

use aggregates::plan::Plans;

use super::background::DEFAULT_PLANS;
use super::keys::{dev_master_key, dev_secret};
use super::*;

fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
    // nothing generated into the working directory by these tests
    let tmp = std::env::temp_dir().join("chronicle-config-tests");
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATA_DIR".to_string(), tmp.display().to_string()),
        (
            "PLANS_FILE".to_string(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/plans.json").to_string(),
        ),
    ]);
    map.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_lookup(|k| map.get(k).cloned())
}

/// A random-looking server secret (64 hex digits).
const STRONG_KEY: &str = "3f9a1c7e5b2d8f046a1e9c3b7d5f2a8e0c6b4d2f9e1a7c3b5d8f0e2a4c6b9d1f";

/// Production with every required setting safe, plus `vars`.
fn production(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
    let master = "ab".repeat(32);
    let mut all = vec![
        ("APP_ENV", "production"),
        ("SECRET_KEY", STRONG_KEY),
        ("SMTP_URL", "smtps://mailer:pw@mail.example.com:465"),
        ("MASTER_KEY", master.as_str()),
        ("PUBLIC_URL", "https://api.example.com"),
    ];
    all.extend_from_slice(vars);
    config(&all)
}

fn error_of(c: anyhow::Result<Config>) -> String {
    c.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn without_plans_or_plans_file_the_built_in_plans_apply_and_an_unreadable_file_is_an_error() {
    let tmp = std::env::temp_dir().join("chronicle-config-tests");
    let data_dir = tmp.display().to_string();
    let built_in = Config::from_lookup(|k| (k == "DATA_DIR").then(|| data_dir.clone()))
        .expect("no PLANS_FILE needed");
    assert_eq!(
        built_in.usage.plans,
        Plans::parse(DEFAULT_PLANS).expect("valid")
    );
    let missing = Config::from_lookup(|k| match k {
        "DATA_DIR" => Some(data_dir.clone()),
        "PLANS_FILE" => Some("/nonexistent/plans.json".into()),
        _ => None,
    });
    assert!(error_of(missing).contains("PLANS_FILE=/nonexistent/plans.json: cannot read it"));
}

#[test]
fn the_status_lookup_is_on_in_development_and_off_by_default_in_production() {
    let dev = config(&[]).expect("development needs no settings");
    assert!(dev.api.status_endpoint_enabled);
    let production = [
        ("APP_ENV", "production"),
        ("SECRET_KEY", "Zq3vX9pL2mN8rT4wY6bC1dF5gH7jK0sA"),
        ("SMTP_URL", "smtps://mail.example.com:465"),
        ("PUBLIC_URL", "https://chronicle.example.com"),
        ("MASTER_KEY", &"ab".repeat(32)),
    ];
    let prod = config(&production).expect("a valid production config");
    assert!(!prod.api.status_endpoint_enabled);
    let mut asked = production.to_vec();
    asked.push(("USERS_STATUS_ENDPOINT", "true"));
    assert!(config(&asked).expect("valid").api.status_endpoint_enabled);
}

#[test]
fn production_requires_a_long_secret_key() {
    let err = config(&[("APP_ENV", "production")])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("SECRET_KEY"), "{err}");
    let err = error_of(production(&[("SECRET_KEY", "short")]));
    assert!(err.contains("SECRET_KEY"), "{err}");
    let c = production(&[]).expect("a safe production configuration");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn production_requires_a_secret_key_with_entropy_and_not_a_placeholder() {
    for weak in [
        "k".repeat(32),
        "ab".repeat(32),
        "0123456789".repeat(4),
        "test-secret-key-that-is-long-enough-000".to_owned(),
    ] {
        let err = error_of(production(&[("SECRET_KEY", &weak)]));
        assert!(err.contains("SECRET_KEY"), "{weak}: {err}");
        assert!(!err.contains(&weak), "the key is not echoed: {err}");
    }
    // random keys in the usual spellings pass
    for strong in [STRONG_KEY, "mZ3q9XvT1bKc7RwYp2LsHn8UeJd4Gf6A0oIxVtQ5="] {
        assert!(production(&[("SECRET_KEY", strong)]).is_ok(), "{strong}");
    }
    // development starts with a weak key, and says so
    let dev = config(&[("SECRET_KEY", &"k".repeat(32))]).expect("development");
    assert!(
        dev.warnings.iter().any(|w| w.contains("SECRET_KEY")),
        "{:?}",
        dev.warnings
    );
}

#[test]
fn production_requires_secure_cookies() {
    let err = error_of(production(&[("COOKIE_SECURE", "false")]));
    assert!(err.contains("COOKIE_SECURE"), "{err}");
    assert!(production(&[]).expect("valid").api.cookie_secure);
    assert!(
        !config(&[("COOKIE_SECURE", "false")])
            .expect("dev")
            .api
            .cookie_secure
    );
}

#[test]
fn production_requires_smtp_over_tls_unless_explicitly_allowed() {
    for plain in [
        "smtp://mailer:pw@mail.example.com:587",
        "smtp://mail.example.com:587?tls=opportunistic",
        "smtp://127.0.0.1:25?tls=none",
    ] {
        let err = error_of(production(&[("SMTP_URL", plain)]));
        assert!(err.contains("SMTP_URL"), "{plain}: {err}");
        assert!(!err.contains("pw@"), "the URL is not echoed: {err}");
    }
    assert!(production(&[("SMTP_URL", "smtp://mail.example.com:587?tls=required")]).is_ok());
    let allowed = production(&[
        ("SMTP_URL", "smtp://127.0.0.1:25?tls=none"),
        ("ALLOW_INSECURE_SMTP", "true"),
    ])
    .expect("allowed with the opt-in");
    assert!(allowed.warnings.iter().any(|w| w.contains("SMTP_URL")));
}

#[test]
fn production_requires_an_https_public_url_unless_explicitly_allowed() {
    let unset = vec![
        ("APP_ENV", "production"),
        ("SECRET_KEY", STRONG_KEY),
        ("SMTP_URL", "smtps://mail.example.com"),
    ];
    let master = "ab".repeat(32);
    let mut without_public_url = unset.clone();
    without_public_url.push(("MASTER_KEY", master.as_str()));
    // the default, http://<BIND>, is not good enough
    let err = error_of(config(&without_public_url));
    assert!(err.contains("PUBLIC_URL"), "{err}");
    let err = error_of(production(&[("PUBLIC_URL", "http://api.example.com")]));
    assert!(err.contains("PUBLIC_URL"), "{err}");
    let allowed = production(&[
        ("PUBLIC_URL", "http://api.internal"),
        ("ALLOW_INSECURE_PUBLIC_URL", "true"),
    ])
    .expect("allowed with the opt-in");
    assert!(allowed.warnings.iter().any(|w| w.contains("PUBLIC_URL")));
}

#[test]
fn a_weak_admin_password_stops_production_and_is_a_loud_warning_in_development() {
    for weak in ["password", "password123456", "admin@example.com"] {
        let err = error_of(production(&[
            ("ADMIN_EMAIL", "admin@example.com"),
            ("ADMIN_PASSWORD", weak),
        ]));
        assert!(err.contains("ADMIN_PASSWORD"), "{weak}: {err}");
        assert!(!err.contains(&format!(" {weak}")), "not echoed: {err}");
    }
    assert!(production(&[
        ("ADMIN_EMAIL", "admin@example.com"),
        ("ADMIN_PASSWORD", "correct-horse-battery-staple"),
    ])
    .is_ok());
    let dev = config(&[
        ("SECRET_KEY", STRONG_KEY),
        ("ADMIN_EMAIL", "admin@example.com"),
        ("ADMIN_PASSWORD", "password"),
    ])
    .expect("development starts");
    assert!(dev.warnings.iter().any(|w| w.contains("ADMIN_PASSWORD")));
}

#[test]
fn invalid_values_name_their_variable() {
    for (name, value) in [
        ("BIND", "nonsense"),
        ("DATABASE_URL", "mysql://x"),
        ("APP_ENV", "staging"),
        ("READ_YOUR_WRITES_TIMEOUT_MS", "soon"),
        ("ALLOWED_ORIGINS", "example.com"),
        ("ALLOWED_ORIGINS", "*"),
        ("CHRONICLE_SUBJECT_PREFIX", "a..b"),
        ("USERS_STATUS_ENDPOINT", "maybe"),
        ("RELAY_BATCH_SIZE", "0"),
        ("PUBLIC_URL", "example.com"),
        ("SMTP_URL", "mail.example.com"),
        ("ADMIN_EMAIL", "root@example.com"),
        ("MASTER_KEY", "not-a-key"),
        ("MASTER_KEY_PREVIOUS", "zz"),
        ("PLANS", "{\"default\":\"gold\",\"plans\":[]}"),
        ("PLANS_FILE", "/nonexistent/plans.json"),
        ("LLM_BASE_URL", "https://api.openai.com/v1"),
        ("LLM_API_KEY", "sk-test"),
        ("LLM_TIMEOUT_SECS", "0"),
        ("ASSISTANT_MAX_ATTEMPTS", "0"),
    ] {
        let err = config(&[("SECRET_KEY", &"k".repeat(32)), (name, value)])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn the_assistant_is_on_only_with_a_base_url_and_a_key_which_is_never_printed() {
    let off = config(&[("SECRET_KEY", &"k".repeat(32))]).expect("valid");
    assert!(off.assistant.llm.is_none());
    assert_eq!(off.assistant.max_attempts, 3);
    let on = config(&[
        ("SECRET_KEY", &"k".repeat(32)),
        ("LLM_BASE_URL", "https://api.openai.com/v1/"),
        ("LLM_API_KEY", "sk-very-secret"),
    ])
    .expect("valid");
    let llm = on.assistant.llm.clone().expect("on");
    assert_eq!(llm.base_url, "https://api.openai.com/v1");
    assert_eq!(llm.model, "gpt-4o-mini");
    assert_eq!(llm.timeout, Duration::from_secs(30));
    assert!(!format!("{on:?}").contains("sk-very-secret"));
    let err = config(&[
        ("SECRET_KEY", &"k".repeat(32)),
        ("LLM_BASE_URL", "api.openai.com"),
        ("LLM_API_KEY", "sk-very-secret"),
    ])
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("LLM_BASE_URL") && !err.contains("sk-very"),
        "{err}"
    );
}

#[test]
fn processes_starting_together_on_a_fresh_data_dir_share_one_development_key() {
    let dir = std::env::temp_dir().join(format!("chronicle-keys-{}", uuid::Uuid::new_v4()));
    let barrier = std::sync::Barrier::new(8);
    let (masters, secrets): (Vec<String>, Vec<Vec<u8>>) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let master = dev_master_key(&dir).expect("master key").to_hex();
                    (master, dev_secret(&dir).expect("secret"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .unzip()
    });
    let on_disk = std::fs::read_to_string(dir.join("master_key")).expect("kept");
    assert!(masters.iter().all(|m| *m == on_disk), "{masters:?}");
    assert!(secrets.iter().all(|s| *s == secrets[0]));
    // no drafts left behind
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn defaults_point_at_the_local_services() {
    let c = config(&[("SECRET_KEY", &"k".repeat(32))]).expect("defaults are valid");
    assert_eq!(c.bus.servers, ["nats://127.0.0.1:4222"]);
    assert_eq!(c.bus.stream_replicas, 1);
    assert_eq!(c.bus.stream, "CHRONICLE_EVENTS");
    assert_eq!(c.bus.subject_prefix, "chronicle");
    assert_eq!(c.core.read_your_writes_timeout, Duration::from_secs(2));
}

#[test]
fn settings_are_grouped_by_the_part_that_reads_them_and_their_debug_form_holds_no_secret() {
    let password = "Correct-Horse-Battery-Staple-42";
    let master = "c4".repeat(32);
    let c = config(&[
        ("MASTER_KEY", master.as_str()),
        ("ADMIN_EMAIL", "Root@Example.com"),
        ("ADMIN_PASSWORD", password),
        ("SECRET_KEY", STRONG_KEY),
        ("FRONTEND_URL", "https://app.example.com/"),
        ("PROJECTOR_BATCH_SIZE", "50"),
        ("LOGIN_MAX_FAILURES", "7"),
    ])
    .expect("valid");
    let admin = c.admin.as_ref().expect("an admin to seed");
    assert_eq!(admin.email, "root@example.com");
    assert_eq!(admin.password, password);
    // one value parsed once reaches every part that reads it
    assert_eq!(
        c.api.frontend_url.as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(c.mailer.frontend_url, c.api.frontend_url);
    assert_eq!(c.mailer.public_url, c.http.public_url);
    assert_eq!(c.core.data_dir, c.data_dir);
    assert_eq!(c.projector.batch_size, 50);
    assert_eq!(c.auth.user_policy.max_login_failures, 7);
    let debug = format!("{c:?}");
    assert!(!debug.contains(password), "the admin password is printed");
    assert!(!debug.contains(STRONG_KEY), "the server secret is printed");
    assert!(!debug.contains(&master), "the master key is printed");
}

#[test]
fn nats_url_takes_the_servers_of_a_cluster_and_replicas_are_bounded() {
    let key = "k".repeat(32);
    let c = config(&[
        ("SECRET_KEY", &key),
        (
            "NATS_URL",
            "nats://10.0.0.1:4222, nats://10.0.0.2:4222,nats://user:pw@10.0.0.3",
        ),
        ("NATS_STREAM_REPLICAS", "3"),
    ])
    .expect("a list of servers is valid");
    assert_eq!(
        c.bus.servers,
        [
            "nats://10.0.0.1:4222",
            "nats://10.0.0.2:4222",
            "nats://user:pw@10.0.0.3"
        ]
    );
    assert_eq!(c.bus.stream_replicas, 3);
    assert_eq!(c.bus.stream_config().num_replicas, 3);
    for bad in [" , ", "nats://host:notaport"] {
        let e = config(&[("SECRET_KEY", &key), ("NATS_URL", bad)])
            .expect_err(&format!("NATS_URL={bad:?} is refused"));
        assert!(e.to_string().contains("NATS_URL"), "{e}");
    }
    for bad in ["0", "6", "three"] {
        let e = config(&[("SECRET_KEY", &key), ("NATS_STREAM_REPLICAS", bad)])
            .expect_err(&format!("NATS_STREAM_REPLICAS={bad:?} is refused"));
        assert!(e.to_string().contains("NATS_STREAM_REPLICAS"), "{e}");
    }
}
