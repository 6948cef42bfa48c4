//! The programs berth runs in place of container images. berth has no container engine: the
//! agent maps a Pod's image name to a [`Builtin`] ([`Builtin::from_image`]) and runs it as
//! `berth workload <name>` ([`main_for`]) inside the Pod's network namespace.
//!
//! Start from [`Builtin`]; [`serve`] runs one on an address until a shutdown future resolves.

mod cli;
mod error;
mod host;
mod image;
mod number_crunch;
mod server;
mod whoami;

pub use cli::main_for;
pub use error::{Error, Result};
pub use image::{Builtin, repository};
pub use server::{serve, serve_listener};
