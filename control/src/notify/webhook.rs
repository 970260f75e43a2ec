//! One webhook POST, over plain HTTP or HTTPS (checked against the system's
//! roots, or the target's own `ca`).

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What one POST carries.
pub(super) struct Post<'a> {
    pub url: &'a str,
    pub secret: Option<&'a str>,
    /// PEM roots for an `https://` url; `None`: the system's.
    pub ca: Option<&'a [u8]>,
    pub event: &'a str,
    pub body: Bytes,
}

/// `sha256=<hex>` of the body, keyed with `secret`.
pub(crate) fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// One POST of the notice; a 2xx answer is a delivery.
pub(super) async fn post(post: Post<'_>) -> Result<(), String> {
    let uri: http::Uri = post.url.parse().map_err(|e| format!("bad url: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("the url has no host")?;
    // `[::1]` in a URL is `::1` to connect to and to name in TLS.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = request(&uri, &post)?;
    if !https {
        return send(stream, request).await;
    }
    let config = crate::tls_client::http1_client(post.ca)?;
    let name = ServerName::try_from(bare_host.to_string())
        .map_err(|e| format!("{bare_host:?} cannot be checked by TLS: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    send(tls, request).await
}

fn request(uri: &http::Uri, post: &Post<'_>) -> Result<hyper::Request<Full<Bytes>>, String> {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = hyper::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "switchyard-notify")
        .header("x-switchyard-event", post.event);
    if let Some(secret) = post.secret {
        request = request.header("x-switchyard-signature", signature(secret, &post.body));
    }
    request
        .body(Full::new(post.body.clone()))
        .map_err(|e| e.to_string())
}

async fn send<S>(stream: S, request: hyper::Request<Full<Bytes>>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let answer = sender.send_request(request).await;
    driver.abort();
    let status = answer.map_err(|e| e.to_string())?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}
