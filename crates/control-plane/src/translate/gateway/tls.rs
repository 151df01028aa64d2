//! TLS of a VirtualGateway or a sidecar (a VirtualNode's), with App Mesh semantics.
//!
//! * Listener `tls` → [`ir::ListenerTls`]: `certificate.file` is the default certificate, the
//!   Bowline extension `certificates[]` adds certificates chosen by SNI, `validation.trust.file`
//!   and `subjectAlternativeNames.match.exact` validate client certificates, `mode` is kept.
//!   A listener whose TLS needs what Bowline does not have (ACM or SDS certificates, SDS trust),
//!   or whose TLS is invalid, is not served at all: serving it in plaintext or without client
//!   validation would silently weaken it.
//! * `backendDefaults.clientPolicy.tls` → [`ir::UpstreamTls`] of every cluster the gateway sends
//!   to (App Mesh applies a gateway's backend defaults to all its backends; a sidecar takes a
//!   backend's own `clientPolicy.tls` before its node's defaults), unless
//!   `enforce: false` or `ports` leaves the cluster's port out. The server name is the node's DNS
//!   hostname (`<serviceName>.<namespaceName>` under AWS Cloud Map discovery). A cluster the policy applies to but that cannot be verified as asked (ACM or SDS
//!   trust, an SDS client certificate, a node without a DNS hostname) gets no endpoints: its
//!   requests fail rather than go out unverified.

use bowline_model::appmesh::{ClientPolicyTls, ListenerTls, SubjectAlternativeNames, TlsMode};
use bowline_model::ir;
use bowline_model::manifest::{Kind, Resource};

use super::{At, ClusterSpec, Cx};

impl Cx<'_> {
    /// The TLS of the gateway listener at `at` (`spec.listeners[i]`): `Ok(None)` plaintext,
    /// `Err(())` when the listener must not be served (a diagnostic says why).
    pub(super) fn listener_tls(
        &mut self,
        at: At<'_>,
        tls: Option<&ListenerTls>,
    ) -> Result<Option<ir::ListenerTls>, ()> {
        let Some(tls) = tls else {
            return Ok(None);
        };
        let mode = match tls.mode {
            TlsMode::Strict => ir::TlsMode::Strict,
            TlsMode::Permissive => ir::TlsMode::Permissive,
            TlsMode::Disabled => {
                return Ok(Some(ir::ListenerTls {
                    mode: ir::TlsMode::Disabled,
                    ..Default::default()
                }));
            }
        };
        let cert = &tls.certificate;
        if cert.acm.is_some() {
            self.diag_at(
                at,
                "tls.certificate.acm",
                "ACM certificates are not available in Bowline; listener not served",
            );
            return Err(());
        }
        if cert.sds.is_some() {
            self.diag_at(
                at,
                "tls.certificate.sds",
                "SDS certificates are not available in Bowline; listener not served",
            );
            return Err(());
        }
        let mut certificates = Vec::new();
        if let Some(f) = &cert.file {
            certificates.push(ir::TlsCertificate {
                certificate_chain: f.certificate_chain.clone(),
                private_key: f.private_key.clone(),
                server_names: Vec::new(),
            });
        }
        for c in tls.certificates.iter().flatten() {
            certificates.push(ir::TlsCertificate {
                certificate_chain: c.file.certificate_chain.clone(),
                private_key: c.file.private_key.clone(),
                server_names: c
                    .server_names
                    .iter()
                    .flatten()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
            });
        }
        let client_validation = match &tls.validation {
            None => None,
            Some(v) => match &v.trust.file {
                Some(f) => Some(ir::TlsValidation {
                    trust_chain: f.certificate_chain.clone(),
                    subject_alternative_names: exact_names(v.subject_alternative_names.as_ref()),
                }),
                None => {
                    self.diag_at(
                        at,
                        "tls.validation.trust",
                        "only file trust can validate client certificates in Bowline; listener \
                         not served",
                    );
                    return Err(());
                }
            },
        };
        let out = ir::ListenerTls {
            mode,
            certificates,
            client_validation,
            detect_misdirected: false,
        };
        if let Err(e) = out.check() {
            let sub = listener_field(&e.path, cert.file.is_some());
            self.diag_at(at, &sub, format!("{}; listener not served", e.reason));
            return Err(());
        }
        Ok(Some(out))
    }

    /// The TLS of a cluster under the gateway's client policy: `Ok(None)` plaintext, `Err(())`
    /// when its requests must not be sent (a diagnostic says why).
    pub(super) fn cluster_tls(
        &mut self,
        gateway: At<'_>,
        path: &str,
        policy: &ClientPolicyTls,
        cluster: &str,
        c: &ClusterSpec,
    ) -> Result<Option<ir::UpstreamTls>, ()> {
        if policy.enforce == Some(false) {
            return Ok(None);
        }
        if let Some(ports) = policy.ports.as_deref()
            && !ports.is_empty()
            && !ports.contains(&i64::from(c.port))
        {
            return Ok(None);
        }
        let refused = format!("requests to {cluster} are refused (rather than sent unverified)");
        let Some(trust) = &policy.validation.trust.file else {
            self.diag_at(
                gateway,
                &format!("{path}.validation.trust"),
                format!("only file trust is available in Bowline; {refused}"),
            );
            return Err(());
        };
        let client_certificate = match &policy.certificate {
            None => None,
            Some(cert) => match &cert.file {
                Some(f) => Some(ir::TlsClientCertificate {
                    certificate_chain: f.certificate_chain.clone(),
                    private_key: f.private_key.clone(),
                }),
                None => {
                    self.diag_at(
                        gateway,
                        &format!("{path}.certificate"),
                        format!("only file certificates are available in Bowline; {refused}"),
                    );
                    return Err(());
                }
            },
        };
        let node: Option<&Resource<_>> = self.inputs.world.virtual_node(&c.namespace, &c.node);
        // The DNS hostname, or the name AWS Cloud Map gives a service in a DNS namespace.
        let discovery = node.and_then(|n| n.spec.service_discovery.as_ref());
        let hostname = discovery
            .and_then(|sd| sd.dns.as_ref())
            .map(|dns| dns.hostname.to_ascii_lowercase())
            .or_else(|| {
                discovery
                    .and_then(|sd| sd.aws_cloud_map.as_ref())
                    .map(|cm| format!("{}.{}", cm.service_name, cm.namespace_name))
                    .map(|n| n.to_ascii_lowercase())
            });
        let Some(server_name) = hostname else {
            self.diag(
                Kind::VirtualNode,
                &c.namespace,
                &c.node,
                "spec.serviceDiscovery",
                format!(
                    "no DNS hostname to verify the node's certificate against (the \
                     client policy asks for TLS); {refused}"
                ),
            );
            return Err(());
        };
        let out = ir::UpstreamTls {
            server_name,
            trust_chain: trust.certificate_chain.clone(),
            subject_alternative_names: exact_names(
                policy.validation.subject_alternative_names.as_ref(),
            ),
            client_certificate,
            skip_verification: false,
        };
        if let Err(e) = out.check() {
            let message = format!("{}; {refused}", e.reason);
            if e.path == "serverName" {
                self.diag(
                    Kind::VirtualNode,
                    &c.namespace,
                    &c.node,
                    "spec.serviceDiscovery.dns.hostname",
                    message,
                );
            } else {
                let field = match e.path.as_str() {
                    "trustChain" => "validation.trust.file.certificateChain".to_string(),
                    p => match p.strip_prefix("subjectAlternativeNames") {
                        Some(index) => {
                            format!("validation.subjectAlternativeNames.match.exact{index}")
                        }
                        None => p.replacen("clientCertificate.", "certificate.file.", 1),
                    },
                };
                self.diag_at(gateway, &format!("{path}.{field}"), message);
            }
            return Err(());
        }
        Ok(Some(out))
    }
}

/// The resource field (under the listener) of a field of its [`ir::ListenerTls`]: the IR's
/// certificates are `certificate` (when it has a file) followed by `certificates[]`.
fn listener_field(ir_path: &str, has_certificate: bool) -> String {
    if let Some(rest) = ir_path.strip_prefix("certificates[")
        && let Some((index, field)) = rest.split_once(']')
        && let Ok(index) = index.parse::<usize>()
    {
        let field = match field {
            ".certificateChain" | ".privateKey" => format!(".file{field}"),
            other => other.to_string(),
        };
        return match (has_certificate, index) {
            (true, 0) => format!("tls.certificate{field}"),
            (true, i) => format!("tls.certificates[{}]{field}", i - 1),
            (false, i) => format!("tls.certificates[{i}]{field}"),
        };
    }
    match ir_path {
        "certificates" => "tls.certificate".into(),
        "clientValidation.trustChain" => "tls.validation.trust.file.certificateChain".into(),
        p => match p.strip_prefix("clientValidation.subjectAlternativeNames") {
            Some(index) => format!("tls.validation.subjectAlternativeNames.match.exact{index}"),
            None => format!("tls.{p}"),
        },
    }
}

fn exact_names(sans: Option<&SubjectAlternativeNames>) -> Vec<String> {
    sans.and_then(|s| s.matchers.exact.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::listener_field;

    #[test]
    fn ir_fields_map_back_to_the_resource() {
        for (ir_path, has_certificate, field) in [
            ("certificates", false, "tls.certificate"),
            (
                "certificates[0].certificateChain",
                true,
                "tls.certificate.file.certificateChain",
            ),
            (
                "certificates[2].serverNames[1]",
                true,
                "tls.certificates[1].serverNames[1]",
            ),
            (
                "certificates[2].privateKey",
                false,
                "tls.certificates[2].file.privateKey",
            ),
            ("certificates[0]", false, "tls.certificates[0]"),
            (
                "clientValidation.trustChain",
                true,
                "tls.validation.trust.file.certificateChain",
            ),
            (
                "clientValidation.subjectAlternativeNames[3]",
                true,
                "tls.validation.subjectAlternativeNames.match.exact[3]",
            ),
        ] {
            assert_eq!(listener_field(ir_path, has_certificate), field, "{ir_path}");
        }
    }
}
