//! TLS with rustls and the ring provider: termination on listeners ([`ServerTls`]) and
//! origination to clusters ([`ClientTls`]). TLS 1.2 and 1.3 only.
//!
//! * Listeners: certificates chosen by SNI (exact name, then `*.` wildcard, then the default),
//!   ALPN `h2` and `http/1.1`, client certificate validation (mutual TLS) against a trust bundle
//!   and an optional list of subject alternative names, and the App Mesh modes: `strict` (TLS
//!   only), `permissive` (TLS and plaintext on one port, told apart by the first byte).
//! * Clusters: the endpoint's certificate must chain to the cluster's trust bundle and be valid
//!   for its server name (or carry one of its subject alternative names); an optional client
//!   certificate; ALPN `http/1.1` or `h2` after the cluster's protocol.
//!
//! PEM files are loaded once per path by [`TlsFiles`], which outlives config updates, watches the
//! files and reloads them when they change: new handshakes use the new files, open connections
//! are not touched. Compiling a config that names a file that cannot be loaded fails, naming the
//! field and the file.

mod client;
mod files;
mod server;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

pub use self::client::{ClientTls, ClientTlsStream};
pub use self::files::{LoadError, Material, Reloaded, TlsFiles, Trust, Watched};
pub use self::server::{HANDSHAKE_TIMEOUT, ServerIo, ServerTls, SniResolver};

/// The protocol versions offered and accepted: TLS 1.3 and 1.2.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ALPN protocol ids.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The crypto provider of every TLS config: ring, with its default cipher suites.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A TLS setting that cannot be put in service: the field (inside the listener or cluster) and
/// why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

impl TlsError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        TlsError {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A file of the field at `path` that could not be loaded.
    fn load(path: impl Into<String>, e: LoadError) -> Self {
        TlsError::new(path, format!("cannot load {}", e))
    }
}

/// The TLS step of a connection accepted on a listener with `tls` (`None`: plaintext). `None`
/// when the handshake fails or times out (logged at debug: clients fail handshakes routinely).
pub async fn accept(tls: Option<&ServerTls>, stream: TcpStream) -> Option<ServerIo> {
    let Some(tls) = tls else {
        return Some(ServerIo::Plain(stream));
    };
    match tls.accept(stream).await {
        Ok(io) => Some(io),
        Err(error) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
    }
}

/// Whether `cert` carries one of `names` as a subject alternative name: DNS names compared
/// case-insensitively, URIs (anything with a `:` that is not an IP address) and IP addresses
/// exactly. An empty list accepts any certificate.
pub fn has_subject_alternative_name(cert: &CertificateDer<'_>, names: &[String]) -> bool {
    if names.is_empty() {
        return true;
    }
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    names.iter().any(|name| {
        if let Ok(ip) = name.parse::<IpAddr>() {
            ee.verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
                .is_ok()
        } else if name.contains(':') {
            ee.valid_uri_names().any(|uri| uri == name)
        } else {
            ee.valid_dns_names()
                .any(|dns| dns.eq_ignore_ascii_case(name))
        }
    })
}

/// A certificate without any of the subject alternative names asked for.
#[derive(thiserror::Error)]
#[error("the certificate has none of the subject alternative names {0:?}")]
struct NoMatchingName(Vec<String>);

/// rustls shows the `Debug` form of such errors: make it the message.
impl std::fmt::Debug for NoMatchingName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The verification error of a certificate without any of `names`.
fn no_matching_name(names: &[String]) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(NoMatchingName(names.to_vec())),
    )))
}
