//! Golden tests: `testdata/ingress/<case>/input.yaml` → `expected.yaml`, the translation of
//! class `bowline` on ports 80 and 443 with the TLS directory `/run/bowline/ingress-tls`.
//! `BLESS=1 cargo test -p bowline-control-plane` rewrites the expected files.

use std::path::{Path, PathBuf};

use bowline_model::ir;
use pretty_assertions::assert_eq;
use serde::{Deserialize, Serialize};

use super::*;
use crate::discovery::DnsTable;
use crate::translate::tests::{golden_cases, world_from};
use crate::world::World;

const TLS_DIR: &str = "/run/bowline/ingress-tls";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expected {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<String>,
    /// Paths of the TLS files to write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
    snapshot: ir::Snapshot,
}

fn target() -> IngressTarget {
    IngressTarget {
        class: "bowline".into(),
        http_port: 80,
        https_port: 443,
    }
}

fn run(world: &World) -> IngressTranslation {
    let dns = DnsTable::default();
    ingress(&Inputs { world, dns: &dns }, &target(), Path::new(TLS_DIR))
}

fn expected_of(t: &IngressTranslation) -> Expected {
    Expected {
        diagnostics: t
            .translation
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
        ignored: t.ignored.clone(),
        files: t
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect(),
        snapshot: t.translation.snapshot.clone(),
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/testdata/ingress")
}

#[test]
fn golden() {
    golden_cases(&testdata(), 3, |_, world| expected_of(&run(world)));
}

#[test]
fn prefix_paths_match_element_wise() {
    assert_eq!(normalize_prefix("/foo/"), "/foo");
    assert_eq!(normalize_prefix(""), "/");
    assert_eq!(normalize_prefix("///"), "/");
    assert_eq!(
        path_matches(PathKind::Prefix, "/foo"),
        [
            ir::PathMatch::Exact("/foo".into()),
            ir::PathMatch::Prefix("/foo/".into())
        ]
    );
    assert_eq!(
        path_matches(PathKind::Prefix, "/"),
        [ir::PathMatch::Prefix("/".into())]
    );
    assert_eq!(
        path_matches(PathKind::Exact, "/foo/"),
        [ir::PathMatch::Exact("/foo/".into())]
    );
}

#[test]
fn tls_files_are_written_only_for_usable_secrets() {
    let world = world_from(
        "input.yaml",
        &std::fs::read_to_string(testdata().join("tls/input.yaml")).unwrap(),
    );
    let t = run(&world);
    // Two usable Secrets, two files each; the bad ones produce none.
    assert_eq!(t.files.len(), 4);
    for f in &t.files {
        assert!(f.path.starts_with(TLS_DIR));
        assert!(
            std::str::from_utf8(&f.contents)
                .unwrap()
                .contains("-----BEGIN")
        );
    }
}

#[test]
fn merge_drops_ingress_listeners_on_ports_the_gateway_uses() {
    let mut base = Translation::default();
    base.snapshot
        .listeners
        .push(listener(80, "gateway/x/y/80", None));
    let mut extra = Translation::default();
    extra
        .snapshot
        .listeners
        .push(listener(80, "ingress/bowline", None));
    extra
        .snapshot
        .listeners
        .push(listener(443, "ingress/bowline", None));
    merge(&mut base, extra);
    let ports: Vec<(u16, &str)> = base
        .snapshot
        .listeners
        .iter()
        .map(|l| (l.port, l.route_table.as_str()))
        .collect();
    assert_eq!(ports, [(443, "ingress/bowline"), (80, "gateway/x/y/80")]);
    assert_eq!(base.diagnostics.len(), 1);
}
