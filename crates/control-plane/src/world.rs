//! The world: one immutable, versioned set of the objects the store currently serves.
//!
//! The store publishes a new [`World`] (behind an `Arc`, through a `tokio::sync::watch`) only
//! when an object actually changed. Translation reads it without locks; every lookup is a
//! `BTreeMap` range, so iteration order (and therefore translation output) is deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;

use bowline_model::appmesh::{
    GatewayRouteSpec, VirtualGatewaySpec, VirtualNodeSpec, VirtualRouterSpec, VirtualServiceSpec,
};
use bowline_model::manifest::{Kind, Object, ObjectKey, Resource, Source};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// One served object and the document it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub source: Source,
    pub object: Arc<Object>,
}

/// An immutable set of objects with a version that grows with every published change.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub version: u64,
    objects: BTreeMap<ObjectKey, Entry>,
}

// === impl World ===

impl World {
    pub fn new(version: u64, objects: BTreeMap<ObjectKey, Entry>) -> Self {
        World { version, objects }
    }

    /// Builds a world from documents in order; a later document with the same key replaces an
    /// earlier one (as a later `kubectl apply` would).
    pub fn from_documents(version: u64, docs: impl IntoIterator<Item = (Source, Object)>) -> Self {
        let objects = docs
            .into_iter()
            .map(|(source, object)| {
                (
                    object.key(),
                    Entry {
                        source,
                        object: Arc::new(object),
                    },
                )
            })
            .collect();
        World { version, objects }
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn objects(&self) -> &BTreeMap<ObjectKey, Entry> {
        &self.objects
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Entry> {
        self.objects.get(&ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// Every object of one kind, ordered by namespace then name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        let start = ObjectKey {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
    }

    /// Every object of one kind in one namespace, ordered by name.
    pub fn of_kind_in(
        &self,
        kind: Kind,
        namespace: &str,
    ) -> impl Iterator<Item = (&ObjectKey, &Entry)> {
        let ns = namespace.to_string();
        let start = ObjectKey {
            kind,
            namespace: ns.clone(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind && k.namespace == ns)
    }

    /// Labels of a namespace: those of its Namespace document plus `kubernetes.io/metadata.name`
    /// (which the Kubernetes API server sets on every namespace). A namespace without a
    /// Namespace document has no labels.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        match self.namespace(namespace) {
            Some(ns) => {
                let mut labels = ns.metadata.labels.clone().unwrap_or_default();
                labels
                    .entry("kubernetes.io/metadata.name".to_string())
                    .or_insert_with(|| namespace.to_string());
                labels
            }
            None => BTreeMap::new(),
        }
    }
}

macro_rules! typed_getters {
    ($($get:ident, $all:ident, $kind:ident, $ty:ty, $variant:ident;)*) => {
        impl World {
            $(
                pub fn $get(&self, namespace: &str, name: &str) -> Option<&$ty> {
                    match self.get(Kind::$kind, namespace, name)?.object.as_ref() {
                        Object::$variant(r) => {
                            let typed: &$ty = std::borrow::Borrow::borrow(r);
                            Some(typed)
                        }
                        _ => None,
                    }
                }

                pub fn $all(&self) -> impl Iterator<Item = (&Entry, &$ty)> {
                    self.of_kind(Kind::$kind).filter_map(|(_, e)| match e.object.as_ref() {
                        Object::$variant(r) => {
                            let typed: &$ty = std::borrow::Borrow::borrow(r);
                            Some((e, typed))
                        }
                        _ => None,
                    })
                }
            )*
        }
    };
}

typed_getters! {
    virtual_gateway, virtual_gateways, VirtualGateway, Resource<VirtualGatewaySpec>, VirtualGateway;
    gateway_route, gateway_routes, GatewayRoute, Resource<GatewayRouteSpec>, GatewayRoute;
    virtual_service, virtual_services, VirtualService, Resource<VirtualServiceSpec>, VirtualService;
    virtual_router, virtual_routers, VirtualRouter, Resource<VirtualRouterSpec>, VirtualRouter;
    virtual_node, virtual_nodes, VirtualNode, Resource<VirtualNodeSpec>, VirtualNode;
    service, services, Service, Service, Service;
    endpoint_slice, endpoint_slices, EndpointSlice, EndpointSlice, EndpointSlice;
    pod, pods, Pod, Pod, Pod;
    secret, secrets, Secret, Secret, Secret;
    ingress, ingresses, Ingress, Ingress, Ingress;
    ingress_class, ingress_classes, IngressClass, IngressClass, IngressClass;
}

impl World {
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.get(Kind::Namespace, "", name)?.object.as_ref() {
            Object::Namespace(n) => Some(n),
            _ => None,
        }
    }

    /// The source of an object, for diagnostics.
    pub fn source_of(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Source> {
        self.get(kind, namespace, name).map(|e| &e.source)
    }
}
