//! Schema1: converting schema2 to registry 2.8.2's schema1 payload, and libtrust signing.

pub mod config;
pub mod convert;
pub mod es256;
pub mod jws;
pub mod key;

pub use convert::{build_payload, Payload, EMPTY_LAYER_DIGEST, EMPTY_LAYER_TAR};
pub use key::SigningKey;
