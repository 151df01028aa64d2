//! `meshctl validate` run as a process on manifests in temporary directories.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pretty_assertions::assert_eq;

fn meshctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("meshctl runs")
}

fn stdout(o: &Output) -> Vec<String> {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const NODE: &str = r#"apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: red, namespace: app}
spec:
  awsName: red_app
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  serviceDiscovery: {dns: {hostname: red.app.svc.cluster.local}}
"#;

const ROUTER: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: red, namespace: app}
spec: {}
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualRouter
metadata: {name: r, namespace: app}
spec:
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  routes:
    - name: a
      httpRoute:
        match: {prefix: api}
        action:
          weightedTargets: [{virtualNodeRef: {name: red}, weight: 1}]
---
apiVersion: mesh.bowline.io/v1alpha1
kind: VirtualService
metadata: {name: s, namespace: app}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: blue}}}
"#;

#[test]
fn valid_manifests_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "node.yaml", NODE);
    write(dir.path(), "notes.txt", "not a manifest");

    let o = meshctl(&["validate", "-f", "."], dir.path());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        stdout(&o),
        [
            "./node.yaml (document 0): VirtualNode app/red: spec.awsName: ignored: AWS only: App Mesh's name for the object; Bowline uses metadata.name",
            "1 file, 1 object: 0 errors, 1 ignored field",
        ]
    );

    let o = meshctl(&["validate", "--quiet", "-f", "node.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), ["1 file, 1 object: 0 errors, 1 ignored field"]);
}

#[test]
fn invalid_manifests_exit_one_and_name_file_document_and_path() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/node.yaml", NODE);
    write(dir.path(), "b/router.yml", ROUTER);
    write(
        dir.path(),
        "b/empty.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": []}"#,
    );

    let o = meshctl(&["validate", "-f", "b", "-f", "a"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(
        stdout(&o),
        [
            "b/router.yml (document 0): skipped: Deployment red (apps/v1) is not a kind Bowline reads",
            r#"b/router.yml (document 1): VirtualRouter app/r: spec.routes[0].httpRoute.match.prefix: must start with "/""#,
            "b/router.yml (document 2): VirtualService app/s: spec.provider.virtualNode.virtualNodeRef: VirtualNode app/blue does not exist",
            "a/node.yaml (document 0): VirtualNode app/red: spec.awsName: ignored: AWS only: App Mesh's name for the object; Bowline uses metadata.name",
            "3 files, 3 objects, 1 skipped: 2 errors, 1 ignored field",
        ]
    );
}

#[test]
fn references_resolve_across_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "node.yaml", NODE);
    write(dir.path(), "router.yaml", ROUTER);
    let o = meshctl(&["validate", "-q", "-f", "."], dir.path());
    // VirtualNode app/red is in another file: only the missing app/blue is reported.
    assert_eq!(
        stdout(&o),
        [
            r#"./router.yaml (document 1): VirtualRouter app/r: spec.routes[0].httpRoute.match.prefix: must start with "/""#,
            "./router.yaml (document 2): VirtualService app/s: spec.provider.virtualNode.virtualNodeRef: VirtualNode app/blue does not exist",
            "2 files, 3 objects, 1 skipped: 2 errors, 1 ignored field",
        ]
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["validate", "-f", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0}]}\n",
        )
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        [
            "<stdin> (document 0): Service default/s: spec.ports[0].port: must be between 1 and 65535 (got 0)",
            "1 file, 1 object: 1 error, 0 ignored fields",
        ]
    );
}

#[test]
fn unreadable_input_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let o = meshctl(&["validate", "-f", "missing.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("error: reading missing.yaml: "), "{err}");
}
