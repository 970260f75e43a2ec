//! The HTTP admin endpoint (`server.admin_http`), for Prometheus,
//! systemd, load balancers and people: the dashboard (`dashboard.rs`). Off
//! unless configured. It changes nothing unless `admin_http_token` is set,
//! and then only through the dashboard's actions (`actions.rs`).
//!
//! | path | answer |
//! |---|---|
//! | `/` | the dashboard (see `dashboard.rs` for its files and JSON) |
//! | `/metrics` | Prometheus text: the Controller's state series and the request counters |
//! | `/health/live` | 200 while the process serves this endpoint at all |
//! | `/health/ready` | 200 once the listeners take traffic and each active slot's backends have a first health verdict; 503 before that and while draining for a stop |
//! | `/status` | the admin `status` JSON (`?route=NAME` for one route) |

mod actions;
mod dashboard;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_control::protocol::{ErrorKind, Request as AdminRequest};
use switchyard_control::ControllerHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Whether the listeners take traffic: set once they serve, cleared when a
/// stop begins, so a balancer stops sending before the drain ends.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the endpoint reads from.
#[derive(Clone)]
pub struct Sources {
    pub controller: ControllerHandle,
    pub readiness: Arc<Readiness>,
    /// The request-path series; `None` if the recorder could not be
    /// installed (then `/metrics` has the Controller's series only).
    pub recorder: Option<PrometheusHandle>,
    /// `admin_http_token`: the dashboard's actions need it; `None`: read-only.
    pub token: Option<Arc<str>>,
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, sources: Sources, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("admin_http accept: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(request, &sources).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a response of known parts builds")
}

fn shutting_down() -> Response<Full<Bytes>> {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        TEXT,
        "switchyard: shutting down\n".into(),
    )
}

async fn answer(request: Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    if request.method() == Method::POST && request.uri().path() == "/api/command" {
        if let Some(refusal) = dashboard::refuse_read(&request) {
            return refusal;
        }
        return dashboard::command(sources, request).await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let allowed = if sources.token.is_some() {
            "switchyard: only POST /api/command changes things here (the dashboard's actions); the rest is read-only\n"
        } else {
            "switchyard: admin_http is read-only; change things with the switchyard CLI\n"
        };
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, allowed.into());
    }
    let path = request.uri().path();
    if dashboard::is_dashboard_path(path) {
        if let Some(refusal) = dashboard::refuse_read(&request) {
            return refusal;
        }
    }
    if let Some(page) = dashboard::asset(path) {
        return page;
    }
    match path {
        "/api/series" => dashboard::series(sources, request.uri().query()).await,
        "/api/history" => dashboard::history(sources, request.uri().query()).await,
        "/api/session" => dashboard::session(sources, &request),
        "/metrics" => {
            let Some(mut text) = sources.controller.metrics().await else {
                return shutting_down();
            };
            if let Some(recorder) = &sources.recorder {
                text.push_str(&recorder.render());
            }
            reply(StatusCode::OK, METRICS_TYPE, text)
        }
        "/health/live" => reply(StatusCode::OK, TEXT, "live\n".into()),
        "/health/ready" => ready(sources).await,
        "/status" => {
            let route = request
                .uri()
                .query()
                .and_then(|q| dashboard::param(q, "route"));
            let response = sources
                .controller
                .command(AdminRequest::Status { route }, None)
                .await;
            let status = if response.ok {
                StatusCode::OK
            } else if response
                .error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::NotFound)
            {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = match (&response.result, response.ok) {
                (Some(result), true) => result.to_string(),
                _ => serde_json::to_string(&response).unwrap_or_default(),
            };
            reply(status, JSON, body + "\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "switchyard: served here are / (the dashboard), /metrics, /health/live, /health/ready and /status\n"
                .into(),
        ),
    }
}

/// 200 once the listeners take traffic and every active slot's backends
/// have a first health verdict (as Envoy waits for its first health
/// checks): a proxy that has not yet checked its backends cannot fail back
/// and should not get traffic from a balancer or be reported started to
/// systemd. The verdict may be "unhealthy": the proxy is ready even when a
/// backend is not.
async fn ready(sources: &Sources) -> Response<Full<Bytes>> {
    let not_ready = |why: String| reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, why);
    if !sources.readiness.is_ready() {
        return not_ready("not ready: starting, or draining for a stop\n".into());
    }
    match sources.controller.unchecked_backends().await {
        None => not_ready("not ready: shutting down\n".into()),
        Some(unchecked) if unchecked.is_empty() => reply(StatusCode::OK, TEXT, "ready\n".into()),
        Some(unchecked) => not_ready(format!(
            "not ready: no health verdict yet for {}\n",
            unchecked.join(", ")
        )),
    }
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
