//! One error type for everything below the CLI and FUSE layers.
//!
//! Every variant that comes from store content names the file it came from, so an
//! operator can go straight to the bad file; the FUSE adapter maps variants to errno.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// The path or object does not exist (ENOENT).
    NotFound(String),
    /// Store content is present but unusable: bad JSON, bad link, digest mismatch...
    InvalidContent { file: PathBuf, reason: String },
    /// The store could not be read.
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A schema1 document cannot be produced for this manifest (registry 2.8 would also refuse).
    Conversion { manifest: String, reason: String },
    /// Bad user input: a key file, a flag, a path outside the namespace grammar.
    Usage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(file: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::InvalidContent {
            file: file.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn io(file: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            file: file.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn conversion(manifest: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Conversion {
            manifest: manifest.into(),
            reason: reason.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(what) => write!(f, "not found: {what}"),
            Error::InvalidContent { file, reason } => write!(f, "{}: {reason}", file.display()),
            Error::Io { file, source } => write!(f, "{}: {source}", file.display()),
            Error::Conversion { manifest, reason } => {
                write!(f, "cannot convert {manifest} to schema1: {reason}")
            }
            Error::Usage(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
