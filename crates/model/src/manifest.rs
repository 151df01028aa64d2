//! Reading Kubernetes-style manifests: multi-document YAML or JSON files into typed [`Object`]s.
//!
//! Every document is parsed on its own: a bad document yields [`Problem`]s naming the file, the
//! document index, kind/name and field path, and never prevents the others from loading.
//! Documents of kinds Bowline does not use are reported once as [`Parsed::Skipped`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::{Deserialize, Serialize};

use crate::appmesh::{
    self, GatewayRouteSpec, MeshSpec, VirtualGatewaySpec, VirtualNodeSpec, VirtualRouterSpec,
    VirtualServiceSpec,
};
use crate::gatewayapi;

/// The subset of Kubernetes object metadata Bowline reads. Other metadata fields (uid,
/// creationTimestamp, managedFields, …) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Meta {
    /// The namespace, `default` when unset (as `kubectl apply` does).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A mesh resource: metadata plus its typed spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource<S> {
    /// The apiVersion as written (`mesh.bowline.io/v1alpha1` or `appmesh.k8s.aws/v1beta2`).
    pub api_version: String,
    pub metadata: Meta,
    pub spec: S,
}

/// The kinds Bowline reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Mesh,
    VirtualNode,
    VirtualService,
    VirtualRouter,
    VirtualGateway,
    GatewayRoute,
    Service,
    EndpointSlice,
    Pod,
    Namespace,
    Secret,
    Ingress,
    IngressClass,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mesh => "Mesh",
            Kind::VirtualNode => "VirtualNode",
            Kind::VirtualService => "VirtualService",
            Kind::VirtualRouter => "VirtualRouter",
            Kind::VirtualGateway => "VirtualGateway",
            Kind::GatewayRoute => "GatewayRoute",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Mesh | Kind::Namespace | Kind::IngressClass | Kind::GatewayClass
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed object read from a manifest.
// The mesh variants are large (GatewayRoute ~1.2 KB) but of similar size, and objects are kept in
// collections or boxed ([`Parsed::Object`]); boxing them would only add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Mesh(Resource<MeshSpec>),
    VirtualNode(Resource<VirtualNodeSpec>),
    VirtualService(Resource<VirtualServiceSpec>),
    VirtualRouter(Resource<VirtualRouterSpec>),
    VirtualGateway(Resource<VirtualGatewaySpec>),
    GatewayRoute(Resource<GatewayRouteSpec>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Namespace(Box<Namespace>),
    Secret(Box<Secret>),
    Ingress(Box<Ingress>),
    IngressClass(Box<IngressClass>),
    GatewayClass(gatewayapi::GatewayClass),
    Gateway(gatewayapi::Gateway),
    HttpRoute(gatewayapi::HttpRoute),
    GrpcRoute(gatewayapi::GrpcRoute),
    ReferenceGrant(gatewayapi::ReferenceGrant),
}

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Mesh(_) => Kind::Mesh,
            Object::VirtualNode(_) => Kind::VirtualNode,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::VirtualRouter(_) => Kind::VirtualRouter,
            Object::VirtualGateway(_) => Kind::VirtualGateway,
            Object::GatewayRoute(_) => Kind::GatewayRoute,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
            Object::Secret(_) => Kind::Secret,
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let (ns, name) = match self {
            Object::Mesh(r) => (None, r.metadata.name.clone()),
            Object::VirtualNode(r) => (Some(r.metadata.namespace()), r.metadata.name.clone()),
            Object::VirtualService(r) => (Some(r.metadata.namespace()), r.metadata.name.clone()),
            Object::VirtualRouter(r) => (Some(r.metadata.namespace()), r.metadata.name.clone()),
            Object::VirtualGateway(r) => (Some(r.metadata.namespace()), r.metadata.name.clone()),
            Object::GatewayRoute(r) => (Some(r.metadata.namespace()), r.metadata.name.clone()),
            Object::Service(o) => k8s_ns_name(&o.metadata),
            Object::EndpointSlice(o) => k8s_ns_name(&o.metadata),
            Object::Pod(o) => k8s_ns_name(&o.metadata),
            Object::Namespace(o) => (None, o.metadata.name.clone().unwrap_or_default()),
            Object::Secret(o) => k8s_ns_name(&o.metadata),
            Object::Ingress(o) => k8s_ns_name(&o.metadata),
            Object::IngressClass(o) => (None, o.metadata.name.clone().unwrap_or_default()),
            Object::GatewayClass(o) => (None, o.metadata.name.clone()),
            Object::Gateway(o) => (Some(o.namespace()), o.metadata.name.clone()),
            Object::HttpRoute(o) => (Some(o.namespace()), o.metadata.name.clone()),
            Object::GrpcRoute(o) => (Some(o.namespace()), o.metadata.name.clone()),
            Object::ReferenceGrant(o) => (Some(o.namespace()), o.metadata.name.clone()),
        };
        ObjectKey {
            kind: self.kind(),
            namespace: ns.map(str::to_string).unwrap_or_default(),
            name,
        }
    }
}

fn k8s_ns_name(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (Option<&str>, String) {
    (
        Some(m.namespace.as_deref().unwrap_or("default")),
        m.name.clone().unwrap_or_default(),
    )
}

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Source {
    pub file: PathBuf,
    /// 0-based index of the document within the file.
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or the whole document) is rejected.
    Error,
    /// Accepted; the field has no effect (AWS-only fields, fields outside App Mesh's schema).
    Ignored,
}

/// One problem found in a document, with everything needed to find and fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub severity: Severity,
    pub source: Option<Source>,
    /// `Kind namespace/name` when known.
    pub object: Option<String>,
    /// Field path, such as `spec.routes[1].httpRoute.match.prefix`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            source: None,
            object: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn ignored(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Ignored,
            ..Problem::error(path, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    /// `file (document N): Kind ns/name: path: message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.source {
            write!(f, "{s}: ")?;
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if self.severity == Severity::Ignored {
            write!(f, "ignored: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The outcome of reading one document.
#[derive(Clone, Debug)]
pub enum Parsed {
    /// A usable object; `problems` holds only [`Severity::Ignored`] notes.
    Object {
        source: Source,
        object: Box<Object>,
        problems: Vec<Problem>,
    },
    /// The document is rejected. `key` identifies the object when the header could be read, so
    /// that the last good version of that object can stay in service.
    Invalid {
        source: Source,
        key: Option<ObjectKey>,
        problems: Vec<Problem>,
    },
    /// A kind Bowline does not use (Deployment, ConfigMap, …).
    Skipped {
        source: Source,
        api_version: String,
        kind: String,
        name: String,
    },
}

/// Reads every document of one file's text. `file` is used only for messages.
pub fn parse_file(file: &Path, text: &str) -> Vec<Parsed> {
    let is_json = file.extension().is_some_and(|e| e == "json");
    let mut docs = Vec::new();
    if is_json {
        docs.push(serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string()));
    } else {
        for de in serde_yaml::Deserializer::from_str(text) {
            let doc = serde_yaml::Value::deserialize(de)
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()));
            // After a syntax error serde_yaml's document iterator yields the same error forever:
            // the rest of the file cannot be split into documents, so it is one rejected document.
            let failed = doc.is_err();
            docs.push(doc);
            if failed {
                break;
            }
        }
    }
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            document: i,
        };
        match doc {
            // Empty documents (a trailing `---`) are not documents.
            Ok(serde_json::Value::Null) => {}
            // A JSON `List` (kubectl get -o json) holds items.
            Ok(serde_json::Value::Object(m))
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                let items = m
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default();
                for item in items {
                    out.push(parse_value(source.clone(), item));
                }
            }
            Ok(v) => out.push(parse_value(source, v)),
            Err(e) => out.push(Parsed::Invalid {
                source: source.clone(),
                key: None,
                problems: vec![with_source(
                    Problem::error("", format!("not valid YAML/JSON: {e}")),
                    &source,
                    None,
                )],
            }),
        }
    }
    out
}

fn with_source(mut p: Problem, source: &Source, object: Option<&ObjectKey>) -> Problem {
    p.source = Some(source.clone());
    p.object = object.map(ToString::to_string);
    p
}

/// Reads one document already decoded into a JSON value.
pub fn parse_value(source: Source, value: serde_json::Value) -> Parsed {
    let str_at =
        |v: &serde_json::Value, p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
    let api_version = str_at(&value, "/apiVersion").unwrap_or_default();
    let kind_s = str_at(&value, "/kind").unwrap_or_default();
    let name = str_at(&value, "/metadata/name").unwrap_or_default();
    let namespace = str_at(&value, "/metadata/namespace");
    let invalid = |key: Option<ObjectKey>, problems: Vec<Problem>| Parsed::Invalid {
        source: source.clone(),
        problems: problems
            .into_iter()
            .map(|p| with_source(p, &source, key.as_ref()))
            .collect(),
        key,
    };
    if !value.is_object() {
        return invalid(
            None,
            vec![Problem::error("", "a document must be a mapping")],
        );
    }
    if api_version.is_empty() || kind_s.is_empty() {
        return invalid(
            None,
            vec![Problem::error(
                if api_version.is_empty() {
                    "apiVersion"
                } else {
                    "kind"
                },
                "is required",
            )],
        );
    }
    let Some(kind) = kind_of(&api_version, &kind_s) else {
        return Parsed::Skipped {
            source,
            api_version,
            kind: kind_s,
            name,
        };
    };
    let key = ObjectKey {
        kind,
        namespace: if kind.namespaced() {
            namespace.clone().unwrap_or_else(|| "default".into())
        } else {
            String::new()
        },
        name: name.clone(),
    };
    if name.is_empty() {
        return invalid(
            Some(key),
            vec![Problem::error("metadata.name", "is required")],
        );
    }
    let typed: Result<Object, Problem> = match kind {
        Kind::Mesh => mesh_resource(&value).map(Object::Mesh),
        Kind::VirtualNode => mesh_resource(&value).map(Object::VirtualNode),
        Kind::VirtualService => mesh_resource(&value).map(Object::VirtualService),
        Kind::VirtualRouter => mesh_resource(&value).map(Object::VirtualRouter),
        Kind::VirtualGateway => mesh_resource(&value).map(Object::VirtualGateway),
        Kind::GatewayRoute => mesh_resource(&value).map(Object::GatewayRoute),
        Kind::Service => k8s(&value).map(Object::Service),
        Kind::EndpointSlice => k8s(&value).map(Object::EndpointSlice),
        Kind::Pod => k8s(&value).map(Object::Pod),
        Kind::Namespace => k8s(&value).map(Object::Namespace),
        Kind::Secret => k8s(&value).map(Object::Secret),
        Kind::Ingress => k8s(&value).map(Object::Ingress),
        Kind::IngressClass => k8s(&value).map(Object::IngressClass),
        Kind::GatewayClass => gatewayapi::parse(&value).map(Object::GatewayClass),
        Kind::Gateway => gatewayapi::parse(&value).map(Object::Gateway),
        Kind::HttpRoute => gatewayapi::parse(&value).map(Object::HttpRoute),
        Kind::GrpcRoute => gatewayapi::parse(&value).map(Object::GrpcRoute),
        Kind::ReferenceGrant => gatewayapi::parse(&value).map(Object::ReferenceGrant),
    };
    let object = match typed {
        Ok(o) => o,
        Err(p) => return invalid(Some(key), vec![p]),
    };
    let problems = crate::validate::object(&object);
    if problems.iter().any(Problem::is_error) {
        return invalid(Some(key), problems);
    }
    Parsed::Object {
        problems: problems
            .into_iter()
            .map(|p| with_source(p, &source, Some(&key)))
            .collect(),
        source,
        object: Box::new(object),
    }
}

/// Maps apiVersion + kind to a kind Bowline reads, `None` for kinds it skips.
pub fn kind_of(api_version: &str, kind: &str) -> Option<Kind> {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match (group, kind) {
        (appmesh::GROUP | "appmesh.k8s.aws", k) => Some(match k {
            "Mesh" => Kind::Mesh,
            "VirtualNode" => Kind::VirtualNode,
            "VirtualService" => Kind::VirtualService,
            "VirtualRouter" => Kind::VirtualRouter,
            "VirtualGateway" => Kind::VirtualGateway,
            "GatewayRoute" => Kind::GatewayRoute,
            _ => return None,
        }),
        ("", "Service") => Some(Kind::Service),
        ("", "Namespace") => Some(Kind::Namespace),
        ("", "Secret") => Some(Kind::Secret),
        ("", "Pod") => Some(Kind::Pod),
        ("discovery.k8s.io", "EndpointSlice") => Some(Kind::EndpointSlice),
        ("networking.k8s.io", "Ingress") => Some(Kind::Ingress),
        ("networking.k8s.io", "IngressClass") => Some(Kind::IngressClass),
        (gatewayapi::GROUP, k) => Some(match k {
            "GatewayClass" => Kind::GatewayClass,
            "Gateway" => Kind::Gateway,
            "HTTPRoute" => Kind::HttpRoute,
            "GRPCRoute" => Kind::GrpcRoute,
            "ReferenceGrant" => Kind::ReferenceGrant,
            _ => return None,
        }),
        _ => None,
    }
}

/// Whether the apiVersion of a mesh kind is one Bowline reads.
fn supported_mesh_version(api_version: &str) -> bool {
    api_version == appmesh::API_VERSION || api_version == appmesh::APPMESH_API_VERSION
}

fn mesh_resource<S: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<Resource<S>, Problem> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
    if !supported_mesh_version(&api_version) {
        return Err(Problem::error(
            "apiVersion",
            format!(
                "{api_version:?} is not supported; use {:?} (or {:?})",
                appmesh::API_VERSION,
                appmesh::APPMESH_API_VERSION
            ),
        ));
    }
    let (metadata, spec) = meta_and_spec(value)?;
    Ok(Resource {
        api_version,
        metadata,
        spec,
    })
}

/// The metadata and typed spec of a custom resource document whose top-level fields must be
/// `apiVersion`, `kind`, `metadata`, `spec` and `status` (errors name the field path).
pub(crate) fn meta_and_spec<S: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<(Meta, S), Problem> {
    let metadata: Meta = serde_json::from_value(value.get("metadata").cloned().unwrap_or_default())
        .map_err(|e| Problem::error("metadata", e.to_string()))?;
    if let Some(obj) = value.as_object() {
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            ) {
                return Err(Problem::error(k.clone(), "unknown field"));
            }
        }
    }
    let spec_value = value
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let spec: S = serde_path_to_error::deserialize(spec_value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        Problem::error(path, clean_serde_message(&e.inner().to_string()))
    })?;
    Ok((metadata, spec))
}

fn k8s<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<Box<T>, Problem> {
    serde_path_to_error::deserialize(value.clone())
        .map(Box::new)
        .map_err(|e| {
            let path = e.path().to_string();
            Problem::error(
                if path == "." { String::new() } else { path },
                clean_serde_message(&e.inner().to_string()),
            )
        })
}

/// serde's messages mention line/column of the JSON value, which mean nothing to the user.
fn clean_serde_message(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_ends_the_file_and_keeps_the_documents_before_it() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
        let parsed = parse_file(Path::new("bad.yaml"), text);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert!(matches!(&parsed[0], Parsed::Object { object, .. } if object.key().name == "a"));
        let Parsed::Invalid {
            source, problems, ..
        } = &parsed[1]
        else {
            panic!("{:?}", parsed[1]);
        };
        assert_eq!(source.document, 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("bad.yaml (document 1): not valid YAML/JSON"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn unknown_spec_field_names_its_path() {
        let text = "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualService\nmetadata: {name: s, namespace: n}\nspec:\n  provider:\n    virtualNode:\n      virtualNodeRef: {name: x}\n      bogus: 1\n";
        let parsed = parse_file(Path::new("s.yaml"), text);
        let Parsed::Invalid { problems, key, .. } = &parsed[0] else {
            panic!("{parsed:?}");
        };
        assert_eq!(key.as_ref().map(|k| k.name.as_str()), Some("s"));
        assert_eq!(problems[0].path, "spec.provider.virtualNode.bogus");
        assert!(
            problems[0].message.contains("unknown field `bogus`"),
            "{}",
            problems[0]
        );
    }
}
