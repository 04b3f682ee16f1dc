//! Uploads: stored, listed, downloaded by the owner only, typed by content, limited in size
//! and counted against the plan.

use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::Value;

use crate::auth::{login, signed_up, PASSWORD};
use crate::support::{json, TestApp, TestEnv};

const PLANS: &str = r#"{"default":"free","plans":[
  {"name":"free","messages_per_day":3,"tokens_per_day":1000,"uploads_per_day":2,"max_conversations":2}]}"#;

async fn token(app: &TestApp, email: &str) -> String {
    signed_up(app, email).await;
    let (s, b) = login(app, email, PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["access_token"]
        .as_str()
        .expect("access")
        .to_owned()
}

async fn send_file(app: &TestApp, t: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_owned()));
    json(
        reqwest::Client::new()
            .post(app.url("/api/v1/uploads"))
            .bearer_auth(t)
            .multipart(form)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

#[tokio::test]
async fn uploads_are_stored_typed_by_content_limited_and_private() {
    let env = TestEnv::new()
        .set("PLANS", PLANS)
        .set("UPLOAD_MAX_BYTES", "4096");
    let app = env.spawn_all().await;
    let t = token(&app, "files@example.com").await;
    let other = token(&app, "other@example.com").await;
    let (s, b) = send_file(&app, &t, "notes.txt", b"hello, world".to_vec()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (
            b["data"]["content_type"].as_str(),
            b["data"]["size"].as_i64()
        ),
        (Some("text/plain; charset=utf-8"), Some(12))
    );
    let id = b["data"]["id"].as_str().expect("id").to_owned();
    let c = reqwest::Client::new();
    let file = c
        .get(app.url(&format!("/api/v1/uploads/{id}/content")))
        .bearer_auth(&t)
        .send()
        .await
        .expect("sent");
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.bytes().await.expect("bytes").to_vec(),
        b"hello, world".to_vec()
    );
    let (_, list) = json(
        c.get(app.url("/api/v1/uploads"))
            .bearer_auth(&t)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    // not a type we take, too large
    let (s, _) = send_file(&app, &t, "x.bin", vec![0u8, 1, 2, 3, 0xff]).await;
    assert_eq!(s, 415);
    let (s, _) = send_file(&app, &t, "big.txt", vec![b'a'; 8192]).await;
    assert_eq!(s, 413);
    // someone else gets 404 everywhere
    for (method, path) in [
        (Method::GET, format!("/api/v1/uploads/{id}")),
        (Method::GET, format!("/api/v1/uploads/{id}/content")),
        (Method::DELETE, format!("/api/v1/uploads/{id}")),
    ] {
        let resp = c
            .request(method.clone(), app.url(&path))
            .bearer_auth(&other)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    // the plan allows 2 a day: the third is refused
    let (s, _) = send_file(
        &app,
        &t,
        "pic.png",
        [&b"\x89PNG\r\n\x1a\n"[..], &[1u8; 16][..]].concat(),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = send_file(&app, &t, "more.txt", b"one too many".to_vec()).await;
    assert_eq!((s, b["details"]["kind"].as_str()), (402, Some("uploads")));
    let resp = c
        .delete(app.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    let resp = c
        .get(app.url(&format!("/api/v1/uploads/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
    // the file name is personal data: sealed in the log
    assert_eq!(
        app.scalar_i64("select count(*) from events where payload::text like '%notes.txt%'")
            .await,
        0
    );
    app.finish().await;
}
