//! The Bowline proxy engine shared by the gateway and the sidecar. It knows only the IR.
//!
//! * [`config`]: the ConfigDiscovery client (delta stream, ACK/NACK, reconnect with backoff).
//! * [`router`]: IR snapshot → compiled routing table (host map, ordered matchers, weighted
//!   schedules), matched per request without allocating.
//! * [`proxy`]: listeners, the HTTP/1.1 + h2c server, forwarding, the one place errors become
//!   responses.
//! * [`upstream`]: pooled upstream connections that survive config updates.
//! * [`tls`]: TLS termination (SNI, mutual TLS, reloaded certificate files) and origination.
//! * [`lb`], [`resilience`], [`retry`], [`breaker`], [`outlier`], [`health`]: load balancing and
//!   resilience per cluster: policies, retries with a budget, circuit breakers, outlier
//!   detection and active health checks.
//! * [`tcp`]: L4 proxying on `tcp` listeners (App Mesh `tcpRoute`): weighted clusters, idle
//!   timeout, half-close.
//! * [`admin`]: `/live`, `/ready`, `/config_dump`, `/metrics` on the admin address.
//! * [`engine`]: all of the above wired together for a proxy binary.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod admin;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod engine;
pub mod health;
pub mod lb;
pub mod metrics;
pub mod outlier;
pub mod proxy;
pub mod readiness;
pub mod resilience;
pub mod retry;
pub mod router;
pub mod tcp;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tls;
pub mod upstream;

pub use engine::{Engine, EngineConfig, EngineError};
