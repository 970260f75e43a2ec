//! The dashboard: one page (HTML, CSS and a small script, embedded in the
//! binary, nothing fetched from elsewhere) and the JSON it polls. Its data
//! is what the Controller already keeps — `status`, the history, the
//! per-slot counters it samples every few seconds — so the page costs the
//! request path nothing.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the page |
//! | `/dashboard.js`, `/dashboard.css` | its script and style |
//! | `/api/series?since=MS` | every slot's request rate, 5xx rate and p50/p95, last 10 minutes (only points after `since`, Unix ms, when given) |
//! | `/api/history?limit=N&route=R` | the newest history entries (N ≤ 200, default 30) |
//! | `/api/session` | `{"actions": …, "authorized": …}`: whether actions are on, and whether the request's token is right |
//! | `POST /api/command` | one admin command as JSON (see `actions.rs` for who may) |

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use switchyard_control::history::Caller;
use switchyard_control::percent::percent_decode;
use switchyard_control::protocol::{Request as AdminRequest, Response as AdminResponse};

use super::actions::{self, Asking, Refusal};
use super::{reply, Sources, JSON};

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// A command is a few hundred bytes.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
const MAX_HISTORY: usize = 200;
const DEFAULT_HISTORY: usize = 30;

/// Only what is served from here may run or style the page, it may not be
/// framed (so its buttons cannot be clicked through another site), and it
/// talks only to this endpoint.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The page, its files and its JSON: what answers only to a local `Host`.
pub fn is_dashboard_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/index.html" | "/dashboard.js" | "/dashboard.css"
    ) || path.starts_with("/api/")
}

/// 421 for a `Host` that is not an address or `localhost` (a rebound
/// name), 403 for a read another site's page asked for; `None`: go on.
pub fn refuse_read<B>(request: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let asking = asking(request);
    if !actions::local_host(asking.host) {
        return Some(error(
            StatusCode::MISDIRECTED_REQUEST,
            "the dashboard answers only to an IP address or localhost in Host",
        ));
    }
    if actions::cross_site_read(asking.sec_fetch_site) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "refused: the request came from another site",
        ));
    }
    None
}

/// The page and its two files, or `None` for another path.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", PAGE),
        "/dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut response = reply(StatusCode::OK, content_type, body.to_string());
    let guards = [
        (hyper::header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
        (hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (hyper::header::X_FRAME_OPTIONS, "DENY"),
        (hyper::header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in guards {
        let value = hyper::header::HeaderValue::from_static(value);
        response.headers_mut().insert(name, value);
    }
    Some(response)
}

pub async fn series(sources: &Sources, query: Option<&str>) -> Response<Full<Bytes>> {
    let since_ms = query
        .and_then(|q| param(q, "since"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    match sources.controller.series(since_ms).await {
        Some(series) => json(StatusCode::OK, &series),
        None => super::shutting_down(),
    }
}

pub async fn history(sources: &Sources, query: Option<&str>) -> Response<Full<Bytes>> {
    let route = query.and_then(|q| param(q, "route"));
    let limit = query
        .and_then(|q| param(q, "limit"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(DEFAULT_HISTORY)
        .min(MAX_HISTORY);
    let request = AdminRequest::History {
        route,
        limit: Some(limit),
    };
    let response = sources.controller.command(request, None).await;
    match (&response.result, response.ok) {
        (Some(result), true) => json(StatusCode::OK, result),
        _ => admin_answer(response),
    }
}

pub fn session<B>(sources: &Sources, request: &Request<B>) -> Response<Full<Bytes>> {
    let token = sources.token.as_deref();
    let authorized = actions::authorized(token, &asking(request)).is_ok();
    let body = serde_json::json!({ "actions": token.is_some(), "authorized": authorized });
    json(StatusCode::OK, &body)
}

/// `POST /api/command`: checked by `actions`, then run by the Controller
/// as the dashboard's.
pub async fn command(sources: &Sources, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Err(refusal) = actions::may_act(sources.token.as_deref(), &asking(&request)) {
        return refused(&refusal);
    }
    let body = match Limited::new(request.into_body(), MAX_COMMAND_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        }
    };
    let command: AdminRequest = match serde_json::from_slice(&body) {
        Ok(command) => command,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a command: {e}")),
    };
    if !actions::allowed_command(&command) {
        return error(
            StatusCode::FORBIDDEN,
            "the dashboard may switch, roll back, set a canary, pause, resume, promote or abort a rollout, confirm a guard and set maintenance; use the CLI for the rest",
        );
    }
    tracing::info!(?command, "dashboard action");
    admin_answer(
        sources
            .controller
            .command_as(command, Caller::Dashboard)
            .await,
    )
}

fn asking<B>(request: &Request<B>) -> Asking<'_> {
    let header =
        |name: hyper::header::HeaderName| request.headers().get(name).map(|value| value.as_bytes());
    Asking {
        authorization: header(hyper::header::AUTHORIZATION),
        content_type: header(hyper::header::CONTENT_TYPE),
        origin: header(hyper::header::ORIGIN),
        sec_fetch_site: request
            .headers()
            .get("sec-fetch-site")
            .map(|value| value.as_bytes()),
        host: header(hyper::header::HOST),
    }
}

/// An admin reply as the socket would give it, with a status that says
/// whether it was done.
fn admin_answer(response: AdminResponse) -> Response<Full<Bytes>> {
    let status = if response.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    json(status, &response)
}

fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = error(status, refusal.message());
    if *refusal == Refusal::Unauthorized {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"switchyard\""),
        );
    }
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body =
        serde_json::json!({ "ok": false, "error": { "kind": "refused", "message": message } });
    json(status, &body)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_string(value).unwrap_or_default();
    reply(status, JSON, body + "\n")
}

/// `name=VALUE` from a query string, percent-decoded (`+` is a space, as
/// forms send it): route names may hold any character.
pub fn param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| {
        pair.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })?;
    // `+` is a space in a query; `%2B` is a plus, so spaces first.
    let decoded = percent_decode(raw.replace('+', " ").as_bytes());
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::param;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(param("route=app&limit=5", "limit").as_deref(), Some("5"));
        assert_eq!(
            param("route=my%20shop%2Bco&limit=5", "route").as_deref(),
            Some("my shop+co")
        );
        assert_eq!(param("route=a+b", "route").as_deref(), Some("a b"));
        assert_eq!(param("route=100%", "route").as_deref(), Some("100%"));
        assert_eq!(param("route=%zz", "route").as_deref(), Some("%zz"));
        assert_eq!(param("routes=x", "route"), None);
        assert_eq!(param("route=%ff", "route"), None, "not UTF-8");
    }
}
