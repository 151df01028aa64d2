//! PEM files in service: loaded once per path, shared by every listener and cluster that names
//! them, watched, and reloaded when their content changes.
//!
//! A [`Watched`] value holds the parsed content behind an [`ArcSwap`]: a handshake loads the
//! current value without locking, and a reload swaps in a new one, so new handshakes use the new
//! certificate while open connections keep the one they negotiated. A reload that fails (a file
//! half written, a key that does not match its certificate) keeps the previous value and logs the
//! error with the path; the next change tries again.
//!
//! Changes are noticed by a file-system watcher on the directories of the files (so a file
//! replaced by a rename, or a Kubernetes secret volume swapping its `..data` symlink, is seen),
//! debounced, and also by a periodic re-read that covers watchers that miss events. Only a change
//! of content reloads.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, mpsc};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{debug, info, warn};

use super::provider;
use super::server::ServerTls;

/// How long the watcher waits for a burst of events to settle before reloading (a certificate
/// and its key are usually written one after the other).
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Files are also re-read this often, in case the watcher missed an event.
const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// A file that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

impl LoadError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        LoadError {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// What a set of PEM files parses into.
pub trait Material: Sized + Send + Sync + 'static {
    /// What the files are, for logs (`certificate`, `trust bundle`).
    const WHAT: &'static str;

    /// Parses the contents of `paths` (same order).
    fn parse(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<Self, LoadError>;
}

/// A parsed set of files, reloaded when they change.
pub struct Watched<T> {
    paths: Box<[PathBuf]>,
    current: ArcSwap<T>,
    /// The contents `current` was parsed from; a reload with the same bytes does nothing.
    loaded: Mutex<Vec<Vec<u8>>>,
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T: Material> Watched<T> {
    /// Reads and parses `paths`.
    pub fn load(paths: Vec<PathBuf>) -> Result<Watched<T>, LoadError> {
        let contents = read_all(&paths)?;
        let value = T::parse(&paths, &contents)?;
        Ok(Watched {
            paths: paths.into(),
            current: ArcSwap::from_pointee(value),
            loaded: Mutex::new(contents),
        })
    }

    /// The value in service.
    #[inline]
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Re-reads the files; when their content changed and parses, puts it in service.
    pub fn reload(&self) -> Result<Reloaded, LoadError> {
        let contents = read_all(&self.paths)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if *loaded == contents {
            return Ok(Reloaded::Unchanged);
        }
        let value = T::parse(&self.paths, &contents)?;
        self.current.store(Arc::new(value));
        *loaded = contents;
        Ok(Reloaded::Changed)
    }
}

/// The outcome of a successful [`Watched::reload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloaded {
    Unchanged,
    Changed,
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, LoadError> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| LoadError::new(p, format!("cannot read: {e}"))))
        .collect()
}

/// Something the watcher thread can reload without knowing its type.
trait Reload: Send + Sync {
    fn reload_logged(&self);
}

impl<T: Material> Reload for Watched<T> {
    fn reload_logged(&self) {
        match self.reload() {
            Ok(Reloaded::Unchanged) => {}
            Ok(Reloaded::Changed) => {
                info!(paths = ?self.paths, "{} reloaded", T::WHAT);
            }
            Err(error) => {
                warn!(
                    path = %error.path.display(),
                    %error,
                    "{} not reloaded; the previous one stays in service", T::WHAT
                );
            }
        }
    }
}

// === certificates and trust bundles ===

/// A certificate chain and its private key (`paths`: chain, then key).
impl Material for CertifiedKey {
    const WHAT: &'static str = "certificate";

    fn parse(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<Self, LoadError> {
        let [chain_path, key_path] = paths else {
            unreachable!("a certificate is loaded from a chain and a key");
        };
        let chain = parse_certificates(chain_path, &contents[0])?;
        let key = PrivateKeyDer::from_pem_slice(&contents[1])
            .map_err(|e| LoadError::new(key_path, format!("no PEM private key: {e}")))?;
        CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| LoadError::new(key_path, format!("unusable private key: {e}")))
    }
}

/// Trusted certificate authorities, with the verifiers built on them.
#[derive(Debug)]
pub struct Trust {
    pub roots: Arc<RootCertStore>,
    /// Verifies client certificates (chain and client-auth usage).
    pub clients: Arc<dyn ClientCertVerifier>,
    /// Verifies server certificates (chain, server-auth usage and name).
    pub servers: Arc<WebPkiServerVerifier>,
}

impl Material for Trust {
    const WHAT: &'static str = "trust bundle";

    fn parse(paths: &[PathBuf], contents: &[Vec<u8>]) -> Result<Self, LoadError> {
        let path = &paths[0];
        let mut roots = RootCertStore::empty();
        for (i, cert) in parse_certificates(path, &contents[0])?
            .into_iter()
            .enumerate()
        {
            roots
                .add(cert)
                .map_err(|e| LoadError::new(path, format!("certificate {}: {e}", i + 1)))?;
        }
        let roots = Arc::new(roots);
        let unusable = |e: rustls::server::VerifierBuilderError| {
            LoadError::new(path, format!("unusable trust bundle: {e}"))
        };
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(unusable)?;
        let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(unusable)?;
        Ok(Trust {
            roots,
            clients,
            servers,
        })
    }
}

/// Every `CERTIFICATE` section of a PEM file; at least one.
fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::new(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(LoadError::new(path, "no PEM certificate found"));
    }
    Ok(certs)
}

// === impl TlsFiles ===

/// The files in service, by path, with the watcher that reloads them. Cheap to clone; kept across
/// config updates so that a file named by one update after another is loaded and watched once.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TlsFiles")
            .field("certificates", &state.certificates.len())
            .field("trusts", &state.trusts.len())
            .field("watched", &state.watched)
            .finish()
    }
}

#[derive(Default)]
struct State {
    certificates: HashMap<(PathBuf, PathBuf), Arc<Watched<CertifiedKey>>>,
    trusts: HashMap<PathBuf, Arc<Watched<Trust>>>,
    /// Compiled listener TLS by settings, so that an update that keeps a listener's settings
    /// keeps its config (and the TLS sessions clients can resume).
    servers: HashMap<String, Weak<ServerTls>>,
    /// Started with the first file.
    watcher: Option<notify::RecommendedWatcher>,
    /// Directories the watcher watches.
    watched: BTreeSet<PathBuf>,
}

impl TlsFiles {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The certificate chain and key in these files: the one in service if they are already
    /// loaded (the watcher keeps it current), otherwise read now.
    pub fn certificate(
        &self,
        chain: &Path,
        key: &Path,
    ) -> Result<Arc<Watched<CertifiedKey>>, LoadError> {
        let mut state = self.lock();
        let k = (chain.to_path_buf(), key.to_path_buf());
        if let Some(w) = state.certificates.get(&k) {
            return Ok(w.clone());
        }
        let w = Arc::new(Watched::load(vec![k.0.clone(), k.1.clone()])?);
        state.certificates.insert(k, w.clone());
        self.watch(&mut state, w.paths());
        Ok(w)
    }

    /// The trust bundle in this file, as [`TlsFiles::certificate`].
    pub fn trust(&self, bundle: &Path) -> Result<Arc<Watched<Trust>>, LoadError> {
        let mut state = self.lock();
        if let Some(w) = state.trusts.get(bundle) {
            return Ok(w.clone());
        }
        let w = Arc::new(Watched::load(vec![bundle.to_path_buf()])?);
        state.trusts.insert(bundle.to_path_buf(), w.clone());
        self.watch(&mut state, w.paths());
        Ok(w)
    }

    /// Forgets files no compiled config refers to any more, and stops watching their
    /// directories.
    pub fn prune(&self) {
        let mut state = self.lock();
        state.servers.retain(|_, s| s.strong_count() > 0);
        state.certificates.retain(|_, w| Arc::strong_count(w) > 1);
        state.trusts.retain(|_, w| Arc::strong_count(w) > 1);
        let needed: BTreeSet<PathBuf> = state
            .certificates
            .values()
            .flat_map(|w| w.paths().iter().map(|p| dir_of(p)))
            .chain(
                state
                    .trusts
                    .values()
                    .flat_map(|w| w.paths().iter().map(|p| dir_of(p))),
            )
            .collect();
        let gone: Vec<PathBuf> = state.watched.difference(&needed).cloned().collect();
        for dir in gone {
            state.watched.remove(&dir);
            if let Some(w) = &mut state.watcher {
                let _ = w.unwatch(&dir);
            }
            debug!(dir = %dir.display(), "stopped watching");
        }
    }

    /// The listener TLS compiled for these settings (see [`ServerTls::compile`]), if any is in
    /// use.
    pub(super) fn server(&self, key: &str) -> Option<Arc<ServerTls>> {
        self.lock().servers.get(key).and_then(Weak::upgrade)
    }

    pub(super) fn keep_server(&self, key: String, server: &Arc<ServerTls>) {
        self.lock().servers.insert(key, Arc::downgrade(server));
    }

    /// Number of files sets held (for tests).
    pub fn loaded(&self) -> usize {
        let state = self.lock();
        state.certificates.len() + state.trusts.len()
    }

    /// Re-reads every file now (what the watcher does on a change).
    pub fn reload_all(&self) {
        self.inner.reload_all();
    }

    fn watch(&self, state: &mut State, paths: &[PathBuf]) {
        if state.watcher.is_none() {
            match start_watcher(Arc::downgrade(&self.inner)) {
                Ok(w) => state.watcher = Some(w),
                Err(error) => {
                    warn!(%error, "cannot watch TLS files; changes are picked up every {POLL_INTERVAL:?}");
                    return;
                }
            }
        }
        for dir in paths.iter().map(|p| dir_of(p)) {
            if state.watched.contains(&dir) {
                continue;
            }
            let Some(watcher) = &mut state.watcher else {
                return;
            };
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "watching for certificate changes");
                    state.watched.insert(dir);
                }
                Err(error) => warn!(
                    dir = %dir.display(),
                    %error,
                    "cannot watch; changes are picked up every {POLL_INTERVAL:?}"
                ),
            }
        }
    }
}

impl Inner {
    fn reload_all(&self) {
        let all: Vec<Arc<dyn Reload>> = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .certificates
                .values()
                .map(|w| w.clone() as Arc<dyn Reload>)
                .chain(state.trusts.values().map(|w| w.clone() as Arc<dyn Reload>))
                .collect()
        };
        for w in all {
            w.reload_logged();
        }
    }
}

/// The directory a file's changes show up in.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event may have changed a file's content (opening and reading it does not; our
/// own reloads open the files).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Starts the watcher and the thread that reloads on its events (and every [`POLL_INTERVAL`]).
/// The thread ends when the files store is dropped.
fn start_watcher(inner: Weak<Inner>) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let watcher = notify::recommended_watcher(tx)?;
    std::thread::Builder::new()
        .name("bowline-tls-files".into())
        .spawn(move || watch_loop(&inner, &rx))
        .map_err(notify::Error::io)?;
    Ok(watcher)
}

fn watch_loop(inner: &Weak<Inner>, rx: &mpsc::Receiver<notify::Result<notify::Event>>) {
    loop {
        let changed = match rx.recv_timeout(POLL_INTERVAL) {
            Ok(Ok(event)) => is_change(&event.kind),
            Ok(Err(error)) => {
                debug!(%error, "file watcher error; re-reading the TLS files");
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if !changed {
            continue;
        }
        // Let a burst of writes settle.
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.reload_all();
    }
}
