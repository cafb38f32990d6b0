//! File access confined to the store root.
//!
//! Names come from the store and from users; both are validated against the registry
//! grammar before they are joined into paths, and symlinks are followed only while they
//! stay inside the store.

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// A store root, canonicalised so that resolved paths can be checked against it.
#[derive(Debug)]
pub struct Root {
    pub dir: PathBuf,
}

impl Root {
    pub fn new(dir: &Path) -> Result<Root> {
        let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        Ok(Root { dir })
    }

    /// Resolves `rel` inside the root: None if it does not exist, an error if a symlink
    /// leads out of the store.
    pub fn resolve(&self, rel: &str) -> Result<Option<PathBuf>> {
        let path = self.dir.join(rel);
        match path.canonicalize() {
            Ok(real) if real.starts_with(&self.dir) => Ok(Some(real)),
            Ok(real) => Err(Error::invalid(
                &path,
                format!("symlink leads outside the store (to {})", real.display()),
            )),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    pub fn is_dir(&self, rel: &str) -> Result<bool> {
        Ok(self.resolve(rel)?.is_some_and(|p| p.is_dir()))
    }

    /// The names in a folder (raw readdir order), or None if it does not exist.
    pub fn read_dir(&self, rel: &str) -> Result<Option<Vec<(String, bool)>>> {
        let Some(dir) = self.resolve(rel)? else {
            return Ok(None);
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            // Names that are not UTF-8 cannot be registry names; skip them.
            let Ok(name) = entry.file_name().into_string() else {
                log::warn!(
                    "{}: skipping a name that is not UTF-8: {:?}",
                    dir.display(),
                    entry.file_name()
                );
                continue;
            };
            let file_type = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            let is_dir = if file_type.is_symlink() {
                let rel_child = format!("{rel}/{name}");
                match self.resolve(&rel_child) {
                    Ok(p) => p.is_some_and(|p| p.is_dir()),
                    Err(e) => {
                        log::warn!("{e}");
                        continue;
                    }
                }
            } else {
                file_type.is_dir()
            };
            out.push((name, is_dir));
        }
        Ok(Some(out))
    }

    /// A regular file's path and length, or None if missing (or not a regular file).
    pub fn regular_file(&self, rel: &str) -> Result<Option<(PathBuf, u64)>> {
        let Some(path) = self.resolve(rel)? else {
            return Ok(None);
        };
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        Ok(meta.is_file().then_some((path, meta.len())))
    }

    /// Reads a small file whole, refusing more than `limit` bytes.
    pub fn read_limited(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some((path, len)) = self.regular_file(rel)? else {
            return Ok(None);
        };
        if len > limit {
            return Err(Error::invalid(
                &path,
                format!("{len} bytes is more than the {limit}-byte limit"),
            ));
        }
        read_file_limited(&path, limit).map(Some)
    }

    /// Reads a link file and parses its content as a digest, exactly (no trimming).
    pub fn read_link(&self, rel: &str) -> Result<Option<Digest>> {
        let Some(bytes) = self.read_limited(rel, 1024)? else {
            return Ok(None);
        };
        let path = self.dir.join(rel);
        let text =
            std::str::from_utf8(&bytes).map_err(|_| Error::invalid(&path, "link is not UTF-8"))?;
        Digest::parse(text)
            .map(Some)
            .map_err(|e| Error::invalid(&path, format!("bad link: {e}")))
    }
}

/// Reads at most `limit` bytes (a file can grow between stat and read).
pub fn read_file_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::invalid(
            path,
            format!("more than the {limit}-byte limit"),
        ));
    }
    Ok(bytes)
}

/// Reads a document blob and checks it hashes to `digest`.
pub fn read_verified(path: &Path, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
    let bytes = read_file_limited(path, limit)?;
    if !digest.matches(&bytes) {
        return Err(Error::invalid(
            path,
            format!(
                "content does not hash to {digest} (found {})",
                Digest::of(&bytes)
            ),
        ));
    }
    Ok(bytes)
}
