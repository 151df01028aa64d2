//! `meshctl convert` on the App Mesh walkthroughs of the corpus (`/work/shared/corpus/appmesh`,
//! `../shared/corpus` in CI): the output validates, keeps the non-App-Mesh documents as they were,
//! and the control plane translates it to the same IR as the unchanged input. Skipped when the
//! corpus is absent.
//!
//! Only gateways have a translation, and most walkthroughs have no VirtualGateway; so both the
//! input and the output get the same probe appended: a VirtualGateway per namespace and one
//! GatewayRoute per VirtualService, which makes the translation resolve every service, router,
//! route and node of the walkthrough.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bowline_control_plane::discovery::DnsTable;
use bowline_control_plane::translate::{self, Inputs};
use bowline_control_plane::world::World;
use bowline_model::ir;
use bowline_model::manifest::{Kind, Object, Parsed, parse_file};
use pretty_assertions::assert_eq;

fn corpus() -> Option<PathBuf> {
    let relative = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    [relative, PathBuf::from("/work/shared/corpus")]
        .into_iter()
        .find(|p| p.join("appmesh").is_dir())
}

fn walkthrough_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("appmesh"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut yaml: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        yaml.sort();
        files.extend(yaml);
    }
    files
}

fn meshctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Every object of `text`, which must have no invalid document.
fn objects(file: &str, text: &str) -> Vec<Object> {
    parse_file(Path::new(file), text)
        .into_iter()
        .filter_map(|p| match p {
            Parsed::Object { object, .. } => Some(*object),
            Parsed::Skipped { .. } => None,
            Parsed::Invalid { problems, .. } => panic!("{file}: {problems:?}"),
        })
        .collect()
}

/// A VirtualGateway `convert-probe` in each namespace with a VirtualService, and a GatewayRoute
/// `/pN/` to each VirtualService.
fn probe(objects: &[Object]) -> String {
    let services: Vec<(String, String)> = objects
        .iter()
        .filter(|o| o.kind() == Kind::VirtualService)
        .map(|o| (o.key().namespace, o.key().name))
        .collect();
    let namespaces: BTreeSet<&str> = services.iter().map(|(ns, _)| ns.as_str()).collect();
    let mut text = String::new();
    for ns in namespaces {
        text.push_str(&format!(
            "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualGateway\nmetadata: {{name: convert-probe, namespace: {ns}}}\nspec:\n  listeners:\n    - portMapping: {{port: 18080, protocol: http}}\n"
        ));
    }
    for (i, (ns, name)) in services.iter().enumerate() {
        text.push_str(&format!(
            "---\napiVersion: mesh.bowline.io/v1alpha1\nkind: GatewayRoute\nmetadata: {{name: convert-probe-{i}, namespace: {ns}}}\nspec:\n  virtualGatewayRef: {{name: convert-probe, namespace: {ns}}}\n  httpRoute:\n    match: {{prefix: /p{i}/}}\n    action:\n      target: {{virtualService: {{virtualServiceRef: {{name: {name:?}}}}}}}\n"
        ));
    }
    text
}

/// The snapshot and diagnostics (without their file location) of every VirtualGateway.
fn translate_gateways(objects: Vec<Object>) -> Vec<(String, ir::Snapshot, Vec<String>)> {
    let docs = objects.into_iter().enumerate().map(|(i, o)| {
        (
            bowline_model::manifest::Source {
                file: "manifests.yaml".into(),
                document: i,
            },
            o,
        )
    });
    let world = World::from_documents(1, docs);
    let dns = DnsTable::default();
    let inputs = Inputs {
        world: &world,
        dns: &dns,
    };
    world
        .virtual_gateways()
        .map(|(_, gw)| {
            let ns = gw.metadata.namespace();
            let t = translate::gateway(&inputs, ns, &gw.metadata.name);
            let diagnostics = t
                .diagnostics
                .iter()
                .map(|d| format!("{}: {}: {}", d.object, d.path, d.message))
                .collect();
            (
                format!("{ns}/{}", gw.metadata.name),
                t.snapshot,
                diagnostics,
            )
        })
        .collect()
}

#[test]
fn converted_walkthroughs_validate_and_translate_to_the_same_ir() {
    let Some(root) = corpus() else {
        eprintln!("skipping: no corpus at ../shared/corpus or /work/shared/corpus");
        return;
    };
    let files = walkthrough_files(&root);
    assert!(files.len() >= 30, "only {} corpus files", files.len());
    let mut dropped = 0;
    // Files whose translation reaches a node (a file without a VirtualService has none).
    let mut translated = 0;
    for file in &files {
        let name = file.display().to_string();
        let (ok, converted, notes) = meshctl(&["convert", "-f", &name]);
        assert!(ok, "{name}: {notes}");
        assert!(
            !converted.contains("apiVersion: appmesh.k8s.aws/"),
            "{name}: App Mesh apiVersion left:\n{converted}"
        );
        dropped += notes.lines().filter(|l| l.contains(": dropped: ")).count();
        for line in notes.lines() {
            assert!(
                line.starts_with(&format!("{name} (document ")),
                "{name}: note without location: {line}"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("converted.yaml");
        std::fs::write(&out, &converted).unwrap();
        let (ok, report, _) = meshctl(&["validate", "-q", "-f", &out.display().to_string()]);
        assert!(
            ok,
            "{name}: the converted manifests do not validate:\n{report}"
        );

        let input = std::fs::read_to_string(file).unwrap();
        let before = objects(&name, &input);
        let after = objects("converted.yaml", &converted);
        assert_eq!(before.len(), after.len(), "{name}: object count");
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.key(), a.key(), "{name}: order");
            if !matches!(
                b.kind(),
                Kind::Mesh
                    | Kind::VirtualNode
                    | Kind::VirtualService
                    | Kind::VirtualRouter
                    | Kind::VirtualGateway
                    | Kind::GatewayRoute
            ) {
                assert_eq!(b, a, "{name}: a Kubernetes object changed");
            }
        }

        let probe_text = probe(&before);
        let with_probe = |text: &str| objects(&name, &format!("{text}\n{probe_text}"));
        let ir_before = translate_gateways(with_probe(&input));
        let ir_after = translate_gateways(with_probe(&converted));
        assert_eq!(ir_before, ir_after, "{name}: the IR differs");
        if ir_before.iter().any(|(_, s, _)| !s.clusters.is_empty()) {
            translated += 1;
        }
    }
    assert!(dropped > 0, "no walkthrough had an AWS-only field to drop");
    assert!(
        translated >= 25,
        "only {translated} files translated to clusters"
    );
}

#[test]
fn output_dir_mirrors_the_inputs_and_invalid_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::write(
        input.join("sub/mesh.json"),
        r#"{"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": "Mesh", "metadata": {"name": "m"}, "spec": {"awsName": "m", "namespaceSelector": {"matchLabels": {"mesh": "m"}}}}"#,
    )
    .unwrap();
    std::fs::write(
        input.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec:\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (ok, stdout, notes) = meshctl(&[
        "convert",
        "-f",
        &input.display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    assert!(ok, "{notes}");
    assert_eq!(stdout, "");
    assert_eq!(
        std::fs::read_to_string(out.join("sub/mesh.yaml")).unwrap(),
        "apiVersion: mesh.bowline.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\nspec:\n  namespaceSelector:\n    matchLabels:\n      mesh: m\n"
    );
    assert!(
        notes.contains("mesh.json (document 0): Mesh m: spec.awsName: dropped: AWS only:"),
        "{notes}"
    );
    assert!(
        std::fs::read_to_string(out.join("svc.yaml"))
            .unwrap()
            .starts_with("apiVersion: v1\nkind: Service\n")
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualRouter\nmetadata: {name: r, namespace: a}\nspec:\n  listeners: [{portMapping: {port: 99999, protocol: http}}]\n",
    )
    .unwrap();
    let (ok, stdout, notes) = meshctl(&["convert", "-f", &bad.display().to_string()]);
    assert!(!ok);
    assert_eq!(stdout, "");
    assert!(
        notes.contains(
            "bad.yaml (document 1): VirtualRouter a/r: spec.listeners[0].portMapping.port:"
        ),
        "{notes}"
    );
}

#[test]
fn two_inputs_for_one_output_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    std::fs::write(dir.path().join("a.yaml"), ns).unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let (ok, _, notes) = meshctl(&[
        "convert",
        "-f",
        &dir.path().display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    assert!(!ok);
    assert!(notes.contains("would both be written as a.yaml"), "{notes}");
    assert!(!out.exists());
}
