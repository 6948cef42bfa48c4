//! The Kubernetes object model as berth understands it: which resources exist, how their
//! names and fields are validated and defaulted, how label and field selectors match, and how
//! objects print as `kubectl get` rows. Pure functions only: no I/O, no async.
//!
//! Start from [`resources::RESOURCES`]; the API server, controllers and agent all use it.

pub mod error;
pub mod events;
pub mod fields;
pub mod meta;
pub mod names;
pub mod object;
pub mod order;
mod order_table;
pub mod printers;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod service;

pub use error::{BadValue, FieldError, FieldErrorKind, FieldErrors};
