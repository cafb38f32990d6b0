//! registryfs: a container registry's store as plain files, with schema1 manifests
//! generated on lookup.
//!
//! Data flows one way: [`store`] readers → [`manifest`] types → [`schema1`] conversion
//! and signing → [`namespace`] (path → content, no FUSE) → the FUSE adapter and the CLI.

pub mod cache;
pub mod digest;
pub mod error;
pub mod fuse;
pub mod gojson;
pub mod gotime;
pub mod grammar;
pub mod httpd;
pub mod manifest;
pub mod metrics;
pub mod namespace;
pub mod schema1;
pub mod store;
pub mod verify;
pub mod watch;
