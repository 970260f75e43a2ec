//! `redirect_https`: a plain-HTTP request to a route that wants HTTPS gets
//! a 301 to the same target on the HTTPS listener.

use bytes::Bytes;
use http::header::{self, HeaderValue};

use super::downstream::Downstream;
use super::request_id;

/// A 301 to HTTPS, with the request's id.
pub(super) async fn redirect(
    session: &mut Downstream,
    location: HeaderValue,
    request_id: &HeaderValue,
) -> pingora::Result<()> {
    let mut header = pingora::protocols::http::ServerSession::generate_error(301);
    header.set_content_length(0)?;
    header.insert_header(header::LOCATION, location)?;
    header.insert_header(request_id::HEADER, request_id.clone())?;
    session.write_error_response(header, Bytes::new()).await
}

/// `https://HOST[:PORT]TARGET` for a Host header (its port dropped) and
/// the HTTPS listener's port (left out when it is 443). `None` when the
/// Host cannot make a valid URL.
pub(super) fn https_location(
    host: &str,
    https_port: Option<u16>,
    target: &str,
) -> Option<HeaderValue> {
    let name = match host.strip_prefix('[') {
        // An IPv6 literal keeps its brackets.
        Some(rest) => &host[..rest.find(']')? + 2],
        None => host.split(':').next().unwrap_or_default(),
    };
    if name.is_empty() {
        return None;
    }
    let location = match https_port {
        None | Some(443) => format!("https://{name}{target}"),
        Some(port) => format!("https://{name}:{port}{target}"),
    };
    HeaderValue::from_str(&location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_location_drops_the_host_port_and_adds_the_tls_one() {
        let at = |host, port, target| {
            https_location(host, port, target).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            at("app.test:8080", Some(443), "/a?b=1").as_deref(),
            Some("https://app.test/a?b=1")
        );
        assert_eq!(
            at("app.test", Some(8443), "/").as_deref(),
            Some("https://app.test:8443/")
        );
        assert_eq!(
            at("[::1]:80", Some(8443), "/x").as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(at("", Some(443), "/"), None);
        assert_eq!(at("[::1", Some(443), "/"), None);
    }
}
