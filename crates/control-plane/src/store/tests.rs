use std::time::Duration;

use bowline_model::manifest::{Kind, Object};

use super::*;

const ROUTER: &str = r#"apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: colors, namespace: demo}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
  routes:
    - name: all
      httpRoute:
        match: {prefix: PREFIX}
        action:
          weightedTargets:
            - virtualNodeRef: {name: blue}
              weight: 1
"#;

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n";

fn router(prefix: &str) -> String {
    ROUTER.replace("PREFIX", prefix)
}

fn route_prefix(world: &World) -> Option<String> {
    let r = world.virtual_router("demo", "colors")?;
    r.spec.routes.as_ref()?[0]
        .http_route
        .as_ref()?
        .matcher
        .prefix
        .clone()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn loads_manifests_recursively_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{NAMESPACE}", router("/")),
    );
    write(
        dir.path(),
        "sub/deeper/ns.yml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
    );
    write(
        dir.path(),
        "list.json",
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "from-json"}}"#,
    );
    write(
        dir.path(),
        "notes.txt",
        NAMESPACE.replace("demo", "txt").as_str(),
    );
    write(
        dir.path(),
        ".hidden.yaml",
        NAMESPACE.replace("demo", "hidden").as_str(),
    );
    write(
        dir.path(),
        ".git/x.yaml",
        NAMESPACE.replace("demo", "git").as_str(),
    );
    write(
        dir.path(),
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: front, namespace: demo}\n",
    );

    let mut loader = Loader::new(dir.path());
    let world = loader.reload().expect("first load publishes");
    assert_eq!(world.version, 1);
    let names: Vec<String> = world.objects().keys().map(|k| k.to_string()).collect();
    assert_eq!(
        names,
        [
            "VirtualRouter demo/colors",
            "Namespace demo",
            "Namespace from-json",
            "Namespace other",
        ]
    );
    assert_eq!(
        world.source_of(Kind::Namespace, "", "other").unwrap().file,
        Path::new("sub/deeper/ns.yml")
    );
    // Nothing changed: nothing is published.
    assert!(loader.reload().is_none());
}

#[test]
fn a_rejected_document_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "routes.yaml",
        &format!("{NAMESPACE}---\n{}", router("/")),
    );
    let mut loader = Loader::new(dir.path());
    let first = loader.reload().unwrap();
    assert_eq!(route_prefix(&first).as_deref(), Some("/"));

    // The router becomes invalid: the last good version keeps serving, nothing is published.
    write(
        dir.path(),
        "routes.yaml",
        &format!("{NAMESPACE}---\n{}", router("nope")),
    );
    assert!(loader.reload().is_none());

    // A valid change is published.
    write(
        dir.path(),
        "routes.yaml",
        &format!("{NAMESPACE}---\n{}", router("/v2")),
    );
    let second = loader.reload().unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(route_prefix(&second).as_deref(), Some("/v2"));

    // The document is deleted: the object disappears.
    write(dir.path(), "routes.yaml", NAMESPACE);
    let third = loader.reload().unwrap();
    assert!(third.virtual_router("demo", "colors").is_none());
    assert!(third.namespace("demo").is_some());
}

#[test]
fn an_unreadable_file_keeps_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "routes.yaml",
        &format!("{NAMESPACE}---\n{}", router("/")),
    );
    let mut loader = Loader::new(dir.path());
    loader.reload().unwrap();

    // Not YAML any more: the objects of the file cannot be identified, so all of them stay.
    write(dir.path(), "routes.yaml", "key: [unclosed\n  - : :\n");
    assert!(loader.reload().is_none());

    // A deleted file takes its objects with it.
    std::fs::remove_file(dir.path().join("routes.yaml")).unwrap();
    let world = loader.reload().unwrap();
    assert!(world.is_empty());
}

#[test]
fn a_later_definition_of_the_same_object_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &router("/a"));
    write(dir.path(), "b.yaml", &router("/b"));
    let world = Loader::new(dir.path()).reload().unwrap();
    assert_eq!(route_prefix(&world).as_deref(), Some("/b"));
}

#[tokio::test]
async fn watches_edits_and_files_replaced_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "routes.yaml", &router("/"));
    let (drain_tx, drain_rx) = watch::channel(false);
    let (mut rx, task) = spawn(dir.path().to_path_buf(), drain_rx).await.unwrap();
    assert_eq!(route_prefix(&rx.borrow_and_update()).as_deref(), Some("/"));

    // An editor or `mv` replacing the file by rename.
    write(dir.path(), ".routes.yaml.tmp", &router("/renamed"));
    std::fs::rename(
        dir.path().join(".routes.yaml.tmp"),
        dir.path().join("routes.yaml"),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a new world within 10 s")
        .unwrap();
    let world = rx.borrow_and_update().clone();
    assert_eq!(route_prefix(&world).as_deref(), Some("/renamed"));
    assert_eq!(world.version, 2);

    // A new file in a new subdirectory.
    write(dir.path(), "more/ns.yaml", NAMESPACE);
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a new world within 10 s")
        .unwrap();
    assert!(rx.borrow().namespace("demo").is_some());
    assert!(matches!(
        rx.borrow()
            .get(Kind::Namespace, "", "demo")
            .map(|e| e.object.as_ref()),
        Some(Object::Namespace(_))
    ));

    drain_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the watcher stops on drain")
        .unwrap();
}

#[tokio::test]
async fn a_missing_directory_is_a_configuration_error() {
    let (_tx, rx) = watch::channel(false);
    let err = spawn(PathBuf::from("/nonexistent/bowline/manifests"), rx)
        .await
        .expect_err("error");
    assert!(matches!(err, Error::Dir { .. }), "{err}");
}

#[test]
fn a_rejected_ingress_keeps_its_last_good_version() {
    let ingress = |path_type: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: shop}}\nspec:\n  rules:\n    - http:\n        paths:\n          - {{path: /v1, pathType: {path_type}, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        )
    };
    let path_type = |world: &World| {
        world.ingress("shop", "web").map(|i| {
            i.spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
                .http
                .as_ref()
                .unwrap()
                .paths[0]
                .path_type
                .clone()
        })
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ingress.yaml", &ingress("Prefix"));
    let mut loader = Loader::new(dir.path());
    let first = loader.reload().unwrap();
    assert_eq!(path_type(&first).as_deref(), Some("Prefix"));
    write(dir.path(), "ingress.yaml", &ingress("Regex"));
    assert!(
        loader.reload().is_none(),
        "the rejected Ingress is not published"
    );
    write(dir.path(), "ingress.yaml", &ingress("Exact"));
    let second = loader.reload().unwrap();
    assert_eq!(path_type(&second).as_deref(), Some("Exact"));
}
