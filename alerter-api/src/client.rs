//! The client the command line uses: one request per connection, over the
//! Unix socket or TCP (plain or TLS), with a deadline, and errors that say
//! what to do (no daemon running, no access to the socket, wrong token).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ApiError;
use crate::types::ErrorBody;

/// How long a request may take, connecting included.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The largest answer read (a page of alerts or history).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Where the daemon answers.
#[derive(Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16, tls: Option<Arc<rustls::ClientConfig>> },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp { host, port, tls } => {
                write!(f, "{}://{host}:{port}", if tls.is_some() { "https" } else { "http" })
            }
        }
    }
}

impl Endpoint {
    /// An endpoint from a URL: `http://HOST:PORT` or `https://HOST:PORT`
    /// (then trusting the certificates in `ca_pem`, or the web's roots).
    pub fn from_url(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("`{url}` names no host"))?.trim_matches(['[', ']']).to_string();
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(Arc::new(client_tls(ca_pem, false)?)),
            _ => return Err(format!("`{url}`: the URL must begin with http:// or https://")),
        };
        let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
        Ok(Endpoint::Tcp { host, port, tls })
    }
}

/// A TLS client configuration (rustls with ring) trusting the CA
/// certificates in `ca_pem`, and the public roots (webpki-roots) when there
/// are none or `with_public_roots` asks for them too.
pub fn client_tls(ca_pem: Option<&[u8]>, with_public_roots: bool) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("the CA file: {e}"))?;
            roots.add(cert).map_err(|e| format!("the CA file: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA file holds no PEM certificate".into());
        }
    }
    if ca_pem.is_none() || with_public_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| e.to_string())
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no alerter daemon answers at {0} (is `alerter run` running? `--socket` or ALERTER_SOCKET names another socket)"
    )]
    NoDaemon(String),
    #[error(
        "permission denied on {0}: the socket admits its owner and group only; run as a member of its group (`api.socket_group`) or as root"
    )]
    NoAccess(String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the daemon's answer makes no sense: {0}")]
    Protocol(String),
    #[error("no answer within 30 s from {0}")]
    Timeout(String),
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Client {
        Client { endpoint, token: token.map(|t| t.trim().to_string()) }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(hyper::Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(hyper::Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(hyper::Method::DELETE, path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ApiError::from_status(status, message).into());
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// One request; the status and the body as they came.
    pub async fn raw(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let at = format!("{:?}", self.endpoint);
        tokio::time::timeout(DEADLINE, self.raw_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(at))?
    }

    async fn raw_inner(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let (stream, host) = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder().method(method).uri(path).header(hyper::header::HOST, host);
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let res = sender.send_request(req).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let status = res.status().as_u16();
        let bytes = Limited::new(res.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn connect(&self) -> Result<(Box<dyn Io>, String), ClientError> {
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let at = path.display().to_string();
                match tokio::net::UnixStream::connect(path).await {
                    Ok(s) => Ok((Box::new(s), "localhost".into())),
                    Err(e) => Err(match e.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            ClientError::NoDaemon(at)
                        }
                        std::io::ErrorKind::PermissionDenied => ClientError::NoAccess(at),
                        _ => ClientError::Connect(at, e.to_string()),
                    }),
                }
            }
            Endpoint::Tcp { host, port, tls } => {
                let at = format!("{host}:{port}");
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(|e| match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ClientError::NoDaemon(at.clone()),
                    _ => ClientError::Connect(at.clone(), e.to_string()),
                })?;
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => Ok((Box::new(tcp), at)),
                    Some(cfg) => {
                        let name = rustls_pki_types::ServerName::try_from(host.clone())
                            .map_err(|e| ClientError::Connect(at.clone(), e.to_string()))?;
                        let s = tokio_rustls::TlsConnector::from(cfg.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(|e| ClientError::Connect(at.clone(), format!("TLS: {e}")))?;
                        Ok((Box::new(s), at))
                    }
                }
            }
        }
    }
}
