//! The manifest directory store (standalone mode).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the directory (recursively; names starting
//! with `.` are skipped, which also skips the `..data` indirection of Kubernetes ConfigMap
//! volumes while following their top-level symlinks) is read as multi-document manifests. The
//! directory is watched; after ~100 ms without events the whole directory is read again, so
//! files replaced by rename (editors, `mv`, ConfigMap updates) are handled like any other edit.
//!
//! A document that does not parse or validate is logged (the [`Problem`] text, naming file,
//! document, object and field) and its object keeps serving its **last good version**; an object
//! whose document disappeared from the files disappears from the store. When a file cannot be
//! read or a document is so broken that its object cannot be identified, every object last read
//! from that file keeps serving. Notes about ignored fields and skipped kinds are logged once,
//! when their document changes. A new [`World`] is published only when an object changed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bowline_model::manifest::{self, ObjectKey, Parsed, Problem};
use bowline_model::validate;
use notify::Watcher;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::world::{Entry, World};

/// Quiet time after the last file system event before the directory is read again.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest delay of a reload while events keep coming.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest directory {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest directory {} is not a directory", .0.display())]
    NotADir(PathBuf),
    #[error("manifest loader failed: {0}")]
    Loader(String),
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// One file as last read.
struct FileState {
    digest: u64,
    docs: Vec<Parsed>,
}

/// Reads the directory and keeps the last good version of every object. Synchronous (file I/O);
/// the async side runs it on the blocking pool.
pub struct Loader {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    current: BTreeMap<ObjectKey, Entry>,
    version: u64,
    reference_problems: BTreeSet<String>,
}

// === impl Loader ===

impl Loader {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Loader {
            dir: dir.into(),
            files: BTreeMap::new(),
            current: BTreeMap::new(),
            version: 0,
            reference_problems: BTreeSet::new(),
        }
    }

    /// Reads the directory again. Returns the new world when an object changed (the first call
    /// always returns one, possibly empty).
    pub fn reload(&mut self) -> Option<Arc<World>> {
        let paths = list_files(&self.dir);
        let mut files = BTreeMap::new();
        for rel in paths {
            let abs = self.dir.join(&rel);
            let bytes = match std::fs::read(&abs) {
                Ok(b) => b,
                // Gone between listing and reading: it is deleted (or about to be replaced and
                // the next event reads it again).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    warn!(file = %rel.display(), %error, "cannot read manifest file; its objects keep their last good version");
                    if let Some(old) = self.files.remove(&rel) {
                        files.insert(rel, old);
                    } else {
                        files.insert(
                            rel.clone(),
                            FileState {
                                digest: 0,
                                docs: vec![unreadable(&rel, &error.to_string())],
                            },
                        );
                    }
                    continue;
                }
            };
            let digest = digest(&bytes);
            let old = self.files.remove(&rel);
            if let Some(old) = old.as_ref()
                && old.digest == digest
            {
                files.insert(
                    rel,
                    FileState {
                        digest,
                        docs: old.docs.clone(),
                    },
                );
                continue;
            }
            let docs = match String::from_utf8(bytes) {
                Ok(text) => manifest::parse_file(&rel, &text),
                Err(_) => vec![unreadable(&rel, "not UTF-8 text")],
            };
            let old_docs = old.as_ref().map(|f| &f.docs[..]).unwrap_or_default();
            log_changes(&docs, old_docs, &self.current);
            files.insert(rel, FileState { digest, docs });
        }
        self.files = files;
        let next = self.assemble();
        self.check_references(&next);
        if next == self.current && self.version > 0 {
            return None;
        }
        self.version += 1;
        self.current = next;
        info!(
            version = self.version,
            objects = self.current.len(),
            files = self.files.len(),
            "manifests loaded"
        );
        Some(Arc::new(World::new(self.version, self.current.clone())))
    }

    /// The objects to serve: the valid documents, plus the last good version of objects whose
    /// document is rejected.
    fn assemble(&self) -> BTreeMap<ObjectKey, Entry> {
        let mut next: BTreeMap<ObjectKey, Entry> = BTreeMap::new();
        for (rel, file) in &self.files {
            let mut file_keys = HashSet::new();
            let mut unidentified = false;
            for doc in &file.docs {
                match doc {
                    Parsed::Object { source, object, .. } => {
                        let key = object.key();
                        if let Some(prev) = next.get(&key)
                            && prev.source.file != source.file
                        {
                            warn!(
                                "{source}: {key} is also defined in {}; using this one",
                                prev.source
                            );
                        }
                        file_keys.insert(key.clone());
                        next.insert(
                            key,
                            Entry {
                                source: source.clone(),
                                object: Arc::new((**object).clone()),
                            },
                        );
                    }
                    Parsed::Invalid { key: Some(key), .. } => {
                        file_keys.insert(key.clone());
                        if !next.contains_key(key)
                            && let Some(old) = self.current.get(key)
                        {
                            next.insert(key.clone(), old.clone());
                        }
                    }
                    Parsed::Invalid { key: None, .. } => unidentified = true,
                    Parsed::Skipped { .. } => {}
                }
            }
            if unidentified {
                for (key, old) in &self.current {
                    if old.source.file == *rel
                        && !file_keys.contains(key)
                        && !next.contains_key(key)
                    {
                        next.insert(key.clone(), old.clone());
                    }
                }
            }
        }
        // Keep the entries' Arcs when nothing changed, so equal worlds share their objects.
        for (key, entry) in next.iter_mut() {
            if let Some(old) = self.current.get(key)
                && old == entry
            {
                *entry = old.clone();
            }
        }
        next
    }

    /// Logs references to objects that do not exist, when that set changes.
    fn check_references(&mut self, objects: &BTreeMap<ObjectKey, Entry>) {
        let problems: BTreeSet<String> =
            validate::references_in(objects.values().map(|e| (Some(&e.source), &*e.object)))
                .iter()
                .map(ToString::to_string)
                .collect();
        for p in problems.difference(&self.reference_problems) {
            warn!("{p}");
        }
        self.reference_problems = problems;
    }
}

fn invalid(source: manifest::Source, why: &str) -> Parsed {
    let mut p = Problem::error("", why.to_string());
    p.source = Some(source.clone());
    Parsed::Invalid {
        source,
        key: None,
        problems: vec![p],
    }
}

fn unreadable(rel: &Path, why: &str) -> Parsed {
    invalid(
        manifest::Source {
            file: rel.to_path_buf(),
            document: 0,
        },
        why,
    )
}

/// Logs what changed between two parses of one file: problems of rejected documents (WARN),
/// ignored-field notes (INFO) and skipped kinds (INFO), only for documents that differ.
fn log_changes(docs: &[Parsed], old: &[Parsed], current: &BTreeMap<ObjectKey, Entry>) {
    for (i, doc) in docs.iter().enumerate() {
        if old.get(i).is_some_and(|o| same_doc(o, doc)) {
            continue;
        }
        match doc {
            Parsed::Object { problems, .. } => {
                for p in problems {
                    info!("{p}");
                }
            }
            Parsed::Invalid {
                source,
                key,
                problems,
            } => {
                for p in problems {
                    warn!("{p}");
                }
                match key {
                    Some(k) if current.contains_key(k) => {
                        warn!("{source}: {k}: rejected; its last good version keeps serving")
                    }
                    Some(k) => warn!("{source}: {k}: rejected; not loaded"),
                    None => warn!("{source}: rejected"),
                }
            }
            Parsed::Skipped {
                source,
                api_version,
                kind,
                name,
            } => {
                info!("{source}: skipping {api_version} {kind} {name}: not a kind Bowline uses");
            }
        }
    }
}

fn same_doc(a: &Parsed, b: &Parsed) -> bool {
    match (a, b) {
        (
            Parsed::Object {
                source: sa,
                object: oa,
                problems: pa,
            },
            Parsed::Object {
                source: sb,
                object: ob,
                problems: pb,
            },
        ) => sa == sb && oa == ob && pa == pb,
        (
            Parsed::Invalid {
                source: sa,
                key: ka,
                problems: pa,
            },
            Parsed::Invalid {
                source: sb,
                key: kb,
                problems: pb,
            },
        ) => sa == sb && ka == kb && pa == pb,
        (
            Parsed::Skipped {
                source: sa,
                api_version: aa,
                kind: ka,
                name: na,
            },
            Parsed::Skipped {
                source: sb,
                api_version: ab,
                kind: kb,
                name: nb,
            },
        ) => sa == sb && aa == ab && ka == kb && na == nb,
        _ => false,
    }
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn is_manifest(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// Manifest files under `dir`, relative to it, sorted. Follows symlinks, skips dot names and
/// directory cycles.
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        if let Ok(canon) = std::fs::canonicalize(&abs)
            && !visited.insert(canon)
        {
            continue;
        }
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(error) => {
                warn!(dir = %abs.display(), %error, "cannot list manifest directory");
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let child = rel.join(name);
            // `metadata` follows symlinks.
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_dir() => stack.push(child),
                Ok(m) if m.is_file() && is_manifest(name) => out.push(child),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Loads the directory once, publishes the world, and watches for changes until `drain` fires.
pub async fn spawn(
    dir: PathBuf,
    mut drain: watch::Receiver<bool>,
) -> Result<(watch::Receiver<Arc<World>>, tokio::task::JoinHandle<()>), Error> {
    let meta = tokio::fs::metadata(&dir)
        .await
        .map_err(|source| Error::Dir {
            dir: dir.clone(),
            source,
        })?;
    if !meta.is_dir() {
        return Err(Error::NotADir(dir));
    }
    // Watch before the first read so that no change is lost in between.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_access() => {}
            Ok(_) => {
                let _ = events_tx.send(());
            }
            Err(error) => {
                warn!(%error, "manifest watch error; reading the directory again");
                let _ = events_tx.send(());
            }
        })
        .map_err(|source| Error::Watch {
            dir: dir.clone(),
            source,
        })?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|source| Error::Watch {
            dir: dir.clone(),
            source,
        })?;

    let mut loader = Loader::new(dir.clone());
    let (mut loader, first) = tokio::task::spawn_blocking(move || {
        let w = loader.reload();
        (loader, w)
    })
    .await
    .map_err(|e| Error::Loader(e.to_string()))?;
    let (tx, rx) = watch::channel(first.unwrap_or_default());
    info!(dir = %dir.display(), "watching manifests");

    let task = tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                ev = events.recv() => if ev.is_none() { break },
                _ = crate::drained(&mut drain) => break,
            }
            // Debounce: wait for a quiet period (bounded, so a busy directory still reloads).
            let start = tokio::time::Instant::now();
            while start.elapsed() < MAX_DEBOUNCE {
                match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let (l, world) = match tokio::task::spawn_blocking(move || {
                let w = loader.reload();
                (loader, w)
            })
            .await
            {
                Ok(r) => r,
                Err(error) => {
                    warn!(%error, "manifest loader failed; watching stops");
                    break;
                }
            };
            loader = l;
            if let Some(world) = world {
                debug!(version = world.version, "publishing world");
                tx.send_replace(world);
            }
        }
    });
    Ok((rx, task))
}

#[cfg(test)]
mod tests;
