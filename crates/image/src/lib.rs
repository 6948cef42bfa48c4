//! berth's image store: what `berth image import` writes and the agent's OCI runtime reads.
//! Images arrive as docker-save or OCI archives ([`import::import`]), live as
//! content-addressed blobs with normalized references ([`store::Store`], [`Reference`]),
//! and are unpacked once per image into a root filesystem ([`Store::rootfs`], [`unpack`])
//! that containers overlay. [`pull::pull`] adds blobs and references from an OCI registry the same way
//! ([`platform`] picks an index's entry for this machine).

pub mod archive;
pub mod error;
pub mod import;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

pub use error::{Error, Result};
pub use import::{Imported, import};
pub use reference::Reference;
pub use store::{Image, Store};
