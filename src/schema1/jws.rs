//! libtrust "pretty JWS": signs a schema1 payload and splices the `signatures` array
//! into it, exactly as `NewJSONSignature` + `Sign` + `PrettySignature` lay it out.
//!
//! Signatures are RFC 6979 deterministic and the protected `time` is supplied by the
//! caller (derived from the image), so the same key always serves the same bytes.

use super::key::SigningKey;
use crate::gojson;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::sync::{Arc, OnceLock};

/// Index of the last rune in `b[..end]` that is not white space (Go's
/// `bytes.LastIndexFunc(b[..end], notSpace)`; invalid UTF-8 counts as non-space).
fn last_non_space(b: &[u8], mut end: usize) -> Option<usize> {
    while end > 0 {
        // Go's DecodeLastRune: back up at most 4 bytes to a rune start.
        let lim = end.saturating_sub(4);
        let start = (lim..end)
            .rev()
            .find(|&j| b[j] & 0xc0 != 0x80)
            .unwrap_or(end - 1);
        match gojson::decode_rune(&b[start..end]) {
            Some((c, n)) if n == end - start && c.is_whitespace() => end = start,
            Some((_, n)) if n == end - start => return Some(start),
            _ => return Some(end - 1),
        }
    }
    None
}

/// Where libtrust cuts the payload: returns `formatLength`, or None when the document
/// does not end in `}` or has `,` before it.
fn format_length(payload: &[u8]) -> Option<usize> {
    let close = last_non_space(payload, payload.len())?;
    if payload[close] != b'}' {
        return None;
    }
    let before = last_non_space(payload, close)?;
    (payload[before] != b',').then_some(before + 1)
}

/// libtrust's `detectJSONIndent`.
fn detect_indent(payload: &[u8]) -> &[u8] {
    if payload.len() > 2 && payload[0] == b'{' && payload[1] == b'\n' {
        if let Some(q) = payload[1..].iter().position(|&c| c == b'"') {
            if q > 0 {
                return &payload[2..q + 1];
            }
        }
    }
    b""
}

/// An ES256 signature is 64 bytes (r ‖ s), always 86 characters of unpadded base64url.
const SIGNATURE_CHARS: usize = 86;

/// Stands in for the signature until it is made: `*` is not a base64url character and
/// nothing after the signature in a JWS can hold one, so the last run of these is it.
const PLACEHOLDER: &str =
    "**************************************************************************************";

/// A JWS laid out to the byte but for its signature. Its length is exact before any
/// signing (the signature's is fixed), so a `stat`, a folder listing or a walk never
/// pays for ECDSA; the first read of the bytes signs, once.
pub struct Unsigned {
    /// The served document with [`PLACEHOLDER`] where the signature goes.
    layout: Vec<u8>,
    signature_at: usize,
    /// `payload[..format_len]` is `layout[..format_len]`; the rest of the payload, cut
    /// off by libtrust, is kept here to rebuild the signing input.
    format_len: usize,
    tail: Box<[u8]>,
    protected: String,
    key: Arc<SigningKey>,
    signed: OnceLock<Arc<[u8]>>,
}

impl std::fmt::Debug for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsigned")
            .field("len", &self.layout.len())
            .field("signed", &self.signed.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Unsigned {
    /// The length of the signed document.
    pub fn len(&self) -> usize {
        self.layout.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.is_empty()
    }

    /// Everything the signed bytes are a function of, given the key (whose public half
    /// is in it): two documents with the same layout sign to the same bytes.
    pub fn layout(&self) -> &[u8] {
        &self.layout
    }

    /// Bytes held, signed or not yet (to bound a cache by bytes).
    pub fn heap_bytes(&self) -> usize {
        2 * self.layout.len() + self.tail.len() + self.protected.len()
    }

    /// The served document, signed on the first call.
    pub fn signed(&self) -> Arc<[u8]> {
        self.signed.get_or_init(|| self.sign()).clone()
    }

    fn sign(&self) -> Arc<[u8]> {
        let mut payload = Vec::with_capacity(self.format_len + self.tail.len());
        payload.extend_from_slice(&self.layout[..self.format_len]);
        payload.extend_from_slice(&self.tail);
        let signing_input = format!("{}.{}", self.protected, URL_SAFE_NO_PAD.encode(&payload));
        let signature = super::es256::sign(&self.key.ecdsa, signing_input.as_bytes());
        let encoded = URL_SAFE_NO_PAD.encode(signature);
        debug_assert_eq!(encoded.len(), SIGNATURE_CHARS);
        let mut doc = self.layout.clone();
        doc[self.signature_at..self.signature_at + SIGNATURE_CHARS]
            .copy_from_slice(encoded.as_bytes());
        doc.into()
    }
}

/// Lays out the document `payload` (a JSON object) signs to, without signing it.
pub fn prepare(payload: &[u8], key: Arc<SigningKey>, time: &str) -> Result<Unsigned, String> {
    let format_len =
        format_length(payload).ok_or("payload does not end in '}' (libtrust refuses it)")?;
    let tail = &payload[format_len..];
    let protected_json = format!(
        r#"{{"formatLength":{format_len},"formatTail":"{}","time":"{time}"}}"#,
        URL_SAFE_NO_PAD.encode(tail)
    );
    let protected = URL_SAFE_NO_PAD.encode(protected_json);

    let mut sigs = b"[{\"header\":{\"jwk\":".to_vec();
    sigs.extend_from_slice(key.public_jwk_json());
    sigs.extend_from_slice(
        format!(r#","alg":"ES256"}},"signature":"{PLACEHOLDER}","protected":"{protected}"}}]"#)
            .as_bytes(),
    );

    let indent = detect_indent(payload);
    let mut layout = Vec::with_capacity(format_len + sigs.len() * 2);
    layout.extend_from_slice(&payload[..format_len]);
    layout.push(b',');
    if indent.is_empty() {
        layout.extend_from_slice(b"\"signatures\":");
        layout.extend_from_slice(&sigs);
    } else {
        let indent = String::from_utf8_lossy(indent);
        layout.push(b'\n');
        layout.extend_from_slice(indent.as_bytes());
        layout.extend_from_slice(b"\"signatures\": ");
        layout.extend_from_slice(&gojson::indent(&sigs, &indent, &indent));
        layout.push(b'\n');
    }
    layout.push(b'}');
    let signature_at = layout
        .windows(SIGNATURE_CHARS)
        .rposition(|w| w == PLACEHOLDER.as_bytes())
        .ok_or("the signature's place was lost in the layout")?;
    Ok(Unsigned {
        layout,
        signature_at,
        format_len,
        tail: tail.into(),
        protected,
        key,
        signed: OnceLock::new(),
    })
}

/// Signs `payload` (a JSON object) and returns the served document.
pub fn sign(payload: &[u8], key: &SigningKey, time: &str) -> Result<Vec<u8>, String> {
    Ok(prepare(payload, Arc::new(key.clone()), time)?
        .signed()
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;
    use crate::schema1::key::tests::vector_key;

    /// shared/docs/schema1-signing.md §9: verified there with registry 2.8.2's libtrust.
    #[test]
    fn test_vector_from_fact_sheet() {
        let layers = [
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        ];
        let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
        let config = crate::schema1::convert::tests::EXAMPLE_CONFIG;
        let payload =
            crate::schema1::build_payload("library/example", "latest", &refs, config.as_bytes())
                .unwrap();
        let doc = sign(&payload.bytes, &vector_key(), "2023-05-19T20:19:25Z").unwrap();
        let text = String::from_utf8(doc.clone()).unwrap();
        assert!(text.contains("\"protected\": \"eyJmb3JtYXRMZW5ndGgiOjE1MjIsImZvcm1hdFRhaWwiOiJDbjAiLCJ0aW1lIjoiMjAyMy0wNS0xOVQyMDoxOToyNVoifQ\""), "{text}");
        assert!(text.contains("\"signature\": \"XKOzY7o0b5LJbk9EO3ijiRENZ9fwP05kZFXsccPHPSYjXX4u1eknouj5kMC9pnB_WlPh56k-srZuOkjhSsCiNA\""), "{text}");
        assert_eq!(doc.len(), 2169);
        assert_eq!(
            sha256_hex(&doc),
            "4a5441a7aef0b4d0f1a53cd0da27b1659f99094f3b973b5820c0e7247ee1a96f"
        );
    }

    #[test]
    fn the_length_is_known_before_signing_and_only_the_signature_changes() {
        assert_eq!(PLACEHOLDER.len(), SIGNATURE_CHARS);
        let key = Arc::new(vector_key());
        for payload in [&b"{\n   \"a\": 1\n}"[..], b"{\"a\":\"*****\"}"] {
            let unsigned = prepare(payload, key.clone(), "2023-05-19T20:19:25Z").unwrap();
            let signed = unsigned.signed();
            assert_eq!(signed.len(), unsigned.len());
            let differing: Vec<usize> = (0..signed.len())
                .filter(|&i| signed[i] != unsigned.layout()[i])
                .collect();
            assert!(differing.iter().all(
                |&i| i >= unsigned.signature_at && i < unsigned.signature_at + SIGNATURE_CHARS
            ));
            assert!(!signed.contains(&b'*') || payload.contains(&b'*'));
            assert_eq!(unsigned.signed(), signed, "signed once, served alike");
        }
    }

    #[test]
    fn format_split_follows_libtrust() {
        assert_eq!(format_length(b"{\n   \"a\": 1\n}"), Some(11));
        assert_eq!(format_length(b"{\"a\":1}"), Some(6));
        assert_eq!(format_length(b"{\"a\":1} \n"), Some(6));
        assert_eq!(format_length(b"{\"a\":1,}"), None);
        assert_eq!(format_length(b"[1]"), None);
        assert_eq!(format_length(b""), None);
    }

    #[test]
    fn compact_payloads_get_the_compact_splice() {
        let doc = sign(b"{\"a\":1}", &vector_key(), "2023-05-19T20:19:25Z").unwrap();
        let text = String::from_utf8(doc).unwrap();
        assert!(
            text.starts_with("{\"a\":1,\"signatures\":[{\"header\":{\"jwk\":{\"crv\":\"P-256\""),
            "{text}"
        );
        assert!(text.ends_with("\"}]}"), "{text}");
    }
}
