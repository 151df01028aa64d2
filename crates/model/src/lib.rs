//! Bowline's model: the user-facing resources, their validation, the IR that proxies execute, and
//! the protocol types generated from `proto/`.
//!
//! This crate does no I/O. Kubernetes derives (`CustomResource`) and the manifest reader sit behind
//! the `crd` feature so that proxies do not compile Kubernetes types.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod appmesh;
#[cfg(feature = "crd")]
pub mod crd;
#[cfg(feature = "crd")]
pub mod gatewayapi;
#[cfg(feature = "crd")]
pub mod ingress;
pub mod ir;
#[cfg(feature = "crd")]
pub mod manifest;
pub mod proto;
#[cfg(feature = "crd")]
pub mod validate;
