//! libtrust-compatible P-256 signing keys: loading (PEM or JWK, as the registry's
//! `signingkeyfile`), key IDs, and `keygen`.

use crate::error::{Error, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::SigningKey as EcdsaKey;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::pkcs8::DecodePrivateKey;
use p256::SecretKey;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// DER prefix of a P-256 SubjectPublicKeyInfo, up to the uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A P-256 private key with what libtrust writes into a signature's `jwk`.
#[derive(Clone)]
pub struct SigningKey {
    pub(super) ecdsa: EcdsaKey,
    x: [u8; 32],
    y: [u8; 32],
    kid: String,
    /// The `jwk` of every signature, made once: the same bytes for every document.
    public_jwk: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// `extras`: members that libtrust carries from the key file into every `jwk` (PEM
    /// headers, unknown JWK members), as compact Go-encoded JSON values.
    fn from_secret(secret: &SecretKey, extras: BTreeMap<String, Vec<u8>>) -> SigningKey {
        let point = secret.public_key().to_sec1_point(false);
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        // An uncompressed non-identity point always has both coordinates.
        if let (Some(px), Some(py)) = (point.x(), point.y()) {
            x.copy_from_slice(px);
            y.copy_from_slice(py);
        }
        let kid = key_id(&x, &y);
        let public_jwk = jwk_of(extras, &kid, &x, &y);
        SigningKey {
            ecdsa: EcdsaKey::from(secret),
            x,
            y,
            kid,
            public_jwk,
        }
    }

    /// A fresh random key (for `keygen`, and for mounts started without a key).
    pub fn generate() -> Result<SigningKey> {
        let mut urandom =
            std::fs::File::open("/dev/urandom").map_err(|e| Error::io("/dev/urandom", e))?;
        loop {
            let mut d = [0u8; 32];
            urandom
                .read_exact(&mut d)
                .map_err(|e| Error::io("/dev/urandom", e))?;
            if let Ok(secret) = SecretKey::from_slice(&d) {
                return Ok(SigningKey::from_secret(&secret, BTreeMap::new()));
            }
        }
    }

    /// A key from its private scalar (tests and fixed vectors).
    pub fn from_scalar(d: &[u8; 32]) -> Result<SigningKey> {
        let secret = SecretKey::from_slice(d)
            .map_err(|_| Error::Usage("invalid P-256 private scalar".into()))?;
        Ok(SigningKey::from_secret(&secret, BTreeMap::new()))
    }

    /// Loads a key file the way libtrust's `LoadKeyFile` does: `.json`/`.jwk` names are
    /// JWK, anything else PEM.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // The mode of the file actually opened (no race with a rename).
        let mode = file.metadata().map_err(|e| Error::io(path, e))?.mode();
        if let Some(warning) = permission_warning(path, mode) {
            log::warn!("{warning}");
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|e| Error::io(path, e))?;
        let is_jwk = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("json" | "jwk")
        );
        let parsed = if is_jwk {
            from_jwk(&text)
        } else {
            from_pem(&text)
        };
        parsed.map_err(|reason| Error::invalid(path, reason))
    }

    /// libtrust's key ID: base32 of the first 240 bits of sha256(SPKI DER), in groups of 4.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as libtrust marshals it (sorted keys, compact, Go escaping).
    pub fn public_jwk_json(&self) -> &[u8] {
        &self.public_jwk
    }

    /// The private key as libtrust's `SaveKey` writes a JWK: 4-space indent, sorted keys.
    pub fn private_jwk_file(&self) -> Vec<u8> {
        let mut members = BTreeMap::new();
        let s = |v: &str| format!("\"{v}\"").into_bytes();
        members.insert("crv".to_string(), s("P-256"));
        members.insert(
            "d".into(),
            s(&URL_SAFE_NO_PAD.encode(self.ecdsa.to_bytes())),
        );
        members.insert("kid".into(), s(&self.kid));
        members.insert("kty".into(), s("EC"));
        members.insert("x".into(), s(&URL_SAFE_NO_PAD.encode(self.x)));
        members.insert("y".into(), s(&URL_SAFE_NO_PAD.encode(self.y)));
        crate::gojson::indent(&write_object(&members), "", "    ")
    }

    /// The private key as libtrust's `SaveKey` writes PEM: SEC 1 with a `keyID` header.
    pub fn private_pem_file(&self) -> Vec<u8> {
        // SEC 1 ECPrivateKey for P-256 has a fixed layout: version 1, d, the curve OID
        // and the uncompressed public point.
        let mut der = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
        der.extend_from_slice(&self.ecdsa.to_bytes());
        der.extend_from_slice(&[
            0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
        ]);
        der.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00, 0x04]);
        der.extend_from_slice(&self.x);
        der.extend_from_slice(&self.y);
        let body = STANDARD.encode(&der);
        let mut out = format!("-----BEGIN EC PRIVATE KEY-----\nkeyID: {}\n\n", self.kid);
        for line in body.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END EC PRIVATE KEY-----\n");
        out.into_bytes()
    }
}

/// A warning when a private key file can be read by its group or by everyone: anyone
/// who can read it can sign manifests that verify as ours.
fn permission_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o044 != 0).then(|| {
        format!(
            "{}: the signing key is readable by {} (mode {:04o}); `chmod 600` it",
            path.display(),
            match (mode & 0o040 != 0, mode & 0o004 != 0) {
                (true, true) => "group and others",
                (true, false) => "its group",
                _ => "others",
            },
            mode & 0o7777
        )
    })
}

/// The public `jwk` libtrust writes: `members` (the key file's extras) with the key's own.
fn jwk_of(
    mut members: BTreeMap<String, Vec<u8>>,
    kid: &str,
    x: &[u8; 32],
    y: &[u8; 32],
) -> Vec<u8> {
    let s = |v: &str| format!("\"{v}\"").into_bytes();
    members.insert("crv".into(), s("P-256"));
    members.insert("kid".into(), s(kid));
    members.insert("kty".into(), s("EC"));
    members.insert("x".into(), s(&URL_SAFE_NO_PAD.encode(x)));
    members.insert("y".into(), s(&URL_SAFE_NO_PAD.encode(y)));
    write_object(&members)
}

fn write_object(members: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::gojson::write_string(&mut out, k.as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
    }
    out.push(b'}');
    out
}

fn key_id(x: &[u8; 32], y: &[u8; 32]) -> String {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.push(0x04);
    der.extend_from_slice(x);
    der.extend_from_slice(y);
    let hash = Sha256::digest(&der);
    let b32 = base32(&hash[..30]);
    let groups: Vec<&str> = (0..12).map(|i| &b32[i * 4..i * 4 + 4]).collect();
    groups.join(":")
}

/// RFC 4648 base32 (alphabet A-Z 2-7) of a multiple of 5 bytes.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut v = 0u64;
        for (i, b) in chunk.iter().enumerate() {
            v |= u64::from(*b) << (32 - 8 * i);
        }
        for i in 0..8 {
            out.push(char::from(ALPHABET[((v >> (35 - 5 * i)) & 31) as usize]));
        }
    }
    out
}

/// libtrust's `joseBase64UrlDecode`: base64url, padding optional.
fn b64u(value: &str) -> std::result::Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|e| format!("bad base64url value: {e}"))
}

fn from_jwk(text: &[u8]) -> std::result::Result<SigningKey, String> {
    let tape = crate::gojson::parse(text).map_err(|e| e.to_string())?;
    let mut fields = BTreeMap::new();
    let mut extras = BTreeMap::new();
    for (k, v) in tape.root().members() {
        let k = k.into_owned();
        match k.as_str() {
            "kty" | "crv" | "x" | "y" | "d" | "kid" => {
                let s = v
                    .string_value()
                    .ok_or(format!("JWK member {k:?} must be a string"))?;
                fields.insert(k, s);
            }
            _ => {
                let mut compact = Vec::new();
                crate::gojson::compact_html(&mut compact, v.raw());
                extras.insert(k, compact);
            }
        }
    }
    let get = |k: &str| {
        fields
            .get(k)
            .map(String::as_str)
            .ok_or(format!("JWK has no {k:?}"))
    };
    match get("kty")? {
        "EC" => {}
        other => {
            return Err(format!(
                "unsupported key type {other:?}: registryfs signs with EC P-256 (ES256) keys"
            ))
        }
    }
    if get("crv")? != "P-256" {
        return Err(format!(
            "unsupported curve {:?}: only P-256 is supported",
            get("crv")?
        ));
    }
    let d = b64u(get("d")?)?;
    let d: [u8; 32] = d
        .try_into()
        .map_err(|_| "JWK \"d\" must be 32 bytes".to_string())?;
    let secret = SecretKey::from_slice(&d)
        .map_err(|_| "JWK \"d\" is not a valid P-256 scalar".to_string())?;
    let key = SigningKey::from_secret(&secret, extras);
    if b64u(get("x")?)? != key.x || b64u(get("y")?)? != key.y {
        return Err("JWK \"x\"/\"y\" do not belong to its private key \"d\"".into());
    }
    if let Some(kid) = fields.get("kid") {
        if *kid != key.kid {
            return Err(format!(
                "JWK key ID {kid:?} does not match the key ({})",
                key.kid
            ));
        }
    }
    Ok(key)
}

fn from_pem(text: &[u8]) -> std::result::Result<SigningKey, String> {
    let text = String::from_utf8_lossy(text);
    let mut lines = text.lines().skip_while(|l| !l.starts_with("-----BEGIN "));
    let begin = lines.next().ok_or("no PEM block found")?;
    let label = begin
        .trim_start_matches("-----BEGIN ")
        .trim_end_matches("-----")
        .to_string();
    let mut extras = BTreeMap::new();
    let mut body = String::new();
    let mut in_headers = true;
    for line in lines {
        if line.starts_with("-----END ") {
            let der = STANDARD
                .decode(body.as_bytes())
                .map_err(|e| format!("bad PEM base64: {e}"))?;
            let secret =
                match label.as_str() {
                    "EC PRIVATE KEY" => SecretKey::from_sec1_der(&der)
                        .map_err(|e| format!("bad EC private key: {e}"))?,
                    "PRIVATE KEY" => SecretKey::from_pkcs8_der(&der)
                        .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?,
                    "RSA PRIVATE KEY" => return Err(
                        "RSA keys are not supported: registryfs signs with EC P-256 (ES256) keys"
                            .into(),
                    ),
                    other => return Err(format!("unsupported PEM type {other:?}")),
                };
            return Ok(SigningKey::from_secret(&secret, extras));
        }
        match line.split_once(':') {
            Some((k, v)) if in_headers => {
                let mut value = Vec::new();
                crate::gojson::write_string(&mut value, v.trim().as_bytes());
                extras.insert(k.trim().to_string(), value);
            }
            _ => {
                in_headers = false;
                body.push_str(line.trim());
            }
        }
    }
    Err(format!("PEM block {label:?} has no END line"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The synthetic key of shared/docs/schema1-signing.md §9.
    pub(crate) fn vector_key() -> SigningKey {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        SigningKey::from_scalar(&d).expect("valid scalar")
    }

    #[test]
    fn key_id_and_jwk_match_libtrust() {
        let k = vector_key();
        assert_eq!(
            k.kid(),
            "6HKZ:ISNX:E4LF:3ZZS:X4UD:GOAS:FOMW:FCTB:LEMP:5XDH:3B4P:77HU"
        );
        assert_eq!(
            String::from_utf8(k.public_jwk_json().to_vec()).unwrap(),
            r#"{"crv":"P-256","kid":"6HKZ:ISNX:E4LF:3ZZS:X4UD:GOAS:FOMW:FCTB:LEMP:5XDH:3B4P:77HU","kty":"EC","x":"UVw9brnjlrkE0_7Kf1T9zQzB6Ze_N13KUVrQpsO0A18","y":"RTa-OlDzGPv5pUdZAqIhUCvvDVfgjFOyzApW8X2fk1Q"}"#
        );
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = vector_key();
        let jwk = dir.path().join("key.json");
        std::fs::write(&jwk, k.private_jwk_file()).unwrap();
        let loaded = SigningKey::load(&jwk).expect("loads JWK");
        assert_eq!(loaded.public_jwk_json(), k.public_jwk_json());

        let pem = dir.path().join("key.pem");
        std::fs::write(&pem, k.private_pem_file()).unwrap();
        let loaded = SigningKey::load(&pem).expect("loads PEM");
        // libtrust carries PEM headers into the jwk.
        let jwk_text = String::from_utf8(loaded.public_jwk_json().to_vec()).unwrap();
        assert!(
            jwk_text.starts_with(r#"{"crv":"P-256","keyID":"6HKZ:"#),
            "{jwk_text}"
        );
    }

    /// Records warnings (this is the only logger in the unit-test binary).
    struct Capture(std::sync::Mutex<Vec<String>>);

    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                self.0.lock().unwrap().push(r.args().to_string());
            }
        }
        fn flush(&self) {}
    }

    fn warnings() -> &'static Capture {
        static CAPTURE: std::sync::OnceLock<&'static Capture> = std::sync::OnceLock::new();
        CAPTURE.get_or_init(|| {
            let capture: &'static Capture =
                Box::leak(Box::new(Capture(std::sync::Mutex::new(Vec::new()))));
            log::set_logger(capture).expect("the only logger");
            log::set_max_level(log::LevelFilter::Warn);
            capture
        })
    }

    #[test]
    fn readable_key_files_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let capture = warnings();
        let dir = tempfile::tempdir().unwrap();
        let key = vector_key();
        for (name, mode, warned) in [
            ("private.pem", 0o600, None),
            ("owner-only.json", 0o400, None),
            (
                "group.pem",
                0o640,
                Some("readable by its group (mode 0640)"),
            ),
            ("world.json", 0o604, Some("readable by others (mode 0604)")),
            (
                "both.pem",
                0o644,
                Some("readable by group and others (mode 0644)"),
            ),
        ] {
            let path = dir.path().join(name);
            let bytes = if name.ends_with(".json") {
                key.private_jwk_file()
            } else {
                key.private_pem_file()
            };
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            SigningKey::load(&path).expect("a readable key still loads");
            let logged: Vec<String> = capture
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|w| w.contains(&path.display().to_string()))
                .cloned()
                .collect();
            match warned {
                None => assert!(logged.is_empty(), "{name}: {logged:?}"),
                Some(text) => {
                    assert_eq!(logged.len(), 1, "{name}: {logged:?}");
                    assert!(logged[0].contains(text), "{name}: {logged:?}");
                    assert!(logged[0].contains("chmod 600"), "{name}: {logged:?}");
                }
            }
        }
    }

    #[test]
    fn bad_key_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &str, &str); 4] = [
            ("k.json", r#"{"kty":"RSA"}"#, "unsupported key type"),
            (
                "k.json",
                r#"{"kty":"EC","crv":"P-256","d":"AQ","x":"","y":""}"#,
                "32 bytes",
            ),
            ("k.pem", "nothing here", "no PEM block"),
            (
                "k.pem",
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "RSA keys",
            ),
        ];
        for (name, text, want) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = SigningKey::load(&path).expect_err(text).to_string();
            assert!(err.contains(name) && err.contains(want), "{err}");
        }
    }
}
