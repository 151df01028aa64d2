//! TLS termination on a listener: the compiled [`ServerTls`] of one listener, the SNI certificate
//! resolver, client certificate validation, and the accepted connection ([`ServerIo`]).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bowline_model::ir;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::files::{TlsFiles, Trust, Watched};
use super::{
    ALPN_H2, ALPN_HTTP1, PROTOCOL_VERSIONS, TlsError, has_subject_alternative_name,
    no_matching_name, provider,
};

/// How long a client has to complete the TLS handshake (in permissive mode: to send its first
/// byte, then to complete the handshake).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS of one listener, compiled once per config update.
#[derive(Debug)]
pub struct ServerTls {
    /// Plaintext is accepted too (App Mesh `PERMISSIVE`).
    permissive: bool,
    /// Requests whose host selects another certificate entry than the connection's SNI get 421.
    detect_misdirected: bool,
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
}

// === impl ServerTls ===

impl ServerTls {
    /// Compiles a listener's TLS settings, loading the files it names that are not loaded yet;
    /// settings equal to those of a listener in service get its config back. `None` when the
    /// listener serves plaintext (no TLS, or mode `disabled`).
    pub fn compile(
        tls: Option<&ir::ListenerTls>,
        files: &TlsFiles,
    ) -> Result<Option<Arc<ServerTls>>, TlsError> {
        let Some(tls) = tls else {
            return Ok(None);
        };
        let permissive = match tls.mode {
            ir::TlsMode::Strict => false,
            ir::TlsMode::Permissive => true,
            ir::TlsMode::Disabled => return Ok(None),
        };
        // Same settings as a listener in service: same config (its files are kept current).
        let key = format!("{tls:?}");
        if let Some(server) = files.server(&key) {
            return Ok(Some(server));
        }
        let mut resolver = SniResolver::default();
        for (i, c) in tls.certificates.iter().enumerate() {
            let at = format!("tls.certificates[{i}]");
            let cert = files
                .certificate(Path::new(&c.certificate_chain), Path::new(&c.private_key))
                .map_err(|e| {
                    let field = if e.path == Path::new(&c.private_key) {
                        "privateKey"
                    } else {
                        "certificateChain"
                    };
                    TlsError::load(format!("{at}.{field}"), e)
                })?;
            resolver
                .add(&c.server_names, cert, i)
                .map_err(|(j, reason)| match j {
                    Some(j) => TlsError::new(format!("{at}.serverNames[{j}]"), reason),
                    None => TlsError::new(at.clone(), reason),
                })?;
        }
        if resolver.is_empty() {
            return Err(TlsError::new(
                "tls.certificates",
                "a TLS listener needs at least one certificate",
            ));
        }
        let client_auth = match &tls.client_validation {
            None => None,
            Some(v) => Some(ClientAuth {
                trust: files
                    .trust(Path::new(&v.trust_chain))
                    .map_err(|e| TlsError::load("tls.clientValidation.trustChain", e))?,
                mandatory: !permissive,
                subject_alternative_names: v.subject_alternative_names.clone().into(),
                algorithms: provider().signature_verification_algorithms,
            }),
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| TlsError::new("tls", e.to_string()))?;
        let builder = match client_auth {
            Some(v) => builder.with_client_cert_verifier(Arc::new(v)),
            None => builder.with_no_client_auth(),
        };
        let resolver = Arc::new(resolver);
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        let server = Arc::new(ServerTls {
            permissive,
            detect_misdirected: tls.detect_misdirected,
            config: Arc::new(config),
            resolver,
        });
        files.keep_server(key, &server);
        Ok(Some(server))
    }

    /// Whether plaintext connections are accepted too.
    pub fn permissive(&self) -> bool {
        self.permissive
    }

    /// The same listener TLS without ALPN, for listeners that proxy opaque bytes (tcp): the
    /// proxy does not speak HTTP on them, so it must not agree to `h2` or `http/1.1`. The
    /// certificates, their reloading and client validation are shared with `self`.
    pub fn without_alpn(&self) -> ServerTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols.clear();
        ServerTls {
            permissive: self.permissive,
            detect_misdirected: self.detect_misdirected,
            config: Arc::new(config),
            resolver: self.resolver.clone(),
        }
    }

    pub fn resolver(&self) -> &SniResolver {
        &self.resolver
    }

    /// Whether requests are checked with [`ServerTls::misdirected`].
    pub fn detects_misdirected(&self) -> bool {
        self.detect_misdirected
    }

    /// Whether a request for `host` on a connection whose ClientHello named `sni` is
    /// misdirected: the listener detects misdirected requests, and the host selects a
    /// certificate entry other than the one the SNI selected. A host no entry serves is not
    /// misdirected (routing answers it). `host` is compared case-insensitively.
    pub fn misdirected(&self, sni: Option<&str>, host: &str) -> bool {
        if !self.detect_misdirected {
            return false;
        }
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let by_host = self.resolver.entry(Some(host));
        by_host.is_some() && by_host != self.resolver.entry(sni)
    }

    /// Completes the TLS handshake of an accepted connection, within [`HANDSHAKE_TIMEOUT`]. In
    /// permissive mode a connection whose first byte does not start a TLS handshake record is
    /// served in plaintext.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<ServerIo> {
        let handshake = async {
            if self.permissive {
                let mut first = [0u8; 1];
                let n = stream.peek(&mut first).await?;
                if n == 0 || first[0] != TLS_HANDSHAKE_RECORD {
                    return Ok(ServerIo::Plain(stream));
                }
            }
            let tls = TlsAcceptor::from(self.config.clone())
                .accept(stream)
                .await?;
            Ok(ServerIo::Tls(Box::new(tls)))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

// === impl SniResolver ===

/// Picks the certificate of a handshake by SNI: the certificate serving that exact name, then
/// the one serving `*.` + the name without its first label, then the default one (without server
/// names). No match refuses the handshake. rustls hands SNI over in lower case; names are
/// validated lower case.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<Box<str>, Entry>,
    /// By the name without its `*.`.
    wildcard: HashMap<Box<str>, Entry>,
    default: Option<Entry>,
}

/// A certificate and the index of the listener's certificate entry it came from (entries can
/// share a certificate).
#[derive(Debug)]
struct Entry {
    cert: Arc<Watched<CertifiedKey>>,
    index: usize,
}

impl SniResolver {
    /// Adds a certificate for `names` (the default one when empty). Fails on a name (its index)
    /// or default (`None`) already taken.
    pub fn add(
        &mut self,
        names: &[String],
        cert: Arc<Watched<CertifiedKey>>,
        index: usize,
    ) -> Result<(), (Option<usize>, String)> {
        if names.is_empty() {
            if self.default.is_some() {
                return Err((None, "there is already a default certificate".into()));
            }
            self.default = Some(Entry { cert, index });
            return Ok(());
        }
        for (j, name) in names.iter().enumerate() {
            let name = name.to_ascii_lowercase();
            let entry = Entry {
                cert: cert.clone(),
                index,
            };
            let taken = match name.strip_prefix("*.") {
                Some(base) => self.wildcard.insert(base.into(), entry),
                None => self.exact.insert(name.as_str().into(), entry),
            };
            if taken.is_some() {
                return Err((
                    Some(j),
                    format!("{name:?} is served by another certificate"),
                ));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// The certificate for a handshake with this SNI.
    pub fn pick(&self, sni: Option<&str>) -> Option<&Arc<Watched<CertifiedKey>>> {
        self.find(sni).map(|e| &e.cert)
    }

    /// The index of the certificate entry a handshake with this SNI (lower case) gets.
    pub fn entry(&self, sni: Option<&str>) -> Option<usize> {
        self.find(sni).map(|e| e.index)
    }

    fn find(&self, sni: Option<&str>) -> Option<&Entry> {
        let Some(name) = sni else {
            return self.default.as_ref();
        };
        self.exact
            .get(name)
            .or_else(|| {
                name.split_once('.')
                    .and_then(|(_, base)| self.wildcard.get(base))
            })
            .or(self.default.as_ref())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.pick(hello.server_name());
        if picked.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "no certificate for the server name");
        }
        picked.map(|w| w.current())
    }
}

// === impl ClientAuth ===

/// Client certificate validation: the chain must reach the trust bundle in service (reloaded
/// when its file changes) and the certificate must carry one of the subject alternative names
/// (when any are given).
#[derive(Debug)]
struct ClientAuth {
    trust: Arc<Watched<Trust>>,
    mandatory: bool,
    subject_alternative_names: Box<[String]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: the trust bundle can be reloaded, and an empty list asks clients for whatever
    /// certificate they have.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified =
            self.trust
                .current()
                .clients
                .verify_client_cert(end_entity, intermediates, now)?;
        if !has_subject_alternative_name(end_entity, &self.subject_alternative_names) {
            return Err(no_matching_name(&self.subject_alternative_names));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl ServerIo ===

/// An accepted connection: plaintext, or TLS after the handshake.
#[derive(Debug)]
pub enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ServerIo {
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerIo::Tls(_))
    }

    /// The server name the client's ClientHello asked for (SNI), if any.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            ServerIo::Plain(_) => None,
            ServerIo::Tls(s) => s.get_ref().1.server_name(),
        }
    }

    /// The protocol negotiated by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            ServerIo::Plain(_) => None,
            ServerIo::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for ServerIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(s) => s.is_write_vectored(),
            ServerIo::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
