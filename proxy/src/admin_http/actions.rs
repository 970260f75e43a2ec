//! The dashboard's actions: which requests may change anything, decided
//! from plain data before the Controller hears of them.
//!
//! - Off unless `admin_http_token` is configured: the endpoint is then
//!   read-only, as it always was.
//! - A mutating request carries `Authorization: Bearer <token>`, compared
//!   in constant time. The token lives in the page's session storage, never
//!   in a cookie, so a browser does not attach it to a request another site
//!   makes.
//! - Cross-site requests are refused as well, by what browsers say about
//!   them: `Sec-Fetch-Site` must be `same-origin` (or absent, for scripts
//!   and older browsers), `Origin` when present must name this host, and
//!   the body must be `application/json`, which no plain HTML form can send.
//! - Only the operator's actions go through: switch, rollback, canary,
//!   rollout pause/resume/promote/abort, maintenance and confirm, and none
//!   of them forced, unguarded or waiting. A reload, a drain, a rollout
//!   start and `--force`/`--no-guard` stay with the CLI.
//! - The page and its JSON answer only to a `Host` that is an IP address or
//!   `localhost`: a page on another name that DNS rebinding points at
//!   127.0.0.1 gets nothing (421), not even the status.

use switchyard_control::protocol::{Request, RolloutAction};

/// The parts of an HTTP request the decision reads.
#[derive(Debug, Default)]
pub struct Asking<'a> {
    pub authorization: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    pub sec_fetch_site: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
}

/// Why a mutating request is refused, and the status that says it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 403: no token is configured; the endpoint is read-only.
    ReadOnly,
    /// 401: no token, or not the right one.
    Unauthorized,
    /// 403: another site's page sent it.
    CrossSite,
    /// 415: the body is not JSON.
    NotJson,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthorized => 401,
            Refusal::NotJson => 415,
            Refusal::ReadOnly | Refusal::CrossSite => 403,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refusal::ReadOnly => {
                "admin_http is read-only: set admin_http_token in [server] to allow actions"
            }
            Refusal::Unauthorized => "a valid Authorization: Bearer token is needed",
            Refusal::CrossSite => "refused: the request came from another site",
            Refusal::NotJson => "the body must be application/json",
        }
    }
}

/// Whether `asking` carries `token` (`None`: none is configured).
pub fn authorized(token: Option<&str>, asking: &Asking) -> Result<(), Refusal> {
    let Some(token) = token else {
        return Err(Refusal::ReadOnly);
    };
    let presented = asking
        .authorization
        .and_then(|value| strip_prefix_ignore_case(value, b"bearer "))
        .map(trim);
    match presented {
        Some(presented) if equal_in_constant_time(presented, token.as_bytes()) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// Whether a mutating request may go on: from this site, as JSON, with
/// the token.
pub fn may_act(token: Option<&str>, asking: &Asking) -> Result<(), Refusal> {
    if token.is_none() {
        return Err(Refusal::ReadOnly);
    }
    if !same_site(asking) {
        return Err(Refusal::CrossSite);
    }
    let json = asking.content_type.is_some_and(|value| {
        let media = value.split(|&b| b == b';').next().unwrap_or_default();
        trim(media).eq_ignore_ascii_case(b"application/json")
    });
    if !json {
        return Err(Refusal::NotJson);
    }
    authorized(token, asking)
}

fn same_site(asking: &Asking) -> bool {
    let fetch_site_ok = asking
        .sec_fetch_site
        .is_none_or(|site| matches!(trim(site), b"same-origin" | b"none"));
    let origin_ok = match (asking.origin, asking.host) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin_names_host(trim(origin), trim(host)),
        (Some(_), None) => false,
    };
    fetch_site_ok && origin_ok
}

/// `Origin: http://host[:port]` against `Host: host[:port]`.
fn origin_names_host(origin: &[u8], host: &[u8]) -> bool {
    let Some(rest) = strip_prefix_ignore_case(origin, b"http://")
        .or_else(|| strip_prefix_ignore_case(origin, b"https://"))
    else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

/// Whether the dashboard answers a request for `host` (the `Host`
/// header): an IP address or `localhost`, with any port. Names that could
/// be rebound to this machine are refused.
pub fn local_host(host: Option<&[u8]>) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let Some(host) = host.and_then(|h| std::str::from_utf8(trim(h)).ok()) else {
        return false;
    };
    let port_ok = |port: &str| port.parse::<u16>().is_ok();
    if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return port && v6.parse::<Ipv6Addr>().is_ok();
    }
    let name = match host.split_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok()
}

/// Whether a read of the page's JSON came from another site's page (a
/// browser says so in `Sec-Fetch-Site`); such reads are refused too.
pub fn cross_site_read(sec_fetch_site: Option<&[u8]>) -> bool {
    sec_fetch_site.is_some_and(|site| matches!(trim(site), b"cross-site" | b"same-site"))
}

/// The commands the page may send; anything else is refused as if unknown.
/// What the page sends is never forced, unguarded or waiting.
pub fn allowed_command(request: &Request) -> bool {
    match request {
        Request::Switch {
            force: false,
            no_guard: false,
            timeout: None,
            ..
        }
        | Request::Rollback { force: false, .. }
        | Request::Canary { .. }
        | Request::Confirm { .. }
        | Request::Maintenance { .. } => true,
        Request::Rollout { action, .. } => matches!(
            action,
            RolloutAction::Pause
                | RolloutAction::Resume
                | RolloutAction::Promote
                | RolloutAction::Abort
        ),
        _ => false,
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &value[prefix.len()..])
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Compares digests of both, without stopping at the first difference, so
/// the time taken tells an attacker neither how much of a guess was right
/// nor how long the token is.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (
        ring::digest::digest(&ring::digest::SHA256, a),
        ring::digest::digest(&ring::digest::SHA256, b),
    );
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn asking() -> Asking<'static> {
        Asking {
            authorization: Some(b"Bearer 0123456789abcdef0123"),
            content_type: Some(b"application/json"),
            origin: Some(b"http://127.0.0.1:9901"),
            sec_fetch_site: Some(b"same-origin"),
            host: Some(b"127.0.0.1:9901"),
        }
    }

    #[test]
    fn a_same_site_json_request_with_the_token_may_act() {
        assert_eq!(may_act(Some(TOKEN), &asking()), Ok(()));
        let script = Asking {
            origin: None,
            sec_fetch_site: None,
            authorization: Some(b"bearer   0123456789abcdef0123 "),
            content_type: Some(b"Application/JSON; charset=utf-8"),
            ..asking()
        };
        assert_eq!(may_act(Some(TOKEN), &script), Ok(()));
    }

    #[test]
    fn without_a_configured_token_nothing_may_act() {
        assert_eq!(may_act(None, &asking()), Err(Refusal::ReadOnly));
        assert_eq!(authorized(None, &asking()), Err(Refusal::ReadOnly));
    }

    #[test]
    fn a_missing_or_wrong_token_is_unauthorized() {
        for authorization in [
            None,
            Some(&b"Bearer 0123456789abcdef012"[..]),
            Some(b"Bearer 0123456789abcdef01234"),
            Some(b"Bearer 0123456789abcdef0124"),
            Some(b"Basic 0123456789abcdef0123"),
            Some(b"0123456789abcdef0123"),
            Some(b"Bearer"),
        ] {
            let a = Asking {
                authorization,
                ..asking()
            };
            assert_eq!(may_act(Some(TOKEN), &a), Err(Refusal::Unauthorized));
        }
    }

    #[test]
    fn another_sites_page_is_refused_even_with_the_token() {
        type Header = Option<&'static [u8]>;
        let cases: [(Header, Header); 5] = [
            (Some(b"http://evil.example"), Some(b"same-origin")),
            (Some(b"http://127.0.0.1:9902"), None),
            (Some(b"null"), None),
            (None, Some(b"cross-site")),
            (None, Some(b"same-site")),
        ];
        for (origin, sec_fetch_site) in cases {
            let a = Asking {
                origin,
                sec_fetch_site,
                ..asking()
            };
            assert_eq!(may_act(Some(TOKEN), &a), Err(Refusal::CrossSite), "{a:?}");
        }
    }

    #[test]
    fn a_form_body_is_refused() {
        for content_type in [
            None,
            Some(&b"application/x-www-form-urlencoded"[..]),
            Some(b"text/plain"),
            Some(b"multipart/form-data; boundary=x"),
        ] {
            let a = Asking {
                content_type,
                ..asking()
            };
            assert_eq!(may_act(Some(TOKEN), &a), Err(Refusal::NotJson));
        }
    }

    #[test]
    fn only_the_operators_actions_are_allowed() {
        let parse = |json: &str| serde_json::from_str::<Request>(json).unwrap();
        for ok in [
            r#"{"cmd":"switch","route":"app","slot":"green"}"#,
            r#"{"cmd":"rollback","route":"app"}"#,
            r#"{"cmd":"canary","route":"app","slot":"green","weight":10}"#,
            r#"{"cmd":"confirm","route":"app"}"#,
            r#"{"cmd":"maintenance","route":"app","on":true}"#,
            r#"{"cmd":"rollout","action":"pause","route":"app"}"#,
            r#"{"cmd":"rollout","action":"abort","route":"app"}"#,
        ] {
            assert!(allowed_command(&parse(ok)), "{ok}");
        }
        for refused in [
            r#"{"cmd":"switch","route":"app","slot":"green","force":true}"#,
            r#"{"cmd":"switch","route":"app","slot":"green","no_guard":true}"#,
            r#"{"cmd":"switch","route":"app","slot":"green","timeout":"1h"}"#,
            r#"{"cmd":"rollback","route":"app","force":true}"#,
            r#"{"cmd":"reload"}"#,
            r#"{"cmd":"status"}"#,
            r#"{"cmd":"drain","route":"app","slot":"blue"}"#,
            r#"{"cmd":"rollout","action":"start","route":"app","slot":"green"}"#,
            r#"{"cmd":"history"}"#,
        ] {
            assert!(!allowed_command(&parse(refused)), "{refused}");
        }
    }

    #[test]
    fn the_page_answers_only_to_an_address_or_localhost() {
        for host in [
            &b"127.0.0.1:9901"[..],
            b"127.0.0.1",
            b"localhost:9901",
            b"LocalHost",
            b"[::1]:9901",
            b"[::1]",
            b"10.0.0.7:80",
        ] {
            assert!(local_host(Some(host)), "{}", String::from_utf8_lossy(host));
        }
        for host in [
            None,
            Some(&b"evil.example:9901"[..]),
            Some(b"evil.example"),
            Some(b"localhost.evil.example"),
            Some(b"127.0.0.1.nip.io:9901"),
            Some(b""),
        ] {
            assert!(!local_host(host), "{host:?}");
        }
        assert!(cross_site_read(Some(b"cross-site")));
        assert!(cross_site_read(Some(b"same-site")));
        assert!(!cross_site_read(Some(b"same-origin")));
        assert!(!cross_site_read(None));
    }
}
