//! The HTTP server: accepting connections and serving them with hyper, with limits that
//! keep slow or idle clients from taking the process's file descriptors.
//!
//! `axum::serve` has none of these (no header timeout, no connection limit, one second of
//! sleep on every accept error), so Chronicle runs its own loop:
//! - **A connection limit** ([`HttpLimits::max_connections`], default from the process's
//!   open-file limit): a permit per served connection. Past it, a connection is answered
//!   with our 503 envelope and `Retry-After` and closed, by a few refusal slots (within a
//!   second, however slowly the client sends);
//!   when those are busy too, the loop stops accepting and new connections wait in the
//!   kernel's backlog, where they cost no descriptor.
//! - **The accept loop survives EMFILE** (and every other accept error): it backs off,
//!   growing to a second, and tries again; it never spins and never ends the server.
//! - **A header read timeout**: a request's head must be complete within
//!   [`HttpLimits::header_read_timeout`] (a slowloris client trickling headers is cut off).
//! - **A keep-alive timeout**: a connection idle between requests is closed after
//!   [`HttpLimits::keep_alive_timeout`].
//! - **The client's address behind a proxy** ([`TrustedProxies`]): when the peer is one of
//!   `TRUSTED_PROXIES` (a load balancer), the client is the last address in
//!   `X-Forwarded-For` that is not a trusted proxy; from anyone else the header is ignored
//!   (a client cannot choose its address for rate limits and the audit trail).
//! - **A body read timeout**: a request body must have arrived within
//!   [`HttpLimits::body_read_timeout`] of its head; otherwise the answer is 408 (envelope)
//!   and the connection is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How many over-the-limit connections are being answered 503 at once. They hold a
/// descriptor for at most [`REFUSAL_TIME`] each.
pub const REFUSAL_SLOTS: usize = 32;
/// How long a refused connection is kept to deliver its 503 cleanly.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Descriptors kept for everything but HTTP connections, besides the database pool: NATS,
/// the LISTEN connections, the listener, files (uploads, avatars, mail), the runtime.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The proxies (load balancers) whose `X-Forwarded-For` names the client
/// (`TRUSTED_PROXIES`: addresses or CIDR ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Arc<[ipnet::IpNet]>);

impl TrustedProxies {
    fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical(); // an IPv4 peer on an IPv6 listener: ::ffff:a.b.c.d
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Who sent a request that arrived from `peer`: `peer` itself unless it is a trusted
    /// proxy, else the nearest address in `X-Forwarded-For` (read from the right, past the
    /// trusted proxies) that is not one; `peer` when the header says nothing usable.
    pub fn client(&self, peer: SocketAddr, headers: &axum::http::HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            // an address, or one with its port (`1.2.3.4:5678`, `[2001:db8::1]:443`)
            let ip = hop
                .parse::<std::net::IpAddr>()
                .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
                .map(|ip| ip.to_canonical());
            match ip {
                Ok(ip) if self.trusts(ip) => continue,
                Ok(ip) => return SocketAddr::new(ip, peer.port()),
                Err(_) => break, // garbage: trust nothing further left
            }
        }
        peer
    }
}

/// The server's limits (`HTTP_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From when the server starts waiting for a request (on a new connection) or from its
    /// first byte (on a kept-alive one) until its head is complete.
    pub header_read_timeout: Duration,
    /// From a request's head until its whole body has arrived.
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keep_alive_timeout: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
}

/// The default connection limit: what the open-file limit leaves after the database pool,
/// the other descriptors the process needs, and the refusal slots.
pub fn default_max_connections(open_files: Option<u64>, database_max_connections: u32) -> usize {
    let open_files = open_files.unwrap_or(1024);
    let reserved =
        u64::from(database_max_connections) + RESERVED_DESCRIPTORS + REFUSAL_SLOTS as u64;
    open_files.saturating_sub(reserved).clamp(16, 65_536) as usize
}

/// The soft `RLIMIT_NOFILE` of this process (None where /proc is not there, or when it is
/// unlimited). Read from /proc so that no unsafe libc call is needed.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serve `router` on `listener` until `stop`, then let open connections finish (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    proxies: TrustedProxies,
    stop: CancellationToken,
) {
    let router = router.layer(axum::middleware::from_fn(move |req, next| {
        body_deadline(limits.body_read_timeout, req, next)
    }));
    let refusal = refusal_bytes().await;
    let serving = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    loop {
        // Take a slot before accepting: when every slot is busy, connections queue in the
        // kernel's backlog instead of costing descriptors here.
        let slot = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            p = serving.clone().acquire_owned() => Slot::Serve(p),
            p = refusing.clone().acquire_owned() => Slot::Refuse(p),
        };
        let Some((stream, peer)) = accept(&listener, &stop).await else {
            break;
        };
        // A served connection may have ended while we waited in accept.
        let slot = match slot {
            Slot::Refuse(p) => match serving.clone().try_acquire_owned() {
                Ok(serve) => Slot::Serve(Ok(serve)),
                Err(_) => Slot::Refuse(p),
            },
            serve => serve,
        };
        match slot {
            Slot::Serve(Ok(permit)) => {
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    limits,
                    proxies.clone(),
                    stop.clone(),
                    permit,
                ));
            }
            Slot::Refuse(Ok(permit)) => {
                metrics::counter!("chronicle_http_connections_refused_total").increment(1);
                tokio::spawn(refuse(stream, refusal.clone(), permit));
            }
            // the semaphores are never closed
            Slot::Serve(Err(_)) | Slot::Refuse(Err(_)) => break,
        }
    }
    // Every served connection holds a permit: all of them back means all have finished.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(30), serving.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("Some HTTP connections were still open 30 s after the stop; leaving them");
    }
}

enum Slot {
    Serve(Result<OwnedSemaphorePermit, tokio::sync::AcquireError>),
    Refuse(Result<OwnedSemaphorePermit, tokio::sync::AcquireError>),
}

/// The next connection, or None at `stop`. Accept errors never end the server: a client
/// that gave up is skipped at once; anything else (EMFILE when the process is out of
/// descriptors, ENFILE, ENOBUFS) waits a little, growing to a second, and tries again.
async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    let mut delay = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                metrics::counter!("chronicle_http_accept_errors_total").increment(1);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot accept a connection");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    proxies: TrustedProxies,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let io = hyper_util::rt::TokioIo::new(CountingIo {
        inner: stream,
        bytes_read: bytes_read.clone(),
    });
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        // what into_make_service_with_connect_info gave the extractors before
        let client = proxies.client(peer, req.headers());
        req.extensions_mut().insert(ConnectInfo(client));
        router.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer {
            bytes_read,
            header: limits.header_read_timeout,
            keep_alive: limits.keep_alive_timeout,
        })
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = done {
        // timeouts, clients going away: routine, not worth more than debug
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answer an over-the-limit connection with the 503, then close it. The whole exchange
/// is bounded by [`REFUSAL_TIME`], so a client trickling its head holds the slot no longer.
async fn refuse(mut stream: TcpStream, answer: Bytes, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        // Wait for the request head first: HTTP clients treat an answer that arrives
        // before their request as a broken connection, not as a 503.
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what else the client sends until it closes: closing with unread bytes
        // makes the kernel send a reset, and the client could lose the 503 unread.
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// The raw HTTP/1.1 bytes of the 503 for a connection over the limit: our envelope,
/// `Retry-After`, and `Connection: close`.
async fn refusal_bytes() -> Bytes {
    let response = api::ApiError::Unavailable(
        "the server is at its connection limit; try again shortly".into(),
    )
    .into_response();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    Bytes::from(bytes)
}

/// Give the request body `timeout` to arrive; past it, answer 408 and close the connection
/// (whatever the handler made of the failed read).
async fn body_deadline(timeout: Duration, req: Request, next: Next) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timed_out: timed_out.clone(),
        })
    });
    let response = next.run(req).await;
    if !timed_out.load(Ordering::Acquire) {
        return response;
    }
    let mut response = api::error::error_response(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        "the request body did not arrive in time",
        None,
    );
    // the rest of the body may still be on its way: this connection cannot be reused
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, counting the bytes read from it (the [`HeadTimer`] tells an idle connection
/// from one whose next request has begun by them).
struct CountingIo {
    inner: TcpStream,
    bytes_read: Arc<AtomicU64>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// hyper's timer for one connection. hyper's only use of it on an HTTP/1 server is the
/// header read timeout, whose clock it starts when it begins waiting for a request head:
/// on a kept-alive connection that is as soon as the previous answer is out, so on its
/// own it would also close idle connections after the (short) header timeout. This timer
/// gives a kept-alive connection `keep_alive` to start its next request, and the request
/// `header` from its first byte. A new connection gets `header` from the start.
struct HeadTimer {
    bytes_read: Arc<AtomicU64>,
    header: Duration,
    keep_alive: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // hyper asks for now + header_read_timeout
        let seen = self.bytes_read.load(Ordering::Relaxed);
        let idle = seen > 0;
        let until = if idle {
            deadline
                .checked_sub(self.header)
                .unwrap_or_else(Instant::now)
                + self.keep_alive
        } else {
            deadline
        };
        Box::pin(HeadDeadline {
            bytes_read: self.bytes_read.clone(),
            seen,
            idle,
            header: self.header,
            sleep: Box::pin(tokio::time::sleep_until(until.into())),
        })
    }
}

struct PlainSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PlainSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

struct HeadDeadline {
    bytes_read: Arc<AtomicU64>,
    seen: u64,
    /// Still waiting for the next request's first byte on a kept-alive connection.
    idle: bool,
    header: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // hyper polls this each time bytes arrived and the head is still incomplete, so
        // the first byte of the next request is noticed here, when it comes.
        if this.idle && this.bytes_read.load(Ordering::Relaxed) != this.seen {
            this.idle = false;
            this.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + this.header);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadDeadline {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_a_trusted_proxy_is_the_last_untrusted_forwarded_address() {
        let proxies = TrustedProxies(
            ["10.0.0.0/8", "192.168.1.5/32"]
                .map(|n| n.parse::<ipnet::IpNet>().expect("a net"))
                .to_vec()
                .into(),
        );
        let peer = |ip: &str| SocketAddr::new(ip.parse().expect("an ip"), 4000);
        let forwarded = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                "x-forwarded-for",
                HeaderValue::from_str(v).expect("a value"),
            );
            h
        };
        // from the load balancer: the client it names, past other trusted hops
        assert_eq!(
            proxies.client(peer("10.1.2.3"), &forwarded("203.0.113.9")),
            peer("203.0.113.9")
        );
        assert_eq!(
            proxies.client(
                peer("10.1.2.3"),
                &forwarded("198.51.100.1, 203.0.113.9, 192.168.1.5")
            ),
            peer("203.0.113.9"),
            "what the client itself wrote to the left is not believed"
        );
        // from anyone else the header is ignored
        assert_eq!(
            proxies.client(peer("203.0.113.50"), &forwarded("1.2.3.4")),
            peer("203.0.113.50")
        );
        // nothing usable: the proxy itself
        assert_eq!(
            proxies.client(peer("10.1.2.3"), &forwarded("not-an-ip")),
            peer("10.1.2.3")
        );
        assert_eq!(
            proxies.client(peer("10.1.2.3"), &axum::http::HeaderMap::new()),
            peer("10.1.2.3")
        );
        assert_eq!(
            TrustedProxies::default().client(peer("10.1.2.3"), &forwarded("203.0.113.9")),
            peer("10.1.2.3")
        );
        // an IPv4 balancer seen on an IPv6 listener, hops written with their ports
        assert_eq!(
            proxies.client(peer("::ffff:10.1.2.3"), &forwarded("203.0.113.9:5678")),
            peer("203.0.113.9")
        );
        assert_eq!(
            proxies.client(peer("10.1.2.3"), &forwarded("[2001:db8::7]:443")),
            peer("2001:db8::7")
        );
    }

    #[test]
    fn the_default_limit_leaves_room_for_the_pool_and_everything_else() {
        // 256 descriptors, 16 for the pool: 64 kept, 32 refusal slots
        assert_eq!(default_max_connections(Some(256), 16), 144);
        assert_eq!(default_max_connections(Some(20_000), 20), 19_884);
        // never below a usable floor, whatever the limit
        assert_eq!(default_max_connections(Some(64), 20), 16);
        assert_eq!(default_max_connections(None, 20), 908);
    }

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
