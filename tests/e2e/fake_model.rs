//! A model of the tests' own: a real HTTP server on 127.0.0.1 that speaks the OpenAI
//! chat-completions format, checks what it is sent, counts its calls, and can be told to
//! fail.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};

use crate::support::TestEnv;

pub const MODEL: &str = "test-model";
const KEY: &str = "test-key";

/// The test's model: answers "You said: <last message>" with `tokens` tokens.
#[derive(Default)]
struct ModelState {
    calls: AtomicUsize,
    /// Answer 500 to this many calls, then answer again.
    fail_next: AtomicUsize,
    tokens: AtomicU64,
    /// Every request body, in order.
    requests: Mutex<Vec<Value>>,
}

pub struct FakeModel {
    addr: SocketAddr,
    state: Arc<ModelState>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeModel {
    pub async fn start(tokens: u64) -> Self {
        let state = Arc::new(ModelState::default());
        state.tokens.store(tokens, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            state,
            server,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// A test environment whose assistant talks to this model.
    pub fn env(&self, plans: &str) -> TestEnv {
        TestEnv::new()
            .set("PLANS", plans)
            .set("LLM_BASE_URL", self.base_url())
            .set("LLM_API_KEY", KEY)
            .set("LLM_MODEL", MODEL)
            .set("LLM_TIMEOUT_SECS", "5")
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn complete(
    State(model): State<Arc<ModelState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    model.calls.fetch_add(1, Ordering::SeqCst);
    model.requests.lock().expect("lock").push(body.clone());
    let error =
        |status: StatusCode, message: &str| (status, Json(json!({"error": {"message": message}})));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-key") {
        return error(StatusCode::UNAUTHORIZED, "bad key");
    }
    if body["model"] != MODEL {
        return error(StatusCode::BAD_REQUEST, "unknown model");
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let well_formed = !messages.is_empty()
        && messages.iter().all(|m| {
            matches!(m["role"].as_str(), Some("user" | "assistant")) && m["content"].is_string()
        });
    if !well_formed {
        return error(StatusCode::BAD_REQUEST, "bad messages");
    }
    let failing = model
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "overloaded");
    }
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    (
        StatusCode::OK,
        Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("You said: {last}")}, "finish_reason": "stop"}],
            "usage": {"total_tokens": model.tokens.load(Ordering::SeqCst)}
        })),
    )
}
