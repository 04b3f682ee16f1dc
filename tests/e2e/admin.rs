//! Admin: the audit trail of a user's journey, who may use the admin routes (roles and API
//! keys), the last-admin rule, the user list, stats, projections, and the admin CLI
//! against a running server's database.

use std::net::IpAddr;
use std::process::Output;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{eventually, json, TestApp, TestEnv};

pub(crate) const ADMIN: &str = "root@example.com";
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-that-is-long-1";

pub(crate) fn admin_env() -> TestEnv {
    TestEnv::new()
        .set("ADMIN_EMAIL", ADMIN)
        .set("ADMIN_PASSWORD", ADMIN_PASSWORD)
}

/// A client whose requests come from `ip` (any 127.0.0.0/8 address reaches the server)
/// with `agent` as its user agent.
fn device(ip: &str, agent: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().expect("ip");
    reqwest::Client::builder()
        .local_address(ip)
        .user_agent(agent)
        .build()
        .expect("client")
}

async fn send(
    client: &reqwest::Client,
    app: &TestApp,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, app.url(path));
    req = match auth {
        Auth::None => req,
        Auth::Bearer(t) => req.bearer_auth(t),
        Auth::Key(k) => req.header("x-admin-key", k),
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    json(req.send().await.expect("sent")).await
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Key(&'a str),
}

async fn access_token(
    client: &reqwest::Client,
    app: &TestApp,
    email: &str,
    password: &str,
) -> String {
    let (s, b) = send(
        client,
        app,
        Method::POST,
        "/api/v1/auth/login",
        Auth::None,
        Some(json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(s, 200, "login {email}: {b}");
    b["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

pub(crate) async fn admin_token(app: &TestApp) -> String {
    access_token(&reqwest::Client::new(), app, ADMIN, ADMIN_PASSWORD).await
}

async fn history(app: &TestApp, token: &str, user: Uuid, query: &str) -> Vec<Value> {
    let (s, b) = send(
        &reqwest::Client::new(),
        app,
        Method::GET,
        &format!("/api/v1/admin/users/{user}/history?per_page=500{query}"),
        Auth::Bearer(token),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b["data"]["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_users_journey_is_in_their_audit_trail_in_order_with_actor_and_ip() {
    let app = admin_env().spawn_all().await;
    let admin = admin_token(&app).await;
    let email = "journey@example.com";
    let user = signed_up(&app, email).await;

    let laptop = device("127.0.0.2", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0");
    let phone = device(
        "127.0.0.3",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile Safari",
    );
    let stranger = device("127.0.0.9", "curl/8.5");
    let t1 = access_token(&laptop, &app, email, PASSWORD).await;
    let _t2 = access_token(&phone, &app, email, PASSWORD).await;
    let (s, _) = send(
        &stranger,
        &app,
        Method::POST,
        "/api/v1/auth/login",
        Auth::None,
        Some(json!({"email": email, "password": "wrong-password-123"})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, b) = send(
        &laptop,
        &app,
        Method::POST,
        "/api/v1/users/me/plan",
        Auth::Bearer(&t1),
        Some(json!({"plan": "pro"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(
        &laptop,
        &app,
        Method::POST,
        "/api/v1/metrics",
        Auth::Bearer(&t1),
        Some(json!({"kind": "tokens", "amount": 42})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, c) = send(
        &laptop,
        &app,
        Method::POST,
        "/api/v1/conversations",
        Auth::Bearer(&t1),
        Some(json!({"title": "Plans"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    let conversation = c["data"]["id"].as_str().expect("id").to_owned();
    let (s, b) = send(
        &laptop,
        &app,
        Method::POST,
        &format!("/api/v1/conversations/{conversation}/messages"),
        Auth::Bearer(&t1),
        Some(json!({"content": "hello"})),
    )
    .await;
    assert!(s == 201 || s == 202, "{s} {b}");
    let admin_client = device("127.0.0.1", "AdminConsole/1.0");
    let (s, b) = send(
        &admin_client,
        &app,
        Method::POST,
        &format!("/api/v1/admin/users/{user}/deactivate"),
        Auth::Bearer(&admin),
        Some(json!({"reason": "chargeback"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["user"]["status"], "disabled");

    // every session died at once, and signing in is refused
    let (s, b) = send(
        &laptop,
        &app,
        Method::GET,
        "/api/v1/users/me",
        Auth::Bearer(&t1),
        None,
    )
    .await;
    assert_eq!(s, 401, "{b}");
    let (s, b) = login(&app, email, PASSWORD).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("account_disabled")));

    let entries = history(&app, &admin, user, "").await;
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or(""))
        .collect();
    let expected = [
        "UserRegistered",
        "EmailVerificationRequested",
        "EmailVerified",
        "SessionStarted",
        "SessionStarted",
        "LoginFailed",
        "PlanChanged",
        "UsageRecorded",
        "ConversationStarted",
        "UsageRecorded",
        "MessagePosted",
        "UserDeactivated",
        "SessionRevoked",
        "SessionRevoked",
    ];
    assert_eq!(types, expected, "{entries:#?}");
    // in the log's order
    let cursors: Vec<&str> = entries
        .iter()
        .map(|e| e["cursor"].as_str().unwrap_or(""))
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    let who = |i: usize| {
        let e = &entries[i];
        (
            e["actor"]["kind"].as_str().unwrap_or("").to_owned(),
            e["ip"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(who(0), ("anonymous".into(), "127.0.0.1".into()));
    assert_eq!(who(3), ("user".into(), "127.0.0.2".into()));
    assert_eq!(who(4), ("user".into(), "127.0.0.3".into()));
    assert_eq!(who(5), ("anonymous".into(), "127.0.0.9".into()));
    for (i, e) in entries.iter().enumerate().take(11).skip(6) {
        assert_eq!(who(i), ("user".into(), "127.0.0.2".into()), "{e}");
        assert_eq!(e["actor"]["label"], email);
    }
    for (i, e) in entries.iter().enumerate().skip(11) {
        assert_eq!(who(i), ("admin".into(), "127.0.0.1".into()), "{e}");
        assert_eq!(e["actor"]["label"], ADMIN);
        assert_eq!(e["user_agent"], "AdminConsole/1.0");
    }
    assert!(entries[3]["user_agent"]
        .as_str()
        .unwrap_or("")
        .contains("Firefox"));
    assert_eq!(entries[5]["user_agent"], "curl/8.5");
    assert_eq!(entries[6]["summary"], "Plan changed from free to pro");
    assert!(entries[11]["summary"]
        .as_str()
        .unwrap_or("")
        .contains("chargeback"));
    assert!(entries
        .iter()
        .all(|e| e["request_id"].is_string() || e["actor"]["kind"] == "system"));
    // no secret's derivative is shown
    let text = serde_json::to_string(&entries).expect("json");
    for hidden in ["password_hash", "refresh_token_hash", "nonce", "argon2"] {
        assert!(!text.contains(hidden), "{hidden} in the trail");
    }
    // filtered by type, newest first; and by time
    let logins = history(
        &app,
        &admin,
        user,
        "&type=SessionStarted,LoginFailed&order=desc",
    )
    .await;
    let types: Vec<&str> = logins
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["LoginFailed", "SessionStarted", "SessionStarted"]);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = history(
        &app,
        &admin,
        user,
        &format!("&since={}", urlencode(&future)),
    )
    .await;
    assert!(none.is_empty());
    // the admin's action is in the admin's own trail too
    let admin_id = entries[11]["actor"]["id"]
        .as_str()
        .expect("admin id")
        .parse::<Uuid>()
        .expect("uuid");
    let own = history(&app, &admin, admin_id, "&type=UserDeactivated").await;
    assert_eq!(own.len(), 1);
    // bad filters are 422, unknown users 404
    for q in [
        "&order=sideways",
        "&since=yesterday",
        "&per_page=501",
        "&page=0",
    ] {
        let (s, b) = send(
            &reqwest::Client::new(),
            &app,
            Method::GET,
            &format!("/api/v1/admin/users/{user}/history?x=1{q}").replace("?x=1&", "?"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
        assert!(s == 422 || s == 400, "{q}: {s} {b}");
    }
    let (s, _) = send(
        &reqwest::Client::new(),
        &app,
        Method::GET,
        &format!("/api/v1/admin/users/{}/history", Uuid::now_v7()),
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.finish().await;
}

fn urlencode(v: &str) -> String {
    v.replace('+', "%2B").replace(':', "%3A")
}

/// Every admin route, with a body where it takes one.
fn admin_routes(user: Uuid) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/admin/users".into(), None),
        (
            Method::POST,
            "/api/v1/admin/users".into(),
            Some(json!({"email": "x@example.com", "verified": true})),
        ),
        (Method::GET, format!("/api/v1/admin/users/{user}"), None),
        (
            Method::PATCH,
            format!("/api/v1/admin/users/{user}"),
            Some(json!({"display_name": "X"})),
        ),
        (Method::DELETE, format!("/api/v1/admin/users/{user}"), None),
        (
            Method::PUT,
            format!("/api/v1/admin/users/{user}/role"),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/users/{user}/deactivate"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/users/{user}/reactivate"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/admin/users/{user}/history"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/admin/users/{user}/sessions"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/admin/users/{user}/sessions/{}", Uuid::now_v7()),
            None,
        ),
        (Method::GET, "/api/v1/admin/stats".into(), None),
        (Method::GET, "/api/v1/admin/projections".into(), None),
        (
            Method::POST,
            "/api/v1/admin/projections/users/rebuild".into(),
            None,
        ),
        (Method::GET, "/api/v1/admin/events/live".into(), None),
    ]
}

/// `chronicle admin ...` against the test's database; (exit code, stdout, stderr).
pub(crate) async fn cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    chronicle(&app.env, &all).await
}

/// The real binary with a test's configuration; (exit code, stdout, stderr). Async: the
/// server runs on this test's runtime and must keep going meanwhile.
pub(crate) async fn chronicle(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chronicle"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "ops")
        .envs(&env.vars)
        .current_dir(std::env::temp_dir())
        .args(args);
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().await.expect("the binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[tokio::test]
async fn only_admins_and_admin_keys_pass_and_a_revoked_key_stops_at_once() {
    let app = admin_env().spawn_all().await;
    let user = signed_up(&app, "plain@example.com").await;
    let (s, b) = login(&app, "plain@example.com", PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let plain = b["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let client = reqwest::Client::new();
    for (method, path, body) in admin_routes(user) {
        let (s, b) = send(
            &client,
            &app,
            method.clone(),
            &path,
            Auth::Bearer(&plain),
            body.clone(),
        )
        .await;
        assert_eq!(s, 403, "{method} {path} as a user: {b}");
        assert_eq!(b["error"], "forbidden");
        let (s, _) = send(
            &client,
            &app,
            method.clone(),
            &path,
            Auth::None,
            body.clone(),
        )
        .await;
        assert_eq!(s, 401, "{method} {path} anonymously");
        let (s, _) = send(
            &client,
            &app,
            method.clone(),
            &path,
            Auth::Key("chk_nonsense"),
            body,
        )
        .await;
        assert_eq!(s, 401, "{method} {path} with a bad key");
    }
    // nothing happened to the user
    let admin = admin_token(&app).await;
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        &format!("/api/v1/admin/users/{user}"),
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["user"]["status"], "active");
    assert_eq!(b["data"]["user"]["role"], "user");

    // a key from the CLI works and is named as the actor
    let (code, out, err) = cli(
        &app,
        &["api-key", "create", "--name", "billing sync", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with("chk_"));
    let stored = app
        .scalar_i64(&format!(
            "select count(*) from events where payload::text like '%{}%'",
            &key[37..]
        ))
        .await;
    assert_eq!(stored, 0, "the key's secret is not in the log");
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/users?q=plain",
        Auth::Key(&key),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["total"], 1);
    let (s, b) = send(
        &client,
        &app,
        Method::PUT,
        &format!("/api/v1/admin/users/{user}/role"),
        Auth::Key(&key),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let entries = history(&app, &admin, user, "&type=RoleChanged").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["actor"]["kind"], "api_key");
    assert_eq!(entries[0]["actor"]["id"], key_id.as_str());
    assert_eq!(entries[0]["actor"]["label"], "API key \"billing sync\"");
    // a user who is now an admin passes with the same token (the role is read per request)
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/stats",
        Auth::Bearer(&plain),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");

    let (code, out, err) = cli(&app, &["api-key", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("billing sync") && out.contains("active"),
        "{out}"
    );
    let (code, _, err) = cli(&app, &["api-key", "revoke", &key_id]).await;
    assert_eq!(code, 0, "{err}");
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/users",
        Auth::Key(&key),
        None,
    )
    .await;
    assert_eq!(s, 401, "a revoked key: {b}");
    let (code, _, err) = cli(&app, &["api-key", "revoke", &key_id]).await;
    assert_eq!(code, 4, "revoking twice is refused: {err}");
    let (code, out, _) = cli(&app, &["api-key", "list", "--json"]).await;
    assert_eq!(code, 0);
    let keys: Value = serde_json::from_str(&out).expect("json");
    assert!(keys[0]["revoked_at"].is_string());
    assert!(keys[0]["last_used_at"].is_string(), "{keys}");
    app.finish().await;
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_deactivated_or_deleted() {
    let app = admin_env().spawn_all().await;
    let admin = admin_token(&app).await;
    let client = reqwest::Client::new();
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/users?role=admin",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let root = b["data"]["items"][0]["id"].as_str().expect("id").to_owned();
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/api/v1/admin/users/{root}/role"),
            Some(json!({"role": "user"})),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/users/{root}/deactivate"),
            None,
        ),
        (Method::DELETE, format!("/api/v1/admin/users/{root}"), None),
    ] {
        let (s, b) = send(
            &client,
            &app,
            method.clone(),
            &path,
            Auth::Bearer(&admin),
            body,
        )
        .await;
        assert_eq!(s, 409, "{method} {path}: {b}");
        assert!(
            b["message"]
                .as_str()
                .unwrap_or("")
                .contains("last active admin"),
            "{b}"
        );
    }
    // nor erase themselves, nor move to an unverified email
    let (s, b) = send(
        &client,
        &app,
        Method::DELETE,
        "/api/v1/users/me",
        Auth::Bearer(&admin),
        Some(json!({"password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = send(
        &client,
        &app,
        Method::PATCH,
        &format!("/api/v1/admin/users/{root}"),
        Auth::Bearer(&admin),
        Some(json!({"email": "typo@exmaple.com"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(
        app.scalar_i64("select count(*) from email_claims where email = 'typo@exmaple.com'")
            .await,
        0,
        "the refused email's claim is given back"
    );
    // with a second admin, the first may step down
    let (s, b) = send(
        &client,
        &app,
        Method::POST,
        "/api/v1/admin/users",
        Auth::Bearer(&admin),
        Some(json!({"email": "second@example.com", "password": "second-admin-password-9", "verified": true, "role": "admin"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["data"]["user"]["role"], "admin");
    assert_eq!(b["data"]["user"]["status"], "active");
    let second = b["data"]["user"]["id"].as_str().expect("id").to_owned();
    let (s, b) = send(
        &client,
        &app,
        Method::PUT,
        &format!("/api/v1/admin/users/{root}/role"),
        Auth::Bearer(&admin),
        Some(json!({"role": "user"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // the demoted admin's token no longer opens admin routes
    let (s, _) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/stats",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 403);
    // and now the second is the last one
    let token = access_token(
        &client,
        &app,
        "second@example.com",
        "second-admin-password-9",
    )
    .await;
    let (s, _) = send(
        &client,
        &app,
        Method::POST,
        &format!("/api/v1/admin/users/{second}/deactivate"),
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_eq!(s, 409);
    app.finish().await;
}

#[tokio::test]
async fn admins_list_create_update_and_erase_users() {
    let app = admin_env().spawn_all().await;
    let admin = admin_token(&app).await;
    let client = reqwest::Client::new();
    for (email, name) in [
        ("ada@example.com", "Ada Lovelace"),
        ("bob@example.com", "Bob"),
        ("carol@sample.org", "Carol 50%"),
    ] {
        let (s, b) = send(
            &client,
            &app,
            Method::POST,
            "/api/v1/admin/users",
            Auth::Bearer(&admin),
            Some(json!({"email": email, "display_name": name, "password": "a-long-enough-password-1", "verified": email != "bob@example.com"})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    // an invitation: no password, so a mail with a link to choose one
    let (s, b) = send(
        &client,
        &app,
        Method::POST,
        "/api/v1/admin/users",
        Auth::Bearer(&admin),
        Some(json!({"email": "invitee@example.com"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let invitee = b["data"]["user"]["id"].as_str().expect("id").to_owned();
    assert_eq!(app.scalar_i64(&format!("select count(*) from events where aggregate_id = '{invitee}' and event_type = 'PasswordResetRequested'")).await, 1);
    assert_eq!(app.scalar_i64(&format!("select count(*) from events where aggregate_id = '{invitee}' and event_type = 'EmailVerificationRequested'")).await, 0);
    // the invitation mail (no SMTP configured: an .eml file), not a password-reset mail
    let mail_dir = app.env.data_dir.join("mail");
    let invitation = eventually(
        "the invitation mail",
        std::time::Duration::from_secs(30),
        || {
            let dir = mail_dir.clone();
            async move {
                std::fs::read_dir(&dir).ok()?.flatten().find_map(|f| {
                    let text = std::fs::read_to_string(f.path()).ok()?;
                    (text.contains("invitee@example.com") && text.contains("You are invited"))
                        .then_some(text)
                })
            }
        },
    )
    .await;
    assert!(invitation.contains("7 days"), "{invitation}");
    let mails_to_invitee = std::fs::read_dir(&mail_dir)
        .expect("mail dir")
        .flatten()
        .filter(|f| {
            std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("invitee@example.com"))
        })
        .count();
    assert_eq!(
        mails_to_invitee, 1,
        "one mail: the invitation, no verification mail"
    );
    let (s, b) = send(
        &client,
        &app,
        Method::POST,
        "/api/v1/admin/users",
        Auth::Bearer(&admin),
        Some(json!({"email": "ADA@example.com", "password": "a-long-enough-password-1"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    for bad in [
        json!({"email": "nope"}),
        json!({"email": "x@example.com", "role": "root"}),
        json!({"email": "x@example.com", "plan": "gold"}),
        json!({"email": "x@example.com", "password": "short"}),
    ] {
        let (s, b) = send(
            &client,
            &app,
            Method::POST,
            "/api/v1/admin/users",
            Auth::Bearer(&admin),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(s, 422, "{bad}: {b}");
    }

    let list = |query: &'static str| {
        let client = client.clone();
        let admin = admin.clone();
        let app = &app;
        async move {
            let (s, b) = send(
                &client,
                app,
                Method::GET,
                &format!("/api/v1/admin/users?{query}"),
                Auth::Bearer(&admin),
                None,
            )
            .await;
            assert_eq!(s, 200, "{query}: {b}");
            let emails: Vec<String> = b["data"]["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|u| u["email"].as_str().unwrap_or("").to_owned())
                .collect();
            (emails, b["data"]["total"].as_i64().unwrap_or(-1))
        }
    };
    assert_eq!(
        list("q=LOVELACE").await,
        (vec!["ada@example.com".to_owned()], 1)
    );
    assert_eq!(
        list("q=50%25").await,
        (vec!["carol@sample.org".to_owned()], 1),
        "% matches itself"
    );
    assert_eq!(
        list("q=example.com&sort=email").await.0,
        [
            "ada@example.com",
            "bob@example.com",
            "invitee@example.com",
            "root@example.com"
        ]
    );
    assert_eq!(
        list("status=pending_verification&sort=email").await.0,
        ["bob@example.com", "invitee@example.com"]
    );
    assert_eq!(list("role=admin").await.0, [ADMIN]);
    let (page2, total) = list("sort=email&per_page=2&page=2").await;
    assert_eq!(
        (page2, total),
        (
            vec![
                "carol@sample.org".to_owned(),
                "invitee@example.com".to_owned()
            ],
            5
        )
    );
    for bad in [
        "sort=age",
        "per_page=0",
        "per_page=201",
        "page=0",
        "colour=red",
    ] {
        let (s, _) = send(
            &client,
            &app,
            Method::GET,
            &format!("/api/v1/admin/users?{bad}"),
            Auth::Bearer(&admin),
            None,
        )
        .await;
        assert!(s == 422 || s == 400, "{bad}: {s}");
    }

    // update: name, plan, and an email that must be verified again
    let ada = list("q=ada@").await;
    assert_eq!(ada.1, 1);
    let (_, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/users?q=ada@",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    let ada_id = b["data"]["items"][0]["id"].as_str().expect("id").to_owned();
    let (s, b) = send(
        &client,
        &app,
        Method::PATCH,
        &format!("/api/v1/admin/users/{ada_id}"),
        Auth::Bearer(&admin),
        Some(json!({"display_name": "Countess", "plan": "pro", "email": "countess@example.com"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let u = &b["data"]["user"];
    assert_eq!(
        (
            u["display_name"].as_str(),
            u["plan"].as_str(),
            u["email"].as_str(),
            u["status"].as_str()
        ),
        (
            Some("Countess"),
            Some("pro"),
            Some("countess@example.com"),
            Some("pending_verification")
        )
    );
    let (s, _) = login(&app, "countess@example.com", "a-long-enough-password-1").await;
    assert_eq!(s, 403, "the new email is not verified yet");
    // the old email is free again, the new one taken
    let (s, b) = send(
        &client,
        &app,
        Method::PATCH,
        &format!("/api/v1/admin/users/{invitee}"),
        Auth::Bearer(&admin),
        Some(json!({"email": "countess@example.com"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = send(
        &client,
        &app,
        Method::POST,
        "/api/v1/admin/users",
        Auth::Bearer(&admin),
        Some(json!({"email": "ada@example.com", "verified": true})),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // erase
    let (s, b) = send(
        &client,
        &app,
        Method::DELETE,
        &format!("/api/v1/admin/users/{ada_id}"),
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["user"]["status"], "erased");
    assert_eq!(b["data"]["user"]["email"], "[erased]");
    let entries = history(
        &app,
        &admin,
        ada_id.parse().expect("uuid"),
        "&type=UserErased",
    )
    .await;
    assert_eq!(entries[0]["actor"]["kind"], "admin");
    assert_eq!(entries[0]["payload"]["UserErased"]["requested_by"], "admin");
    app.finish().await;
}

#[tokio::test]
async fn stats_and_projections_come_from_the_read_models() {
    let app = admin_env().spawn_all().await;
    let admin = admin_token(&app).await;
    let client = reqwest::Client::new();
    for n in 0..3 {
        let email = format!("s{n}@example.com");
        signed_up(&app, &email).await;
        let token = access_token(&client, &app, &email, PASSWORD).await;
        let (s, _) = send(
            &client,
            &app,
            Method::POST,
            "/api/v1/metrics",
            Auth::Bearer(&token),
            Some(json!({"kind": "messages", "amount": n + 1})),
        )
        .await;
        assert_eq!(s, 202);
    }
    app.wait_for_projections("stats").await;
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/stats",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["users"]["total"], 4);
    assert_eq!(d["users"]["by_status"]["active"], 4);
    assert_eq!(d["users"]["by_role"]["admin"], 1);
    assert_eq!(d["users"]["by_role"]["user"], 3);
    assert_eq!(d["users"]["by_plan"]["free"], 4);
    let today = d["activity"]
        .as_array()
        .expect("activity")
        .last()
        .cloned()
        .expect("today");
    assert_eq!(today["signups"], 4);
    assert_eq!(today["logins"], 4, "three users and the admin signed in");
    assert_eq!(today["active_users"], 4);
    assert_eq!(d["usage_totals"]["messages"], 6);
    let registered = d["events_by_type"]
        .as_array()
        .expect("counts")
        .iter()
        .find(|c| c["event_type"] == "UserRegistered")
        .cloned()
        .expect("UserRegistered");
    assert_eq!(registered["count"], 4);
    let (s, _) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/stats?days=0",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 422);

    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/projections",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = b["data"]["projections"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or(""))
        .collect();
    for model in [
        "users",
        "sessions",
        "usage",
        "conversations",
        "uploads",
        "event_stats",
    ] {
        assert!(names.contains(&model), "{model} in {names:?}");
    }
    assert!(b["data"]["relay"]["position"].is_string());
    let before: i64 = app
        .scalar_i64("select count(*) from daily_active_users")
        .await;
    let (s, b) = send(
        &client,
        &app,
        Method::POST,
        "/api/v1/admin/projections/event_stats/rebuild",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let pool = app.pool.clone();
    eventually(
        "the rebuild finished",
        std::time::Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let applied: i64 = sqlx::query_scalar(
                    "select events_applied from projection_checkpoints where name = 'event_stats'",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                let total: i64 = sqlx::query_scalar("select count(*) from events")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (applied == total).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        app.scalar_i64("select count(*) from daily_active_users")
            .await,
        before
    );
    assert_eq!(
        app.scalar_i64("select sum(count)::bigint from event_type_counts")
            .await,
        app.scalar_i64("select count(*) from events").await
    );
    let (s, _) = send(
        &client,
        &app,
        Method::POST,
        "/api/v1/admin/projections/nothing/rebuild",
        Auth::Bearer(&admin),
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.finish().await;
}

#[tokio::test]
async fn the_admin_cli_changes_what_the_api_shows() {
    let app = admin_env().spawn_all().await;
    let client = reqwest::Client::new();
    let (code, out, err) = cli(
        &app,
        &[
            "create-user",
            "--email",
            "Ops@Example.com",
            "--password",
            "ops-password-long-enough-1",
            "--verify",
            "--role",
            "admin",
            "--name",
            "Ops",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ops@example.com") && out.contains("admin"),
        "{out} {err}"
    );
    // the API sees the user at once, and the CLI is the actor
    let token = access_token(
        &client,
        &app,
        "ops@example.com",
        "ops-password-long-enough-1",
    )
    .await;
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        "/api/v1/admin/users?q=ops@",
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ops_id: Uuid = b["data"]["items"][0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let first = &history(&app, &token, ops_id, "").await[0];
    assert_eq!(first["actor"]["kind"], "system");
    assert_eq!(first["actor"]["label"], "cli:ops");

    let user = signed_up(&app, "member@example.com").await;
    let (code, out, _) = cli(&app, &["list-users", "--json", "--limit", "10"]).await;
    assert_eq!(code, 0);
    let users: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(users.as_array().map(Vec::len), Some(3));
    let (code, out, _) = cli(
        &app,
        &["list-users", "--status", "active", "--role", "admin"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("ops@example.com") && out.contains(ADMIN) && !out.contains("member@"),
        "{out}"
    );

    let (code, _, err) = cli(
        &app,
        &[
            "deactivate-user",
            "--email",
            "member@example.com",
            "--reason",
            "spam",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (s, b) = login(&app, "member@example.com", PASSWORD).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("account_disabled")));
    let (code, _, err) = cli(&app, &["reactivate-user", "--email", "member@example.com"]).await;
    assert_eq!(code, 0, "{err}");
    let (s, _) = login(&app, "member@example.com", PASSWORD).await;
    assert_eq!(s, 200);
    let (code, out, _) = cli(
        &app,
        &[
            "set-role",
            "--email",
            "member@example.com",
            "--role",
            "admin",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let member: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(member["role"], "admin");
    let (s, b) = send(
        &client,
        &app,
        Method::GET,
        &format!("/api/v1/admin/users/{user}"),
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_eq!(
        (s, b["data"]["user"]["role"].as_str()),
        (200, Some("admin"))
    );

    let (code, out, _) = cli(&app, &["user-history", "--email", "member@example.com"]).await;
    assert_eq!(code, 0);
    for line in [
        "UserRegistered",
        "SessionStarted",
        "UserDeactivated",
        "cli:ops",
        "Account reactivated",
        "Role changed from user to admin",
        "127.0.0.1",
    ] {
        assert!(out.contains(line), "{line} in\n{out}");
    }

    // exit codes that mean something
    assert_eq!(
        cli(&app, &["deactivate-user", "--email", "nobody@example.com"])
            .await
            .0,
        3
    );
    assert_eq!(
        cli(
            &app,
            &[
                "set-role",
                "--email",
                "member@example.com",
                "--role",
                "root"
            ]
        )
        .await
        .0,
        2
    );
    assert_eq!(
        cli(
            &app,
            &["create-user", "--email", "member@example.com", "--verify"]
        )
        .await
        .0,
        4
    );
    assert_eq!(cli(&app, &["list-users", "--bogus"]).await.0, 2);
    // demote both others: the seeded admin is then the last one
    assert_eq!(
        cli(
            &app,
            &[
                "set-role",
                "--email",
                "member@example.com",
                "--role",
                "user"
            ]
        )
        .await
        .0,
        0
    );
    assert_eq!(
        cli(
            &app,
            &["set-role", "--email", "ops@example.com", "--role", "user"]
        )
        .await
        .0,
        0
    );
    let (code, _, err) = cli(&app, &["deactivate-user", "--email", ADMIN]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("last active admin"), "{err}");
    app.finish().await;
}
