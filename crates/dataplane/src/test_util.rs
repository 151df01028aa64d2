//! Test support (feature `test-util`): a fake control plane that speaks the real
//! `ConfigDiscovery` protocol on `127.0.0.1:0` and lets a test script each stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bowline_model::ir;
use bowline_model::proto::pb::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use bowline_model::proto::{self, Kind, pb};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How long the fake waits for the proxy before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A fake control plane. Each stream a proxy opens is handed to the test by
/// [`FakeControlPlane::next_stream`].
pub struct FakeControlPlane {
    addr: SocketAddr,
    streams: Mutex<mpsc::Receiver<FakeStream>>,
    server: tokio::task::JoinHandle<()>,
}

/// One proxy stream, as seen by the control plane. Dropping it ends the stream.
pub struct FakeStream {
    /// The first request: node and `initial_resource_versions`.
    pub first: pb::DiscoveryRequest,
    requests: Streaming<pb::DiscoveryRequest>,
    responses: mpsc::Sender<Result<pb::DiscoveryResponse, Status>>,
    /// What the proxy holds as far as this stream knows: key → version.
    held: BTreeMap<String, String>,
}

struct Service {
    streams: mpsc::Sender<FakeStream>,
}

static NONCE: AtomicU64 = AtomicU64::new(1);

// === impl FakeControlPlane ===

impl FakeControlPlane {
    pub async fn start() -> FakeControlPlane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake control plane");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = mpsc::channel(8);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ConfigDiscoveryServer::new(Service { streams: tx }))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("fake control plane server");
        });
        FakeControlPlane {
            addr,
            streams: Mutex::new(rx),
            server,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for the next stream a proxy opens.
    pub async fn next_stream(&self) -> FakeStream {
        let mut rx = self.streams.lock().await;
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("a proxy opens a stream in time")
            .expect("the fake control plane is running")
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for Service {
    type StreamStream = ReceiverStream<Result<pb::DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut requests = request.into_inner();
        let first = requests
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no first request"))?;
        let (tx, rx) = mpsc::channel(4);
        let held = first
            .initial_resource_versions
            .clone()
            .into_iter()
            .collect();
        self.streams
            .send(FakeStream {
                first,
                requests,
                responses: tx,
                held,
            })
            .await
            .map_err(|_| Status::unavailable("test gone"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

// === impl FakeStream ===

impl FakeStream {
    /// Sends what differs between `snapshot` and what the proxy holds (as a delta with
    /// `version`), and returns the proxy's answer (ACK or NACK).
    pub async fn push(&mut self, version: &str, snapshot: &ir::Snapshot) -> pb::DiscoveryRequest {
        let wire = proto::snapshot_to_resources(snapshot);
        let keys: BTreeMap<&str, &pb::Resource> =
            wire.iter().map(|(k, r)| (k.as_str(), r)).collect();
        let resources: Vec<pb::Resource> = wire
            .iter()
            .filter(|(k, r)| self.held.get(k) != Some(&r.version))
            .map(|(_, r)| r.clone())
            .collect();
        let removed: Vec<pb::ResourceKey> = self
            .held
            .keys()
            .filter(|k| !keys.contains_key(k.as_str()))
            .filter_map(|k| key_of(k))
            .collect();
        let answer = self
            .send(pb::DiscoveryResponse {
                system_version: version.to_string(),
                nonce: String::new(),
                resources,
                removed,
            })
            .await;
        if answer.error_detail.is_none() {
            self.held = wire.into_iter().map(|(k, r)| (k, r.version)).collect();
        }
        answer
    }

    /// Sends a raw response (a fresh nonce is set) and returns the answer to it.
    pub async fn send(&mut self, mut resp: pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        resp.nonce = NONCE.fetch_add(1, Ordering::Relaxed).to_string();
        let nonce = resp.nonce.clone();
        self.responses
            .send(Ok(resp))
            .await
            .expect("the proxy keeps the stream open");
        let answer = tokio::time::timeout(PATIENCE, self.requests.message())
            .await
            .expect("the proxy answers in time")
            .expect("the stream is healthy")
            .expect("the proxy answers before closing");
        assert_eq!(
            answer.response_nonce, nonce,
            "the answer carries the response's nonce"
        );
        answer
    }
}

/// `kind/name` → a protocol key.
fn key_of(key: &str) -> Option<pb::ResourceKey> {
    let (kind, name) = key.split_once('/')?;
    let kind = [
        Kind::Listener,
        Kind::RouteTable,
        Kind::Cluster,
        Kind::Endpoints,
    ]
    .into_iter()
    .find(|k| k.as_str() == kind)?;
    Some(pb::ResourceKey {
        r#type: kind.to_type() as i32,
        name: name.to_string(),
    })
}
