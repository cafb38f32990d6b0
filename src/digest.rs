//! Content digests, validated exactly as registry 2.8.2's vendored go-digest does.
//!
//! 2.8.2 accepts `[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+` with algorithm sha256/sha384/sha512 and
//! the matching hex length, upper-case hex included. Only lower-case sha256 digests can
//! name content we serve (on-disk paths are lower case), so [`Digest::sha256_hex`] is what
//! the rest of the crate uses to locate bytes.

use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A digest string that passed 2.8.2's validation. Keeps the text as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses like go-digest a6d0ee40 `Parse`/`Validate`.
    pub fn parse(text: &str) -> Result<Digest, String> {
        let Some((alg, hex)) = text.split_once(':') else {
            return Err(format!("{text:?} is not a digest: no ':'"));
        };
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+.".contains(&b));
        let hex_ok = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !alg_ok || !hex_ok {
            return Err(format!("{text:?} is not a digest: bad characters"));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => return Err(format!("{text:?}: unsupported digest algorithm {alg:?}")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(format!(
                "{text:?}: {alg} needs {} hex characters",
                algorithm.hex_len()
            ));
        }
        Ok(Digest {
            text: text.to_string(),
            algorithm,
        })
    }

    /// The sha256 digest of `bytes`, as distribution computes it.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            text: format!("sha256:{}", hex(&Sha256::digest(bytes))),
            algorithm: Algorithm::Sha256,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The part after the first ':' (go-digest `Encoded`/`Hex`).
    pub fn encoded(&self) -> &str {
        self.text.split_once(':').map_or("", |(_, h)| h)
    }

    /// The lower-case sha256 hex, if this digest can name bytes on disk.
    pub fn sha256_hex(&self) -> Option<&str> {
        let hex = self.encoded();
        (self.algorithm == Algorithm::Sha256 && !hex.bytes().any(|b| b.is_ascii_uppercase()))
            .then_some(hex)
    }

    /// Whether `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let actual = match self.algorithm {
            Algorithm::Sha256 => hex(&Sha256::digest(bytes)),
            Algorithm::Sha384 => hex(&Sha384::digest(bytes)),
            Algorithm::Sha512 => hex(&Sha512::digest(bytes)),
        };
        actual.eq_ignore_ascii_case(self.encoded())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// sha256 hex of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 of an open file, read with positioned reads so its offset stays at 0; `path`
/// names it in errors.
pub fn sha256_of_file(
    file: &std::fs::File,
    path: &std::path::Path,
) -> crate::error::Result<Digest> {
    use crate::error::Error;
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Digest::parse(&format!("sha256:{}", hex(&hasher.finalize())))
        .map_err(|e| Error::invalid(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_go_digest_a6d0ee40_accepts() {
        let d = Digest::parse(&format!("sha256:{}", "A".repeat(64)))
            .expect("upper-case hex is valid in 2.8.2");
        assert_eq!(
            d.sha256_hex(),
            None,
            "upper-case hex never names on-disk content"
        );
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(128))).is_ok());
        assert!(Digest::parse(&format!("sha384:{}", "0".repeat(96))).is_ok());
    }

    #[test]
    fn rejects_what_go_digest_rejects() {
        for bad in [
            "sha256:abc".to_string(),
            format!("md5:{}", "a".repeat(64)),
            format!("sha256:{}\n", "a".repeat(64)),
            format!("sha256:{}", "g".repeat(64)),
            format!(":{}", "a".repeat(64)),
            "sha256".to_string(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn digest_of_bytes() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));
    }
}
