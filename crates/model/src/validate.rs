//! Validation of mesh resources: every problem at once, each with its field path.
//!
//! [`object`] checks one object on its own (field constraints, one-of rules, AWS-only fields that
//! are reported as ignored); [`references`] checks a set of objects for references to objects that
//! do not exist.

use crate::manifest::{Object, Problem};

/// Checks one object. Errors reject it; `Ignored` notes name fields that have no effect.
pub fn object(_object: &Object) -> Vec<Problem> {
    Vec::new()
}
