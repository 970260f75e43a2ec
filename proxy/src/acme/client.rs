//! instant-acme's HTTP client: one HTTPS/1.1 connection per request (an
//! order makes a handful), on hyper and tokio-rustls, checking the CA's
//! certificate against `ca_roots` or the system's trusted roots.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest one request to the CA may take, connect to last byte of
/// the head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AcmeHttp {
    tls: tokio_rustls::TlsConnector,
}

impl AcmeHttp {
    /// Trusting the PEM certificates `ca_roots`, or the system's roots.
    pub fn new(ca_roots: Option<&[u8]>) -> Result<AcmeHttp, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_roots {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("`ca_roots`: {e}"))?;
                    roots.add(cert).map_err(|e| format!("`ca_roots`: {e}"))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs()
                    .map_err(|e| format!("cannot read the system's trusted certificates: {e}"))?;
                let (added, _) = roots.add_parsable_certificates(found);
                if added == 0 {
                    return Err("the system has no trusted certificates to check the ACME CA against (install ca-certificates, or set `ca_roots`)".into());
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AcmeHttp {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    request: http::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, BoxError> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(format!("the CA gave a URL that is not https: {uri}").into());
    }
    let host = uri.host().ok_or("a URL without a host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    // `[::1]` in a URL is `::1` to connect to and to check.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let stream = tls.connect(ServerName::try_from(bare)?, tcp).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    // The low-level client sends the target as given: origin-form, and the
    // Host the URL names.
    let (mut parts, body) = request.into_parts();
    let authority = uri.authority().ok_or("a URL without an authority")?;
    parts
        .headers
        .insert(http::header::HOST, authority.as_str().parse()?);
    parts.uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let response = sender
        .send_request(http::Request::from_parts(parts, body))
        .await?;
    Ok(BytesResponse::from(response))
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, send(tls, request)).await {
                Ok(result) => result.map_err(instant_acme::Error::Other),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("the CA did not answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}
