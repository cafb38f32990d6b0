//! JSON exactly as Go 1.19's `encoding/json` reads and writes it.
//!
//! registry 2.8.2 builds schema1 payloads with Go's encoder and reads image configs with
//! Go's decoder; byte-identical output needs Go's escaping, its raw-message compaction and
//! its string unquoting (invalid UTF-8 becomes U+FFFD), which serde_json does not offer.

mod encode;
mod tape;

pub use encode::{compact_html, indent, write_string};

pub use tape::{parse, Kind, Node, SyntaxError, Tape};

/// Go's `foldFunc` semantics for ASCII struct field names, which `Unmarshal` uses when no
/// key matches a field exactly: ASCII case-insensitive, and `s`/`k` also match U+017F
/// (long s) and U+212A (Kelvin sign) in the key.
pub fn field_name_folds(field: &str, key: &str) -> bool {
    let mut key_chars = key.chars();
    for f in field.chars() {
        let Some(k) = key_chars.next() else {
            return false;
        };
        let same = f.eq_ignore_ascii_case(&k)
            || (matches!(f, 's' | 'S') && k == '\u{17f}')
            || (matches!(f, 'k' | 'K') && k == '\u{212a}');
        if !same {
            return false;
        }
    }
    key_chars.next().is_none()
}

/// Go's `utf8.DecodeRune`: the rune at the start of `b` and its length, or `None` for an
/// invalid sequence (which Go consumes one byte at a time).
pub fn decode_rune(b: &[u8]) -> Option<(char, usize)> {
    let first = *b.first()?;
    let len = match first {
        0x00..=0x7f => return Some((char::from(first), 1)),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let seq = b.get(..len)?;
    let s = std::str::from_utf8(seq).ok()?;
    s.chars().next().map(|c| (c, len))
}
