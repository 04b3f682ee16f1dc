//! The assistant end to end, against a model of the test's own ([`crate::fake_model`]):
//! replies in conversations and over the live stream, tokens, redelivery, retries and
//! failures, `POST /api/v1/chat`, and the app without a model.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::conversations::{call, read_events, token};
use crate::fake_model::{FakeModel, MODEL};
use crate::support::{eventually, TestApp, TestEnv};

const PLANS: &str = r#"{"default":"free","plans":[
  {"name":"free","messages_per_day":100,"tokens_per_day":1000,"uploads_per_day":5,"max_conversations":5}]}"#;

async fn conversation(app: &TestApp, t: &str) -> String {
    let (s, c) = call(
        app,
        Method::POST,
        "/api/v1/conversations",
        t,
        Some(json!({"title": "Ask"})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    c["data"]["id"].as_str().expect("id").to_owned()
}

async fn post_message(app: &TestApp, t: &str, conversation: &str, content: &str) -> String {
    let (s, m) = call(
        app,
        Method::POST,
        &format!("/api/v1/conversations/{conversation}/messages"),
        t,
        Some(json!({ "content": content })),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    m["data"]["id"].as_str().expect("id").to_owned()
}

async fn messages(app: &TestApp, t: &str, conversation: &str) -> Vec<Value> {
    let (s, page) = call(
        app,
        Method::GET,
        &format!("/api/v1/conversations/{conversation}/messages"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    page["data"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The conversation's messages once one of them has `role`.
async fn messages_once(app: &TestApp, t: &str, conversation: &str, role: &str) -> Vec<Value> {
    eventually(
        &format!("a message of role {role}"),
        Duration::from_secs(30),
        || async {
            let all = messages(app, t, conversation).await;
            all.iter().any(|m| m["role"] == role).then_some(all)
        },
    )
    .await
}

fn of_role<'a>(messages: &'a [Value], role: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["role"] == role).collect()
}

/// Today's usage of `kind`, once it is `expected`.
async fn usage_reaches(app: &TestApp, t: &str, kind: &str, expected: i64) {
    eventually(
        &format!("{kind} usage reaches {expected}"),
        Duration::from_secs(20),
        || async {
            let (_, u) = call(app, Method::GET, "/api/v1/usage", t, None).await;
            let used = u["data"]["today"]["kinds"]
                .as_array()?
                .iter()
                .find(|k| k["kind"] == kind)?["used"]
                .as_i64()?;
            (used == expected).then_some(())
        },
    )
    .await;
}

/// Wait until every event is relayed and projected and the assistant has dealt with every
/// message it was given.
async fn assistant_idle(app: &TestApp) {
    app.wait_for_projections("read models catch up").await;
    let stream_name = app.env.stream.clone();
    eventually(
        "the assistant has nothing pending",
        Duration::from_secs(30),
        || {
            let js = app.bus.jetstream.clone();
            let stream_name = stream_name.clone();
            async move {
                let stream = js.get_stream(&stream_name).await.ok()?;
                let info = stream
                    .consumer_info(workers::assistant::CONSUMER)
                    .await
                    .ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_assistant_answers_in_the_conversation_and_over_the_stream_and_counts_its_tokens() {
    let model = FakeModel::start(42).await;
    let app = model.env(PLANS).spawn_all().await;
    let t = token(&app, "ask@example.com").await;
    let id = conversation(&app, &t).await;
    let listening = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/conversations/{id}/stream")))
        .bearer_auth(&t)
        .send()
        .await
        .expect("stream");
    assert_eq!(listening.status(), 200);
    let reader = tokio::spawn(read_events(listening, 2));
    let question = post_message(&app, &t, &id, "What is the capital of Portugal?").await;

    let live = reader.await.expect("reader");
    assert_eq!(live[0].1["id"], question.as_str());
    assert_eq!(live[1].1["role"], "assistant");
    assert_eq!(
        live[1].1["content"],
        "You said: What is the capital of Portugal?"
    );
    assert_eq!(live[1].1["in_reply_to"], question.as_str());

    let all = messages(&app, &t, &id).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["role"], "assistant");
    assert_eq!(all[1]["id"], live[1].1["id"]);
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["model"], MODEL);
    assert_eq!(
        requests[0]["messages"],
        json!([{"role": "user", "content": "What is the capital of Portugal?"}])
    );
    usage_reaches(&app, &t, "tokens", 42).await;

    // the next question goes with the conversation so far
    post_message(&app, &t, &id, "And of Spain?").await;
    eventually("a second reply", Duration::from_secs(30), || async {
        (of_role(&messages(&app, &t, &id).await, "assistant").len() == 2).then_some(())
    })
    .await;
    let sent = model.requests()[1]["messages"].clone();
    assert_eq!(
        sent,
        json!([
            {"role": "user", "content": "What is the capital of Portugal?"},
            {"role": "assistant", "content": "You said: What is the capital of Portugal?"},
            {"role": "user", "content": "And of Spain?"},
        ])
    );
    usage_reaches(&app, &t, "tokens", 84).await;

    // the reply says who made it and why; its content is sealed like every message
    let envelopes = app.stream_envelopes().await;
    let asked = envelopes
        .iter()
        .find(|(_, e)| e.payload["MessagePosted"]["message_id"] == question.as_str())
        .map(|(_, e)| e.clone())
        .expect("the question on the stream");
    let replied = envelopes
        .iter()
        .find(|(_, e)| e.payload["MessagePosted"]["in_reply_to"] == question.as_str())
        .map(|(_, e)| e.clone())
        .expect("the reply on the stream");
    assert_eq!(replied.metadata.actor_role, "system");
    assert_eq!(replied.metadata.actor_id.as_deref(), Some("assistant"));
    assert_eq!(
        replied.metadata.causation_id,
        Some(asked.event_id.to_string())
    );
    assert_eq!(
        replied.metadata.correlation_id,
        asked.metadata.correlation_id
    );
    assert_eq!(
        app.scalar_i64("select count(*) from events where payload::text like '%Portugal%'")
            .await,
        0
    );
    app.finish().await;
}

#[tokio::test]
async fn a_redelivered_message_gets_no_second_reply_and_no_second_model_call() {
    let model = FakeModel::start(7).await;
    let app = model.env(PLANS).spawn_all().await;
    let t = token(&app, "again@example.com").await;
    let id = conversation(&app, &t).await;
    let question = post_message(&app, &t, &id, "Once, please").await;
    messages_once(&app, &t, &id, "assistant").await;
    assistant_idle(&app).await;

    // the question again on the stream, under a new message id (as a republish after the
    // duplicate window would put it)
    let (_, asked) = app
        .stream_envelopes()
        .await
        .into_iter()
        .find(|(_, e)| e.payload["MessagePosted"]["message_id"] == question.as_str())
        .expect("the question on the stream");
    let subject = app
        .bus
        .config
        .subject(&asked.aggregate_type, &asked.event_type);
    app.bus
        .jetstream
        .send_publish(
            subject,
            PublishMessage::build()
                .payload(serde_json::to_vec(&asked).expect("json").into())
                .message_id(Uuid::new_v4().to_string()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assistant_idle(&app).await;

    assert_eq!(model.calls(), 1, "the model was asked once");
    let all = messages(&app, &t, &id).await;
    assert_eq!(of_role(&all, "assistant").len(), 1, "{all:?}");
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'MessagePosted'")
            .await,
        2
    );
    usage_reaches(&app, &t, "tokens", 7).await;
    app.finish().await;
}

#[tokio::test]
async fn a_failing_model_is_retried_then_the_failure_is_recorded_and_shown() {
    let model = FakeModel::start(5).await;
    model.fail_next(1000);
    let app = model
        .env(PLANS)
        .set("ASSISTANT_MAX_ATTEMPTS", "3")
        .spawn_all()
        .await;
    let t = token(&app, "fail@example.com").await;
    let id = conversation(&app, &t).await;
    let question = post_message(&app, &t, &id, "Are you there?").await;

    let all = messages_once(&app, &t, &id, "assistant_error").await;
    let failure = of_role(&all, "assistant_error")[0].clone();
    assert_eq!(failure["in_reply_to"], question.as_str());
    assert_eq!(
        failure["content"],
        "the model is unavailable (HTTP 500) after 3 attempts"
    );
    assert_eq!(model.calls(), 3, "one call per attempt");
    assert!(of_role(&all, "assistant").is_empty());
    assert_eq!(
        app.scalar_i64("select count(*) from events where event_type = 'AssistantFailed'")
            .await,
        1
    );

    // a model that fails once is tried again and answers
    model.fail_next(1);
    post_message(&app, &t, &id, "Now?").await;
    let all = messages_once(&app, &t, &id, "assistant").await;
    assert_eq!(of_role(&all, "assistant")[0]["content"], "You said: Now?");
    assert_eq!(model.calls(), 5);
    assistant_idle(&app).await;
    // nothing failed twice, nothing answered twice
    let all = messages(&app, &t, &id).await;
    assert_eq!(
        (
            of_role(&all, "assistant").len(),
            of_role(&all, "assistant_error").len()
        ),
        (1, 1)
    );
    app.finish().await;
}

#[tokio::test]
async fn when_the_days_tokens_are_used_up_the_assistant_records_a_failure_and_chat_answers_402() {
    let model = FakeModel::start(42).await;
    let plans = PLANS.replace("\"tokens_per_day\":1000", "\"tokens_per_day\":50");
    let app = model.env(&plans).spawn_all().await;
    let t = token(&app, "tokens@example.com").await;
    let id = conversation(&app, &t).await;
    post_message(&app, &t, &id, "one").await;
    messages_once(&app, &t, &id, "assistant").await;
    // 42 of 50 used: the next reply is made, and counted up to the limit
    post_message(&app, &t, &id, "two").await;
    eventually("a second reply", Duration::from_secs(30), || async {
        (of_role(&messages(&app, &t, &id).await, "assistant").len() == 2).then_some(())
    })
    .await;
    usage_reaches(&app, &t, "tokens", 50).await;
    let third = post_message(&app, &t, &id, "three").await;
    let all = messages_once(&app, &t, &id, "assistant_error").await;
    let failure = of_role(&all, "assistant_error")[0].clone();
    assert_eq!(
        (failure["content"].as_str(), failure["in_reply_to"].as_str()),
        (Some("tokens limit reached"), Some(third.as_str()))
    );
    assert_eq!(model.calls(), 2, "no call once the tokens are used up");

    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/chat",
        &t,
        Some(json!({"prompt": "four"})),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str(), b["details"]["kind"].as_str()),
        (402, Some("upgrade_required"), Some("tokens")),
        "{b}"
    );
    assert_eq!(model.calls(), 2);
    app.finish().await;
}

#[tokio::test]
async fn chat_answers_with_response_and_tokens_and_writes_both_messages_into_my_conversation() {
    let model = FakeModel::start(42).await;
    let app = model.env(PLANS).spawn_all().await;
    let t = token(&app, "chat@example.com").await;
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/chat",
        &t,
        Some(json!({"prompt": "Hello"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["data"]["response"].as_str(), b["data"]["tokens"].as_u64()),
        (Some("You said: Hello"), Some(42))
    );

    let id = conversation(&app, &t).await;
    post_message(&app, &t, &id, "Earlier").await;
    messages_once(&app, &t, &id, "assistant").await;
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/chat",
        &t,
        Some(json!({"prompt": "In the conversation", "conversation_id": id})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["response"], "You said: In the conversation");
    // the conversation so far went with the prompt
    assert_eq!(
        model.requests()[2]["messages"],
        json!([
            {"role": "user", "content": "Earlier"},
            {"role": "assistant", "content": "You said: Earlier"},
            {"role": "user", "content": "In the conversation"},
        ])
    );
    let all = messages(&app, &t, &id).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(
        (all[2]["role"].as_str(), all[2]["content"].as_str()),
        (Some("user"), Some("In the conversation"))
    );
    assert_eq!(all[2]["id"], b["data"]["message_id"]);
    assert_eq!(
        (all[3]["role"].as_str(), all[3]["content"].as_str()),
        (Some("assistant"), Some("You said: In the conversation"))
    );
    assert_eq!(all[3]["id"], b["data"]["reply_id"]);
    assert_eq!(all[3]["in_reply_to"], all[2]["id"]);

    // the worker saw the prompt on the stream and left it: answered already
    assistant_idle(&app).await;
    assert_eq!(model.calls(), 3);
    assert_eq!(messages(&app, &t, &id).await.len(), 4);
    usage_reaches(&app, &t, "tokens", 3 * 42).await;
    usage_reaches(&app, &t, "messages", 3).await;

    // only my conversations
    let other = token(&app, "other@example.com").await;
    for conversation_id in [id.clone(), Uuid::new_v4().to_string()] {
        let (s, b) = call(
            &app,
            Method::POST,
            "/api/v1/chat",
            &other,
            Some(json!({"prompt": "Hi", "conversation_id": conversation_id})),
        )
        .await;
        assert_eq!((s, b["error"].as_str()), (404, Some("not_found")), "{b}");
    }
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/chat",
        &t,
        Some(json!({"prompt": "  "})),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(model.calls(), 3);
    app.finish().await;
}

#[tokio::test]
async fn without_configuration_chat_answers_503_and_conversations_still_work() {
    let app = TestEnv::new().set("PLANS", PLANS).spawn_all().await;
    let t = token(&app, "plain@example.com").await;
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/chat",
        &t,
        Some(json!({"prompt": "Hello"})),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str(), b["message"].as_str()),
        (
            503,
            Some("unavailable"),
            Some("the assistant is not configured: set LLM_BASE_URL and LLM_API_KEY")
        ),
        "{b}"
    );
    let id = conversation(&app, &t).await;
    post_message(&app, &t, &id, "Just a note").await;
    app.wait_for_projections("read models catch up").await;
    let all = messages(&app, &t, &id).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["role"], "user");
    // no assistant runs: no consumer of its own
    let stream = app
        .bus
        .jetstream
        .get_stream(&app.env.stream)
        .await
        .expect("stream");
    assert!(stream
        .consumer_info(workers::assistant::CONSUMER)
        .await
        .is_err());
    app.finish().await;
}
