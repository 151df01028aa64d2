//! The App Mesh walkthrough manifests (`/work/shared/corpus/appmesh`, `../shared/corpus` in CI)
//! load without errors: every App Mesh document becomes an object, and the references inside each
//! file resolve (each walkthrough file is self-contained). Skipped when the corpus is absent.
#![cfg(feature = "crd")]

use std::path::{Path, PathBuf};

use bowline_model::manifest::{Kind, Object, Parsed, Severity, Source, parse_file};
use bowline_model::validate;

fn corpus() -> Option<PathBuf> {
    let relative = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    [relative, PathBuf::from("/work/shared/corpus")]
        .into_iter()
        .find(|p| p.join("appmesh").is_dir())
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

struct Loaded {
    errors: Vec<String>,
    ignored: Vec<String>,
    mesh_objects: usize,
    mesh_documents: usize,
}

fn load_appmesh_corpus(root: &Path) -> Loaded {
    let mut files = Vec::new();
    yaml_files(&root.join("appmesh"), &mut files);
    assert!(files.len() >= 30, "only {} corpus files", files.len());
    let mut loaded = Loaded {
        errors: Vec::new(),
        ignored: Vec::new(),
        mesh_objects: 0,
        mesh_documents: 0,
    };
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        loaded.mesh_documents += text
            .lines()
            .filter(|l| l.trim_end() == "apiVersion: appmesh.k8s.aws/v1beta2")
            .count();
        let mut objects: Vec<(Source, Object)> = Vec::new();
        for parsed in parse_file(&file, &text) {
            match parsed {
                Parsed::Object {
                    source,
                    object,
                    problems,
                } => {
                    if !matches!(
                        object.kind(),
                        Kind::Service
                            | Kind::EndpointSlice
                            | Kind::Pod
                            | Kind::Namespace
                            | Kind::Secret
                    ) {
                        loaded.mesh_objects += 1;
                    }
                    for p in problems {
                        assert_eq!(p.severity, Severity::Ignored, "{p}");
                        loaded.ignored.push(p.to_string());
                    }
                    objects.push((source, *object));
                }
                Parsed::Invalid { problems, .. } => {
                    loaded
                        .errors
                        .extend(problems.iter().map(ToString::to_string));
                }
                Parsed::Skipped { .. } => {}
            }
        }
        for p in validate::references(&objects) {
            if p.is_error() {
                loaded.errors.push(p.to_string());
            }
        }
    }
    loaded
}

#[test]
fn appmesh_corpus_loads_without_errors() {
    let Some(root) = corpus() else {
        eprintln!("skipping: no corpus at ../shared/corpus or /work/shared/corpus");
        return;
    };
    let loaded = load_appmesh_corpus(&root);
    assert!(loaded.errors.is_empty(), "{}", loaded.errors.join("\n"));
    assert_eq!(loaded.mesh_objects, loaded.mesh_documents);
    assert!(loaded.mesh_objects >= 200, "{}", loaded.mesh_objects);
}

#[test]
fn appmesh_corpus_reports_aws_only_fields() {
    let Some(root) = corpus() else {
        eprintln!("skipping: no corpus at ../shared/corpus or /work/shared/corpus");
        return;
    };
    let loaded = load_appmesh_corpus(&root);
    let has = |file: &str, needle: &str| {
        loaded
            .ignored
            .iter()
            .any(|p| p.contains(file) && p.contains(needle))
    };
    // Cloud Map discovery is resolved from the Services that select the nodes' pods.
    assert!(!has("howto-k8s-cloudmap", "awsCloudMap: ignored"));
    assert!(has(
        "howto-k8s-tls-acm",
        ".tls.certificate.acm: ignored: AWS only: ACM certificates are not available"
    ));
    // Retry policies, health checks, outlier detection and connection pools are enforced.
    for (file, kind, field) in [
        ("howto-k8s-retry-policy", "VirtualRouter", ".retryPolicy"),
        ("howto-k8s-retry-policy", "VirtualNode", ".healthCheck"),
        (
            "howto-k8s-outlier-detection",
            "VirtualNode",
            ".outlierDetection",
        ),
        (
            "howto-k8s-connection-pools",
            "VirtualNode",
            ".connectionPool",
        ),
    ] {
        let noted = loaded.ignored.iter().any(|p| {
            p.contains(file) && p.contains(kind) && p.contains(&format!("{field}: ignored"))
        });
        assert!(!noted, "{file}: {kind} {field} is enforced");
    }
}
