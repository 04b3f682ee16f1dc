//! Slow and idle clients: header, body and keep-alive timeouts, the connection limit, and
//! a process out of file descriptors (the real binary under `prlimit`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chronicle::{Role, Roles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{eventually, TestEnv};

fn api_only() -> Roles {
    Roles::only(&[Role::Api])
}

/// Read one HTTP/1.1 response (head and a Content-Length body): (status, head, body).
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some((status, head, body))
}

/// Wait (up to `limit`) until the server closes `stream`; how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn slowloris_connections_trickling_headers_are_closed_within_the_header_timeout() {
    let app = TestEnv::new()
        .set("HTTP_HEADER_READ_TIMEOUT_MS", "1000")
        .spawn(api_only())
        .await;
    let addr = app.addr.expect("api");
    let mut clients = vec![];
    for _ in 0..20 {
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            let started = Instant::now();
            let mut buf = [0u8; 256];
            // one more header line every 200 ms, for as long as the server listens
            while started.elapsed() < Duration::from_secs(15) {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return Some(started.elapsed()),
                        Ok(_) => return None, // an answer: the head was never complete
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            return Some(started.elapsed());
                        }
                    }
                }
            }
            None
        }));
    }
    for c in clients {
        let closed_after = c.await.expect("client").expect("closed by the server");
        assert!(
            closed_after < Duration::from_secs(3),
            "closed after {closed_after:?}"
        );
    }
    let (s, _) = app.get_json("/health/live").await;
    assert_eq!(s, 200);
    app.finish().await;
}

#[tokio::test]
async fn a_kept_alive_connection_may_idle_past_the_header_timeout_until_the_keep_alive_timeout() {
    let app = TestEnv::new()
        .set("HTTP_HEADER_READ_TIMEOUT_MS", "500")
        .set("HTTP_KEEP_ALIVE_TIMEOUT_MS", "2500")
        .spawn(api_only())
        .await;
    let mut s = TcpStream::connect(app.addr.expect("api"))
        .await
        .expect("connect");
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(request).await.expect("write");
    let (status, _, _) = read_response(&mut s).await.expect("first answer");
    assert_eq!(status, 200);
    // idle for longer than the header timeout (this wait is the behaviour under test)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(request).await.expect("write");
    let (status, _, _) = read_response(&mut s)
        .await
        .expect("a second answer on the same connection");
    assert_eq!(status, 200);
    let idle_until = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("an idle connection is closed");
    assert!(
        idle_until > Duration::from_millis(1500) && idle_until < Duration::from_secs(5),
        "closed after {idle_until:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_with_408_and_the_connection_closed() {
    let app = TestEnv::new()
        .set("HTTP_BODY_READ_TIMEOUT_MS", "1000")
        .spawn(api_only())
        .await;
    let mut s = TcpStream::connect(app.addr.expect("api"))
        .await
        .expect("connect");
    s.write_all(
        b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .expect("write");
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let reading = read_response(&mut s);
        tokio::pin!(reading);
        loop {
            tokio::select! {
                r = &mut reading => return r,
                // a byte every 200 ms: never idle, never done
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("an answer within the body timeout, not a hang");
    let (status, head, body) = answer.expect("a response");
    assert_eq!(status, 408, "{head}{body}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(head.contains("connection: close"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("envelope");
    assert_eq!(body["error"], "timeout");
    app.finish().await;
}

#[tokio::test]
async fn past_the_connection_limit_a_request_gets_503_with_retry_after_at_once() {
    let app = TestEnv::new()
        .set("HTTP_MAX_CONNECTIONS", "4")
        .spawn(api_only())
        .await;
    let addr = app.addr.expect("api");
    let mut idle = vec![];
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    // the four idle connections hold every slot (the server accepts in order)
    let r = eventually(
        "a 503 for the fifth connection",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("http://{addr}/health/live"))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 503).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = r.json().await.expect("envelope");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["code"], 503);
    drop(idle);
    eventually(
        "a slot again once the idle clients left",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("http://{addr}/health/live"))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 200).then_some(())
            }
        },
    )
    .await;
    app.finish().await;
}

/// The real binary, serving the API under `prlimit --nofile=<n>`; killed on drop.
struct LimitedServer {
    child: Child,
    addr: SocketAddr,
}

impl LimitedServer {
    async fn start(env: &TestEnv, open_files: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new("prlimit")
            .arg(format!("--nofile={open_files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_chronicle"))
            .args(["serve", "--roles", "api"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env.vars)
            .env("BIND", addr.to_string())
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prlimit (util-linux) and the binary run");
        let server = Self { child, addr };
        let client = reqwest::Client::new();
        eventually(
            "the limited server answers",
            Duration::from_secs(60),
            || {
                let client = client.clone();
                async move {
                    let r = client
                        .get(format!("http://{addr}/health/live"))
                        .send()
                        .await
                        .ok()?;
                    (r.status() == 200).then_some(())
                }
            },
        )
        .await;
        server
    }

    /// One normal request, bounded: Some(status) or None for no answer in time.
    async fn status_within(&self, limit: Duration) -> Option<u16> {
        let client = reqwest::Client::builder()
            .timeout(limit)
            .build()
            .expect("client");
        let r = client
            .get(format!("http://{}/health/live", self.addr))
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open `n` connections that send nothing, or only the start of a request head.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /health/live HTTP/1.1\r\n").await;
        }
        conns.push(s);
    }
    conns
}

#[tokio::test]
async fn with_256_descriptors_and_300_idle_connections_a_request_still_gets_an_answer() {
    let env = TestEnv::new().set("DATABASE_MAX_CONNECTIONS", "16");
    let server = LimitedServer::start(&env, 256).await;
    let idle = idle_connections(server.addr, 300).await;
    let started = Instant::now();
    let status = server.status_within(Duration::from_secs(10)).await;
    assert!(
        matches!(status, Some(200) | Some(503)),
        "a normal request got {status:?} after {:?}",
        started.elapsed()
    );
    drop(idle);
    // the server is still there, and serves again
    assert_eq!(
        server.status_within(Duration::from_secs(10)).await,
        Some(200)
    );
    drop(server);
    env.cleanup().await;
}

#[tokio::test]
async fn a_server_out_of_descriptors_keeps_accepting_once_idle_clients_time_out() {
    // a connection limit far above what 256 descriptors allow: accept runs into EMFILE
    let env = TestEnv::new()
        .set("DATABASE_MAX_CONNECTIONS", "16")
        .set("HTTP_MAX_CONNECTIONS", "5000")
        .set("HTTP_HEADER_READ_TIMEOUT_MS", "2000");
    let server = LimitedServer::start(&env, 256).await;
    let _idle = idle_connections(server.addr, 300).await;
    // The idle clients stay connected; the server must close them at the header timeout
    // and go on accepting, so a request answers within a few seconds.
    let started = Instant::now();
    let status = server.status_within(Duration::from_secs(15)).await;
    assert_eq!(status, Some(200), "after {:?}", started.elapsed());
    drop(server);
    env.cleanup().await;
}
