//! The ingress corpus (`/work/shared/corpus/ingress`, `../shared/corpus/ingress` in CI) loads
//! without errors: every Ingress document becomes an object, and every ingress-nginx annotation
//! it uses (rewrite-target, use-regex, app-root, canary-*) is supported, so none is reported.
//! Skipped when the corpus is absent.
#![cfg(feature = "crd")]

use std::path::{Path, PathBuf};

use bowline_model::manifest::{Kind, Parsed, Severity, parse_file};

fn corpus() -> Option<PathBuf> {
    let relative = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/ingress");
    [relative, PathBuf::from("/work/shared/corpus/ingress")]
        .into_iter()
        .find(|p| p.is_dir())
}

#[test]
fn ingress_corpus_loads_with_every_annotation_supported() {
    let Some(dir) = corpus() else {
        eprintln!("skipping: no ingress corpus");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} corpus files", files.len());
    let (mut errors, mut ignored, mut ingresses, mut documents) = (vec![], vec![], 0, 0);
    let mut files_with_annotations = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("nginx.ingress.kubernetes.io/") {
            files_with_annotations += 1;
        }
        documents += text
            .lines()
            .filter(|l| l.trim_end() == "kind: Ingress")
            .count();
        for parsed in parse_file(&file, &text) {
            match parsed {
                Parsed::Object {
                    object, problems, ..
                } => {
                    if object.kind() == Kind::Ingress {
                        ingresses += 1;
                    }
                    for p in problems {
                        assert_eq!(p.severity, Severity::Ignored, "{p}");
                        ignored.push(p.to_string());
                    }
                }
                Parsed::Invalid { problems, .. } => {
                    errors.extend(problems.iter().map(ToString::to_string));
                }
                Parsed::Skipped { .. } => {}
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(ingresses, documents);
    assert!(ignored.is_empty(), "{ignored:#?}");
    assert!(
        files_with_annotations >= 7,
        "only {files_with_annotations} corpus files use annotations"
    );
}

#[test]
fn an_invalid_ingress_names_file_document_and_field() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: bowline}
spec: {controller: bowline.io/gateway-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules:
    - http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /x, pathType: Regex, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let parsed = parse_file(Path::new("ingress.yaml"), text);
    assert!(
        matches!(&parsed[0], Parsed::Object { object, .. } if object.kind() == Kind::IngressClass)
    );
    let Parsed::Invalid { key, problems, .. } = &parsed[1] else {
        panic!("{:?}", parsed[1]);
    };
    assert_eq!(key.as_ref().unwrap().to_string(), "Ingress shop/web");
    assert_eq!(
        problems[0].to_string(),
        "ingress.yaml (document 1): Ingress shop/web: spec.rules[0].http.paths[1].pathType: must be Exact, Prefix or ImplementationSpecific"
    );
}
