//! Logs (JSON via tracing; `LOG_FORMAT=pretty` for people) and the Prometheus recorder.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Install the log subscriber once, writing to standard output. `RUST_LOG` filters
/// (default `info`).
pub fn init_logs() {
    init_logs_to(false);
}

/// [`init_logs`], to standard error when `stderr` (commands whose standard output is
/// their answer, such as `chronicle admin ... --json`).
pub fn init_logs_to(stderr: bool) {
    let default = if stderr {
        "warn"
    } else {
        "info,sqlx=warn,async_nats=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let writer = move || -> Box<dyn std::io::Write> {
        if stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
}

/// Serve `/metrics` (this process's Prometheus text) and `/health/live` on `listener`
/// until `stop` (`METRICS_BIND`: processes without the API have no other place to show
/// their relay, projector, lease and worker counters).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) {
    use axum::routing::get;
    let handle = metrics_handle();
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/health/live", get(|| async { "ok" }));
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "The metrics listener stopped");
    }
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // A recorder exists already (another app in this test process): keep a
                // handle of our own so rendering still works.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often the histograms' samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Fold the histograms' samples into their buckets every few seconds. The recorder keeps
/// every sample until then, and a process nobody scrapes would keep them all: ~100 bytes a
/// sign-in, growing for as long as it runs (BENCHMARKS.md, the soak). A thread of its own,
/// so it runs whichever runtime (or none) the process has.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name(UPKEEP_THREAD.into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "Cannot start the metrics upkeep; histograms grow until scraped");
    }
}

const UPKEEP_THREAD: &str = "metrics-upkeep";

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorder keeps histogram samples until upkeep folds them: the upkeep must run.
    #[test]
    fn the_metrics_recorder_has_its_upkeep_thread() {
        let _ = metrics_handle();
        let threads = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_owned())
                .collect()
        };
        // a new thread takes its name a moment after it starts
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !threads().iter().any(|t| t == UPKEEP_THREAD) {
            assert!(
                std::time::Instant::now() < deadline,
                "threads: {:?}",
                threads()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
