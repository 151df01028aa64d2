//! `meshctl convert`: rewrites manifests for Bowline.
//!
//! - App Mesh (the default): every `appmesh.k8s.aws/v1beta2` document becomes
//!   `mesh.bowline.io/v1alpha1` with the same spec minus the fields that only mean something on
//!   AWS; every other document passes through unchanged. Each dropped (or kept) AWS-only field is
//!   listed on standard error as `file (document N): Kind ns/name: field.path: reason`.
//! - ingress-nginx ([`crate::convert_nginx`]): Ingress objects become Gateway API objects.
//!
//! Documents come out in input order, as multi-document YAML on standard output or one file per
//! input under `-o DIR`. Field order is kept (YAML mappings are ordered); comments are not.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bowline_model::appmesh;
use bowline_model::manifest::{self, Kind, Parsed, Problem, Source};
use bowline_model::validate::AWS_ONLY;
use serde::Deserialize;
use serde_yaml::Value;

use crate::validate::{collect, read};

/// What `convert` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// App Mesh `appmesh.k8s.aws/v1beta2` manifests → `mesh.bowline.io/v1alpha1`.
    AppMesh,
    /// `networking.k8s.io/v1` Ingress with ingress-nginx annotations → Gateway API.
    IngressNginx,
}

/// One input file: where it came from, where its output goes, its documents in order.
pub(crate) struct InputFile {
    /// The name used in messages (`<stdin>` for `-`).
    pub name: PathBuf,
    /// The path under `-o DIR`.
    pub out: PathBuf,
    pub docs: Vec<Doc>,
}

/// One document of a file; `index` is the 0-based document index of the messages.
pub(crate) struct Doc {
    pub index: usize,
    pub value: Value,
}

impl Doc {
    pub fn source(&self, file: &Path) -> Source {
        Source {
            file: file.to_path_buf(),
            document: self.index,
        }
    }
}

/// What a conversion found besides its output.
#[derive(Default)]
pub(crate) struct Notes {
    /// Fields and annotations not carried over, one line each.
    pub notes: Vec<String>,
    /// Problems that make the input unusable; any one of them means no output and exit 1.
    pub errors: Vec<String>,
}

/// Converts `inputs` (files, directories, `-`) and writes the result to standard output or under
/// `output`. Exit status: 0 on success, 1 when an input is invalid (nothing is written).
pub fn run(inputs: &[PathBuf], output: Option<&Path>, from: From) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    let mut notes = Notes::default();
    for input in inputs {
        read_input(input, &mut files, &mut notes)?;
    }
    let outputs: Vec<Vec<Value>> = if notes.errors.is_empty() {
        match from {
            From::AppMesh => files
                .iter()
                .map(|f| {
                    f.docs
                        .iter()
                        .map(|d| appmesh_document(&d.source(&f.name), &d.value, &mut notes))
                        .collect()
                })
                .collect(),
            From::IngressNginx => crate::convert_nginx::convert(&files, &mut notes),
        }
    } else {
        Vec::new()
    };
    let mut err = std::io::stderr().lock();
    for line in notes.notes.iter().chain(&notes.errors) {
        writeln!(err, "{line}")?;
    }
    if !notes.errors.is_empty() {
        writeln!(
            err,
            "error: {} invalid document(s); nothing written",
            notes.errors.len()
        )?;
        return Ok(ExitCode::FAILURE);
    }
    match output {
        None => {
            let mut out = std::io::stdout().lock();
            let docs: Vec<&Value> = outputs.iter().flatten().collect();
            out.write_all(render(docs)?.as_bytes())?;
            out.flush()?;
        }
        Some(dir) => {
            for (file, docs) in files.iter().zip(&outputs) {
                let path = dir.join(&file.out);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&path, render(docs.iter())?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Multi-document YAML: every document, `---` between them.
fn render<'a>(docs: impl IntoIterator<Item = &'a Value>) -> anyhow::Result<String> {
    let mut text = String::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        text.push_str(&serde_yaml::to_string(doc).context("rendering YAML")?);
    }
    Ok(text)
}

/// Reads one `-f` argument into `files`, each with its path under `-o DIR`: a file's own name,
/// or its path relative to the directory given (`.json` files come out as `.yaml`).
fn read_input(input: &Path, files: &mut Vec<InputFile>, notes: &mut Notes) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    collect(input, &mut paths)?;
    for path in paths {
        let (name, out) = if path == Path::new("-") {
            (PathBuf::from("<stdin>"), PathBuf::from("stdin.yaml"))
        } else {
            let rel = match path.strip_prefix(input) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
                _ => PathBuf::from(path.file_name().unwrap_or(path.as_os_str())),
            };
            (path.clone(), rel.with_extension("yaml"))
        };
        if files.iter().any(|f| f.out == out) {
            anyhow::bail!(
                "{} and an earlier input would both be written as {}",
                name.display(),
                out.display()
            );
        }
        let text = read(&path)?;
        let docs = split_documents(&name, &text, notes);
        files.push(InputFile { name, out, docs });
    }
    Ok(())
}

/// The documents of a YAML (or JSON) text, numbered as `meshctl validate` numbers them; empty
/// documents are left out. A syntax error is recorded and ends the file.
fn split_documents(file: &Path, text: &str, notes: &mut Notes) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => docs.push(Doc { index, value }),
            Err(e) => {
                let source = Source {
                    file: file.to_path_buf(),
                    document: index,
                };
                notes
                    .errors
                    .push(format!("{source}: not valid YAML/JSON: {e}"));
                break;
            }
        }
    }
    docs
}

/// Reads a document as the control plane does (a `List` as its items, each with the list's
/// source). `Err` holds the problems that reject it.
pub(crate) fn parse(source: &Source, value: &Value) -> Vec<Result<Parsed, Vec<String>>> {
    let json = match serde_json::to_value(value) {
        Ok(j) => j,
        Err(e) => {
            return vec![Err(vec![format!("{source}: not a Kubernetes object: {e}")])];
        }
    };
    let parsed = match json {
        serde_json::Value::Object(m) if m.get("kind").and_then(|k| k.as_str()) == Some("List") => {
            let items = m.get("items").and_then(|i| i.as_array()).cloned();
            items
                .unwrap_or_default()
                .into_iter()
                .map(|item| manifest::parse_value(source.clone(), item))
                .collect()
        }
        json => vec![manifest::parse_value(source.clone(), json)],
    };
    parsed
        .into_iter()
        .map(|p| match p {
            Parsed::Invalid { problems, .. } => {
                Err(problems.iter().map(ToString::to_string).collect())
            }
            p => Ok(p),
        })
        .collect()
}

// === App Mesh ===

fn is_mesh_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Mesh
            | Kind::VirtualNode
            | Kind::VirtualService
            | Kind::VirtualRouter
            | Kind::VirtualGateway
            | Kind::GatewayRoute
    )
}

/// Converts one document (a `List`'s items one by one); other kinds come back unchanged.
fn appmesh_document(source: &Source, value: &Value, notes: &mut Notes) -> Value {
    if value.get("kind").and_then(Value::as_str) == Some("List")
        && let Some(items) = value.get("items").and_then(Value::as_sequence)
    {
        let mut list = value.clone();
        list["items"] = Value::Sequence(
            items
                .iter()
                .map(|item| appmesh_object(source, item, notes))
                .collect(),
        );
        return list;
    }
    appmesh_object(source, value, notes)
}

fn appmesh_object(source: &Source, value: &Value, notes: &mut Notes) -> Value {
    let Some(parsed) = parse(source, value).pop() else {
        return value.clone();
    };
    let problems = match parsed {
        Err(errors) => {
            notes.errors.extend(errors);
            return value.clone();
        }
        Ok(Parsed::Object {
            object, problems, ..
        }) if is_mesh_kind(object.kind()) => problems,
        Ok(_) => return value.clone(),
    };
    let mut out = value.clone();
    out["apiVersion"] = Value::String(appmesh::API_VERSION.to_string());
    for p in problems {
        let aws_only = p.message.starts_with(AWS_ONLY);
        if aws_only {
            let mut trial = out.clone();
            if remove_path(&mut trial, &p.path) && is_valid(source, &trial) {
                out = trial;
                notes.notes.push(note(&p, "dropped", &p.message));
                continue;
            }
            let why = format!(
                "{}; kept, because the object is not valid without it (Bowline treats it as described)",
                p.message
            );
            notes.notes.push(note(&p, "kept", &why));
        } else {
            notes.notes.push(note(&p, "kept", &p.message));
        }
    }
    if let Some(Err(errors)) = parse(source, &out).pop() {
        // Not expected: the same spec under the other apiVersion. Reported rather than written.
        notes.errors.extend(errors);
    }
    out
}

/// `file (document N): Kind ns/name: field.path: dropped: reason`.
fn note(p: &Problem, what: &str, why: &str) -> String {
    let mut line = String::new();
    if let Some(s) = &p.source {
        line.push_str(&format!("{s}: "));
    }
    if let Some(o) = &p.object {
        line.push_str(&format!("{o}: "));
    }
    if !p.path.is_empty() {
        line.push_str(&format!("{}: ", p.path));
    }
    format!("{line}{what}: {why}")
}

fn is_valid(source: &Source, value: &Value) -> bool {
    parse(source, value).iter().all(Result::is_ok)
}

/// One step of a field path: `listeners` or `[1]`.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.listeners[0].tls` → `spec`, `listeners`, `[0]`, `tls`; `None` when malformed.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while !rest.is_empty() {
            let (n, after) = rest.split_once(']')?;
            out.push(Step::Index(n.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// Removes the field at `path` (keeping the order of the others) and the mappings left empty by
/// it; whether the field was there.
fn remove_path(value: &mut Value, path: &str) -> bool {
    steps(path).is_some_and(|s| remove_steps(value, &s))
}

fn remove_steps(value: &mut Value, steps: &[Step<'_>]) -> bool {
    match steps {
        [] => false,
        [Step::Key(k)] => value
            .as_mapping_mut()
            .and_then(|m| m.shift_remove(*k))
            .is_some(),
        [Step::Index(_)] => false,
        [first, rest @ ..] => {
            let child = match first {
                Step::Key(k) => value.get_mut(*k),
                Step::Index(i) => value.get_mut(*i),
            };
            let Some(child) = child else {
                return false;
            };
            let removed = remove_steps(child, rest);
            let emptied = child.as_mapping().is_some_and(|m| m.is_empty());
            if removed
                && emptied
                && let (Step::Key(k), Some(m)) = (first, value.as_mapping_mut())
            {
                m.shift_remove(*k);
            }
            removed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn steps_split_keys_and_indices() {
        assert_eq!(
            steps("spec.listeners[0].tls").unwrap(),
            [
                Step::Key("spec"),
                Step::Key("listeners"),
                Step::Index(0),
                Step::Key("tls")
            ]
        );
        assert_eq!(
            steps("a[1][2]").unwrap(),
            [Step::Key("a"), Step::Index(1), Step::Index(2)]
        );
        assert_eq!(steps("a[x]"), None);
    }

    #[test]
    fn removing_a_field_keeps_order_and_prunes_emptied_mappings() {
        let mut v =
            yaml("spec:\n  z: 1\n  serviceDiscovery:\n    ipPreference: IPv4_ONLY\n  a: 2\n");
        assert!(remove_path(&mut v, "spec.serviceDiscovery.ipPreference"));
        assert_eq!(
            serde_yaml::to_string(&v).unwrap(),
            "spec:\n  z: 1\n  a: 2\n"
        );
        assert!(!remove_path(&mut v, "spec.missing"));
    }

    const NODE: &str = "apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: blue, namespace: shop}
spec:
  awsName: blue_shop
  podSelector: {matchLabels: {app: blue}}
  listeners:
    - portMapping: {port: 8080, protocol: http}
  serviceDiscovery:
    dns: {hostname: blue.shop.svc.cluster.local, ipPreference: IPv6_PREFERRED}
  backends:
    - virtualService:
        virtualServiceARN: arn:aws:appmesh:us-west-2:111122223333:mesh/m/virtualService/x
";

    #[test]
    fn app_mesh_objects_lose_aws_only_fields_they_do_not_need() {
        let source = Source {
            file: "n.yaml".into(),
            document: 0,
        };
        let mut notes = Notes::default();
        let out = appmesh_document(&source, &yaml(NODE), &mut notes);
        assert!(notes.errors.is_empty(), "{:?}", notes.errors);
        let text = serde_yaml::to_string(&out).unwrap();
        assert!(text.starts_with("apiVersion: mesh.bowline.io/v1alpha1\nkind: VirtualNode\n"));
        assert!(!text.contains("awsName"), "{text}");
        assert!(!text.contains("ipPreference"), "{text}");
        // The ARN is the backend's only reference: without it the object is invalid, so it stays.
        assert!(text.contains("virtualServiceARN"), "{text}");
        assert_eq!(notes.notes.len(), 3, "{:?}", notes.notes);
        assert!(
            notes.notes[0].starts_with(
                "n.yaml (document 0): VirtualNode shop/blue: spec.awsName: dropped: AWS only:"
            ),
            "{}",
            notes.notes[0]
        );
        assert!(
            notes.notes.iter().any(|n| n
                .contains("spec.backends[0].virtualService.virtualServiceARN: kept: AWS only:")),
            "{:?}",
            notes.notes
        );
    }

    #[test]
    fn other_kinds_pass_through_unchanged() {
        let source = Source {
            file: "d.yaml".into(),
            document: 1,
        };
        let mut notes = Notes::default();
        let deployment = yaml(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 2}\n",
        );
        assert_eq!(
            appmesh_document(&source, &deployment, &mut notes),
            deployment
        );
        assert!(notes.notes.is_empty() && notes.errors.is_empty());
    }

    #[test]
    fn an_invalid_object_is_an_error_with_its_path() {
        let source = Source {
            file: "bad.yaml".into(),
            document: 2,
        };
        let mut notes = Notes::default();
        let bad = yaml(
            "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualService\nmetadata: {name: s, namespace: n}\nspec:\n  provider:\n    virtualNode:\n      bogus: 1\n",
        );
        appmesh_document(&source, &bad, &mut notes);
        assert_eq!(notes.errors.len(), 1, "{:?}", notes.errors);
        assert!(
            notes.errors[0].starts_with(
                "bad.yaml (document 2): VirtualService n/s: spec.provider.virtualNode.bogus:"
            ),
            "{}",
            notes.errors[0]
        );
    }
}
