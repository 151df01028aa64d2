//! TLS origination to a cluster's endpoints: the compiled [`ClientTls`] of one cluster, its
//! server certificate verification and client certificate.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bowline_model::ir;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::files::{TlsFiles, Trust, Watched};
use super::{
    ALPN_H2, ALPN_HTTP1, PROTOCOL_VERSIONS, TlsError, has_subject_alternative_name,
    no_matching_name, provider,
};

/// A TLS connection to an endpoint.
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The TLS of one cluster, compiled once per config update.
#[derive(Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// Identifies the settings (server name, files, names, ALPN): connections made with equal
    /// keys are interchangeable, so pools are shared by key.
    key: Arc<str>,
}

// === impl ClientTls ===

impl ClientTls {
    /// Compiles a cluster's TLS settings for HTTP/2 (`h2`, ALPN `h2`) or HTTP/1.1, loading the
    /// files it names that are not loaded yet.
    pub fn compile(
        tls: &ir::UpstreamTls,
        h2: bool,
        files: &TlsFiles,
    ) -> Result<ClientTls, TlsError> {
        let server_name = ServerName::try_from(tls.server_name.as_str())
            .map_err(|e| TlsError::new("tls.serverName", format!("{e}")))?
            .to_owned();
        let trust = if tls.skip_verification {
            None
        } else {
            Some(
                files
                    .trust(Path::new(&tls.trust_chain))
                    .map_err(|e| TlsError::load("tls.trustChain", e))?,
            )
        };
        let client_cert = match &tls.client_certificate {
            None => None,
            Some(c) => Some(
                files
                    .certificate(Path::new(&c.certificate_chain), Path::new(&c.private_key))
                    .map_err(|e| {
                        let field = if e.path == Path::new(&c.private_key) {
                            "privateKey"
                        } else {
                            "certificateChain"
                        };
                        TlsError::load(format!("tls.clientCertificate.{field}"), e)
                    })?,
            ),
        };
        let verifier = Arc::new(UpstreamVerifier {
            trust,
            subject_alternative_names: tls.subject_alternative_names.clone().into(),
            algorithms: provider().signature_verification_algorithms,
        });
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|e| TlsError::new("tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client_cert {
            Some(cert) => builder.with_client_cert_resolver(Arc::new(ClientCert(cert))),
            None => builder.with_no_client_auth(),
        };
        let alpn = if h2 { ALPN_H2 } else { ALPN_HTTP1 };
        config.alpn_protocols = vec![alpn.to_vec()];
        let key = format!(
            "{}|{}|{}|{:?}|{:?}|{}",
            tls.server_name,
            tls.skip_verification,
            tls.trust_chain,
            tls.subject_alternative_names,
            tls.client_certificate
                .as_ref()
                .map(|c| (&c.certificate_chain, &c.private_key)),
            String::from_utf8_lossy(alpn),
        );
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
            key: key.into(),
        })
    }

    /// Identifies these settings; see the field.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// The same settings without ALPN, for connections that carry opaque bytes (tcp
    /// proxying): no application protocol is claimed on the client's behalf.
    pub fn without_alpn(mut self) -> ClientTls {
        Arc::make_mut(&mut self.config).alpn_protocols.clear();
        self.key = format!("{}|no-alpn", self.key).into();
        self
    }

    /// Runs the TLS handshake on a connected socket. A certificate the cluster does not accept
    /// fails with an `InvalidData` error whose source is the rustls error.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<ClientTlsStream> {
        TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }
}

// === impl UpstreamVerifier ===

/// Verifies an endpoint's certificate: it must chain to the trust bundle in service (reloaded
/// when its file changes), and be valid for the server name or, when subject alternative names
/// are given, carry one of them. Without a trust bundle (`skipVerification`) any certificate is
/// accepted; the handshake signatures are still checked, so the peer holds the key of the
/// certificate it showed.
#[derive(Debug)]
struct UpstreamVerifier {
    trust: Option<Arc<Watched<Trust>>>,
    subject_alternative_names: Box<[String]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(trust) = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let trust = trust.current();
        if self.subject_alternative_names.is_empty() {
            return trust.servers.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &trust.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if !has_subject_alternative_name(end_entity, &self.subject_alternative_names) {
            return Err(no_matching_name(&self.subject_alternative_names));
        }
        Ok(ServerCertVerified::assertion())
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

/// The client certificate in service (reloaded when its files change).
#[derive(Debug)]
struct ClientCert(Arc<Watched<CertifiedKey>>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
