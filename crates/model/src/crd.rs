//! CustomResourceDefinitions of the mesh kinds (`mesh.bowline.io/v1alpha1`), generated from the
//! Rust types in [`crate::appmesh`].
//!
//! kube-derive turns the schemars schemas into structural schemas (no `$ref`, Option fields
//! `nullable`, no `additionalProperties: false` beside `properties`); [`all`] additionally checks
//! (in tests) that nothing the API server rejects slipped through. `deploy/crds/mesh.bowline.io.yaml`
//! is [`to_yaml`]'s output, written by `cargo xtask gen-crds`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::appmesh::{
    GatewayRoute, Mesh, VirtualGateway, VirtualNode, VirtualRouter, VirtualService,
};

/// Every CRD, in a stable order (the order the resources depend on each other).
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Mesh::crd(),
        VirtualNode::crd(),
        VirtualService::crd(),
        VirtualRouter::crd(),
        VirtualGateway::crd(),
        GatewayRoute::crd(),
    ];
    for crd in &mut crds {
        describe_root_from_spec(crd);
    }
    crds
}

/// kube-derive describes the root schema as "Auto-generated derived type for …"; `kubectl explain`
/// shows that line first, so use the spec's own description (its doc comment) instead.
fn describe_root_from_spec(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let spec_description = root
            .properties
            .as_ref()
            .and_then(|p| p.get("spec"))
            .and_then(|s| s.description.clone());
        if spec_description.is_some() {
            root.description = spec_description;
        }
    }
}

/// All CRDs as one multi-document YAML stream (`---` before each document).
pub fn to_yaml() -> String {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        // Serializing a CustomResourceDefinition (maps, strings, numbers) cannot fail.
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Walks a schema and reports what the Kubernetes API server refuses in a structural schema.
    fn non_structural(path: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let here = format!("{path}.{k}");
                    match k.as_str() {
                        "$ref" | "definitions" | "$defs" | "$schema" | "const" => {
                            out.push(format!("{here}: not allowed"));
                        }
                        "additionalProperties" if m.contains_key("properties") => {
                            out.push(format!("{here}: not allowed beside properties"));
                        }
                        "oneOf" | "anyOf" | "allOf" | "not" => {
                            // Allowed only as value validation: no type, description, default,
                            // additionalProperties or nullable inside.
                            for item in child.as_array().into_iter().flatten() {
                                for bad in ["type", "description", "default", "nullable"] {
                                    if item.get(bad).is_some() {
                                        out.push(format!("{here}: {bad} inside {k}"));
                                    }
                                }
                            }
                        }
                        // `properties` maps field names to schemas: field names are not keywords.
                        "properties" => {
                            for (name, s) in child.as_object().into_iter().flatten() {
                                non_structural(&format!("{here}.{name}"), s, out);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    non_structural(&here, child, out);
                }
                let is_object_schema = m.contains_key("properties");
                if is_object_schema && m.get("type").and_then(Value::as_str) != Some("object") {
                    out.push(format!("{path}: properties without type: object"));
                }
                if m.contains_key("items") && m.get("type").and_then(Value::as_str) != Some("array")
                {
                    out.push(format!("{path}: items without type: array"));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    non_structural(&format!("{path}[{i}]"), x, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn schemas_are_structural() {
        for crd in all() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            for version in &crd.spec.versions {
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .expect("every version has a schema");
                let v = serde_json::to_value(schema).unwrap();
                let mut bad = Vec::new();
                non_structural(&name, &v, &mut bad);
                assert!(bad.is_empty(), "{}", bad.join("\n"));
            }
        }
    }

    #[test]
    fn names_group_and_scope() {
        let got: Vec<(String, String)> = all()
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap(), c.spec.scope.clone()))
            .collect();
        let want = [
            ("meshes.mesh.bowline.io", "Cluster"),
            ("virtualnodes.mesh.bowline.io", "Namespaced"),
            ("virtualservices.mesh.bowline.io", "Namespaced"),
            ("virtualrouters.mesh.bowline.io", "Namespaced"),
            ("virtualgateways.mesh.bowline.io", "Namespaced"),
            ("gatewayroutes.mesh.bowline.io", "Namespaced"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, want);
    }

    #[test]
    fn descriptions_come_from_doc_comments() {
        let yaml = to_yaml();
        assert!(yaml.contains("Consecutive successes before an endpoint is healthy"));
        assert!(yaml.starts_with("---\n"));
        assert!(!yaml.contains("Auto-generated"));
        assert_eq!(yaml.matches("\n---\n").count() + 1, 6);
    }
}
