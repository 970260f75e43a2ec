//! The read-only HTTP endpoint (`server.admin_http`): Prometheus metrics at
//! `/metrics`, rendered by the Controller on each scrape. Off unless
//! configured; it tells nothing that changes state.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use switchyard_control::ControllerHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    controller: ControllerHandle,
    mut shutdown: watch::Receiver<bool>,
) {
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
        let controller = controller.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let controller = controller.clone();
                async move { Ok::<_, Infallible>(answer(request, &controller).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer<B>(request: Request<B>, controller: &ControllerHandle) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a static response builds")
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "switchyard: only /metrics is served here\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "switchyard: read-only\n".into(),
        );
    }
    match controller.metrics().await {
        Some(text) => reply(StatusCode::OK, METRICS_TYPE, text),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "switchyard: shutting down\n".into(),
        ),
    }
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
