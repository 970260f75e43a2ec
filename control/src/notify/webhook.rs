//! One webhook POST, over plain HTTP or HTTPS (checked against the system's
//! roots, or the target's own `ca`).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
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
    let config = client_config(post.ca)?;
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

/// A TLS client trusting `ca`, or the system's roots (read once).
fn client_config(ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("`ca`: {e}"))?;
                roots.add(cert).map_err(|e| format!("`ca`: {e}"))?;
            }
            Arc::new(roots)
        }
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's trusted roots (`/etc/ssl/certs`, or `SSL_CERT_FILE`),
/// read at the first https delivery and kept.
fn system_roots() -> Result<Arc<rustls::RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let certs = rustls_native_certs::load_native_certs()
                .map_err(|e| format!("cannot read the system's trusted certificates: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _unusable) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("the system has no trusted certificates to check an https webhook against (install ca-certificates, or set `ca`)".to_string());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}
