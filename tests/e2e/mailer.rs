//! The mailer end to end: the app registers people, the relay publishes, the mailer sends
//! to an in-process SMTP sink (or writes `.eml` files), and what arrives works.

use std::time::Duration;

use chronicle::{Role, Roles};
use eventstore::secrets::{Purpose, Secrets};
use uuid::Uuid;
use workers::EventBus;

use crate::smtp_sink::SmtpSink;
use crate::support::{eventually, TestApp, TestEnv};

/// `TestEnv`'s `SECRET_KEY`.
const SECRET_KEY: &[u8] = b"test-secret-key-that-is-long-enough-000";
const DEADLINE: Duration = Duration::from_secs(30);

/// The user id, nonce (opened) and event id of the (only) `EmailVerificationRequested`
/// for `email`.
async fn verification_request(app: &TestApp, email: &str) -> (Uuid, String, Uuid) {
    let (user, nonce, event_id): (String, String, Uuid) = sqlx::query_as(
        "select aggregate_id, payload->'EmailVerificationRequested'->>'nonce', event_id \
         from events where event_type = 'EmailVerificationRequested' \
         and aggregate_id = (select user_id::text from email_claims where email = $1)",
    )
    .bind(email)
    .fetch_one(&app.pool)
    .await
    .expect("one verification request");
    (
        user.parse().expect("a user id"),
        app.opened(nonce).await,
        event_id,
    )
}

async fn delivery_status(app: &TestApp, event_id: Uuid) -> Option<String> {
    sqlx::query_scalar("select status from mail_deliveries where event_id = $1")
        .bind(event_id)
        .fetch_optional(&app.pool)
        .await
        .expect("query mail_deliveries")
}

#[tokio::test]
async fn registering_mails_a_link_and_a_code_the_server_accepts() {
    let sink = SmtpSink::start().await;
    let env = TestEnv::new().set("SMTP_URL", sink.url());
    let app = env.spawn_all().await;

    assert_eq!(app.register("ada@example.com").await.status().as_u16(), 202);
    let mail = sink
        .wait_for("ada@example.com", "Verify your email", DEADLINE)
        .await;

    let link = mail
        .link_containing("/api/v1/auth/verify?token=")
        .expect("a verification link");
    let token = link.split_once("?token=").map(|(_, t)| t).expect("a token");
    let code = mail.six_digit_code().expect("a 6-digit code");
    let (user_id, nonce, event_id) = verification_request(&app, "ada@example.com").await;
    let secrets = Secrets::new(SECRET_KEY);
    assert_eq!(
        secrets.open_link_token(Purpose::EmailVerification, token),
        Some((user_id, nonce.clone()))
    );
    assert!(secrets.code_matches(Purpose::EmailVerification, user_id, &nonce, &code));

    // the HTML part carries the same link and code; the headers name the event
    let html = mail.html_body().expect("an HTML part");
    assert!(html.contains(token) && html.contains(&code));
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{event_id}@chronicle>"))
    );
    assert!(mail
        .header("Content-Type")
        .unwrap_or_default()
        .starts_with("multipart/alternative"));
    assert_eq!(mail.envelope_from, "no-reply@chronicle.local");
    assert!(mail
        .header("From")
        .unwrap_or_default()
        .contains("no-reply@chronicle.local"));
    let status = eventually("the delivery is recorded", DEADLINE, || {
        let app = &app;
        async move { delivery_status(app, event_id).await }
    })
    .await;
    assert_eq!(status, "sent");
    app.finish().await;
}

#[tokio::test]
async fn registering_an_email_twice_tells_its_owner() {
    let sink = SmtpSink::start().await;
    // the explicit plain-text form (the other tests use the bare `smtp://host:port`)
    let env = TestEnv::new().set("SMTP_URL", format!("{}?tls=none", sink.url()));
    let app = env.spawn_all().await;

    assert_eq!(app.register("bob@example.com").await.status().as_u16(), 202);
    sink.wait_for("bob@example.com", "Verify your email", DEADLINE)
        .await;
    assert_eq!(app.register("bob@example.com").await.status().as_u16(), 202);
    let mail = sink
        .wait_for("bob@example.com", "Someone tried to register", DEADLINE)
        .await;
    let text = mail.text_body().expect("a text part");
    assert!(text.contains("sign in") && text.contains("reset"), "{text}");
    assert!(mail.six_digit_code().is_none());
    assert_eq!(
        sink.matching("bob@example.com", "Verify your email").len(),
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn a_restarted_mailer_does_not_mail_again() {
    let sink = SmtpSink::start().await;
    let env = TestEnv::new().set("SMTP_URL", sink.url());
    let app = env.spawn_all().await;
    assert_eq!(
        app.register("carol@example.com").await.status().as_u16(),
        202
    );
    sink.wait_for("carol@example.com", "Verify your email", DEADLINE)
        .await;
    let (_, _, event_id) = verification_request(&app, "carol@example.com").await;
    eventually("carol's delivery is recorded", DEADLINE, || {
        let app = &app;
        async move { delivery_status(app, event_id).await }
    })
    .await;
    app.stop().await;

    // Forget the consumer, as if every ack had been lost: the new mailer reads the stream
    // from the start, and only mail_deliveries keeps it from mailing carol again.
    let bus = EventBus::connect(env.bus_config()).await.expect("NATS");
    bus.jetstream
        .get_stream(&env.stream)
        .await
        .expect("the stream")
        .delete_consumer(workers::mailer::CONSUMER)
        .await
        .expect("the mailer's consumer existed");

    let app = env.spawn_all().await;
    assert_eq!(
        app.register("dave@example.com").await.status().as_u16(),
        202
    );
    // the mailer takes the stream in order: carol's event came before dave's
    sink.wait_for("dave@example.com", "Verify your email", DEADLINE)
        .await;
    assert_eq!(
        sink.matching("carol@example.com", "Verify your email")
            .len(),
        1,
        "carol was mailed again"
    );
    app.finish().await;
}

#[tokio::test]
async fn without_smtp_each_mail_is_an_eml_file() {
    let env = TestEnv::new();
    assert!(!env.vars.contains_key("SMTP_URL"));
    let app = env.spawn_all().await;
    assert_eq!(
        app.register("erin@example.com").await.status().as_u16(),
        202
    );
    let (_, _, event_id) = verification_request(&app, "erin@example.com").await;
    let dir = env.data_dir.join("mail");
    let path = eventually("an .eml file in DATA_DIR/mail", DEADLINE, || {
        let dir = dir.clone();
        async move {
            std::fs::read_dir(&dir)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(&format!("-{event_id}.eml")))
        }
    })
    .await;
    let content = std::fs::read_to_string(&path).expect("a readable file");
    assert!(content.contains("To: erin@example.com"));
    assert!(content.contains("Subject: Verify your email"));
    let status = eventually("the file is recorded", DEADLINE, || {
        let app = &app;
        async move { delivery_status(app, event_id).await }
    })
    .await;
    assert_eq!(status, "written");
    app.finish().await;
}

#[tokio::test]
async fn a_mail_the_server_turns_away_is_sent_again_later() {
    let sink = SmtpSink::start().await;
    sink.reject_next(1);
    let env = TestEnv::new().set("SMTP_URL", sink.url());
    let app = env.spawn_all().await;
    assert_eq!(app.register("fay@example.com").await.status().as_u16(), 202);
    // the first attempt gets 451; the NAK brings the message back about 5 s later
    sink.wait_for("fay@example.com", "Verify your email", DEADLINE)
        .await;
    assert_eq!(sink.rejected(), 1);
    assert_eq!(
        sink.matching("fay@example.com", "Verify your email").len(),
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn events_older_than_a_day_are_not_mailed() {
    let sink = SmtpSink::start().await;
    let env = TestEnv::new().set("SMTP_URL", sink.url());
    let app = env.spawn(Roles::only(&[Role::Relay, Role::Mailer])).await;
    let user = Uuid::now_v7();
    let mut ids = vec![];
    for (sequence, email, age_hours) in
        [(1i64, "old@example.com", 25i32), (2, "new@example.com", 1)]
    {
        // a hand-written owner-less event: only the relay and the mailer run here
        let id: Uuid = sqlx::query_scalar(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
             values ('user', $1, $2, 'DuplicateRegistrationAttempted', '1.0', $3, '{}', now() - make_interval(hours => $4)) \
             returning event_id",
        )
        .bind(user.to_string())
        .bind(sequence)
        .bind(serde_json::json!({"DuplicateRegistrationAttempted": {"email": email}}))
        .bind(age_hours)
        .fetch_one(&app.pool)
        .await
        .expect("insert an event");
        ids.push(id);
    }
    sink.wait_for("new@example.com", "Someone tried to register", DEADLINE)
        .await;
    assert_eq!(
        delivery_status(&app, ids[0]).await.as_deref(),
        Some("skipped_stale")
    );
    assert!(sink.messages().iter().all(|m| !m.is_to("old@example.com")));
    app.finish().await;
}
