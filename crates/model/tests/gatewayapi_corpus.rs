//! The Gateway API conformance corpus (`/work/shared/corpus/gateway-api`,
//! `../shared/corpus/gateway-api` in CI) loads: every Gateway API document becomes an object,
//! and the attachment rules give the routes of `base.yaml`'s Gateways the status the conformance
//! suite expects. The corpus names the class `conformance-gatewayclass`; a GatewayClass of that
//! name with Bowline's controllerName is added. Skipped when the corpus is absent.
#![cfg(feature = "crd")]

use std::path::{Path, PathBuf};

use bowline_model::gatewayapi::status::{ObjectStatus, analyse};
use bowline_model::manifest::{Object, Parsed, parse_file};

fn corpus() -> Option<PathBuf> {
    let relative = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/gateway-api");
    [relative, PathBuf::from("/work/shared/corpus/gateway-api")]
        .into_iter()
        .find(|p| p.is_dir())
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: conformance-gatewayclass}\nspec: {controllerName: bowline.io/gateway-controller}\n";

/// The objects of `base.yaml`, the class and `file`.
fn load(dir: &Path, file: &str) -> Vec<Object> {
    let mut out = Vec::new();
    for (name, text) in [
        ("class.yaml".to_string(), CLASS.to_string()),
        (
            "base.yaml".into(),
            std::fs::read_to_string(dir.join("base.yaml")).unwrap(),
        ),
        (
            file.to_string(),
            std::fs::read_to_string(dir.join(file)).unwrap(),
        ),
    ] {
        for parsed in parse_file(Path::new(&name), &text) {
            match parsed {
                Parsed::Object { object, .. } => out.push(*object),
                Parsed::Invalid { problems, .. } => {
                    let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    panic!("{}", msgs.join("\n"));
                }
                Parsed::Skipped { .. } => {}
            }
        }
    }
    out
}

fn condition(s: &ObjectStatus, parent: usize, type_: &str) -> (String, String) {
    let c = s.parents[parent]
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap();
    (c.status.clone(), c.reason.clone())
}

fn route<'a>(statuses: &'a [ObjectStatus], name: &str) -> &'a ObjectStatus {
    statuses
        .iter()
        .find(|s| s.kind.ends_with("Route") && s.name == name)
        .unwrap_or_else(|| panic!("no status for route {name}"))
}

#[test]
fn every_corpus_file_loads() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: no gateway-api corpus");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 50, "only {} corpus files", files.len());
    let mut errors = Vec::new();
    let mut objects = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for parsed in parse_file(&file, &text) {
            match parsed {
                Parsed::Object { object, .. } => {
                    if matches!(
                        *object,
                        Object::Gateway(_)
                            | Object::HttpRoute(_)
                            | Object::GrpcRoute(_)
                            | Object::ReferenceGrant(_)
                    ) {
                        objects += 1;
                    }
                }
                Parsed::Invalid { problems, .. } => {
                    errors.extend(problems.iter().map(ToString::to_string))
                }
                Parsed::Skipped { .. } => {}
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(objects >= 100, "only {objects} Gateway API objects");
}

#[test]
fn conformance_statuses() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: no gateway-api corpus");
        return;
    };
    let objects = load(&dir, "httproute-invalid-cross-namespace-backend-ref.yaml");
    let a = analyse(&objects);
    let s = route(&a.statuses, "invalid-cross-namespace-backend-ref");
    assert_eq!(
        condition(s, 0, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        condition(s, 0, "ResolvedRefs"),
        ("False".into(), "RefNotPermitted".into())
    );

    let objects = load(&dir, "httproute-invalid-nonexistent-backendref.yaml");
    let a = analyse(&objects);
    let s = route(&a.statuses, "invalid-nonexistent-backend-ref");
    assert_eq!(
        condition(s, 0, "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );

    let objects = load(&dir, "httproute-invalid-backendref-unknown-kind.yaml");
    let a = analyse(&objects);
    let s = route(&a.statuses, "invalid-backend-ref-unknown-kind");
    assert_eq!(
        condition(s, 0, "ResolvedRefs"),
        ("False".into(), "InvalidKind".into())
    );

    let objects = load(&dir, "httproute-reference-grant.yaml");
    let a = analyse(&objects);
    let s = route(&a.statuses, "reference-grant");
    assert_eq!(
        condition(s, 0, "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );

    // A route in another namespace is not allowed by a `from: Same` listener.
    let objects = load(&dir, "httproute-cross-namespace.yaml");
    let a = analyse(&objects);
    let s = route(&a.statuses, "cross-namespace");
    assert_eq!(
        condition(s, 0, "Accepted"),
        ("True".into(), "Accepted".into())
    );

    // Every base Gateway is accepted and programmed except the HTTPS one (its Secret is
    // generated by the suite at run time, so it is missing here).
    for g in a.statuses.iter().filter(|s| s.kind == "Gateway") {
        let accepted = &g.conditions[0];
        assert_eq!(
            (accepted.type_.as_str(), accepted.status.as_str()),
            ("Accepted", "True"),
            "{g:?}"
        );
        let programmed = g.conditions[1].is_true();
        assert_eq!(
            programmed,
            g.name != "same-namespace-with-https-listener",
            "{g:?}"
        );
    }
}
