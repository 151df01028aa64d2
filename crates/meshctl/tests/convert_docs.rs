//! The `meshctl convert` examples of docs/migrating-from-app-mesh.md and
//! docs/migrating-from-ingress-nginx.md: each page's input converts to exactly the output and the
//! notes the page shows.

use std::path::Path;
use std::process::Command;

use pretty_assertions::assert_eq;

/// The fenced block after `<!-- example: {name} -->` in `docs/{page}`.
fn example(page: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(page);
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- example: {name} -->\n");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("{page}: no {marker}"))
        + marker.len();
    let block = &text[start..];
    let body = &block[block.find('\n').expect("an opening fence") + 1..];
    body[..body.find("```").expect("a closing fence")].to_string()
}

/// Writes the page's input as `file` in a fresh directory and converts it from there, so that
/// the notes name `file` as the page does.
fn check(page: &str, prefix: &str, file: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(file),
        example(page, &format!("{prefix} input")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .current_dir(dir.path())
        .arg("convert")
        .args(args)
        .args(["-f", file])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        example(page, &format!("{prefix} output"))
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        example(page, &format!("{prefix} notes"))
    );
}

#[test]
fn the_app_mesh_migration_example_converts_as_documented() {
    check(
        "migrating-from-app-mesh.md",
        "app-mesh",
        "manifests.yaml",
        &[],
    );
}

#[test]
fn the_ingress_nginx_migration_example_converts_as_documented() {
    check(
        "migrating-from-ingress-nginx.md",
        "ingress-nginx",
        "ingress.yaml",
        &["--from", "ingress-nginx"],
    );
}
