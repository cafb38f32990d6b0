//! The Go-compatible JSON parser, its string unquoting, compaction, indentation and
//! string encoder, cross-checked with serde_json where the two must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::gojson::{self, Kind};

fuzz_target!(|data: &[u8]| {
    // Anything serde_json accepts, Go's checkValid accepts (serde_json is the stricter:
    // UTF-8 only, 128 levels).
    let serde = serde_json::from_slice::<serde_json::Value>(data);
    let tape = gojson::parse(data);
    if serde.is_ok() {
        assert!(
            tape.is_ok(),
            "serde_json accepts what gojson rejects: {tape:?}"
        );
    }
    if let Ok(tape) = &tape {
        // Visit every node without recursion, decoding every string.
        let mut stack = vec![tape.root()];
        let mut visited = 0usize;
        while let Some(node) = stack.pop() {
            visited += 1;
            let raw = node.raw();
            match node.kind() {
                Kind::String => {
                    let value = node.string_value().expect("a string has a value");
                    // Where serde_json can decode the token (valid UTF-8, no lone
                    // surrogate), both decoders agree.
                    if let Ok(s) = serde_json::from_slice::<String>(raw) {
                        assert_eq!(s, value, "unquote differs from serde_json");
                    }
                }
                Kind::Object => {
                    for (_, v) in node.members() {
                        stack.push(v);
                    }
                }
                Kind::Array => stack.extend(node.elements()),
                Kind::Null => assert_eq!(raw, b"null"),
                Kind::True => assert_eq!(raw, b"true"),
                Kind::False => assert_eq!(raw, b"false"),
                Kind::Number => assert!(!raw.is_empty()),
            }
        }
        assert!(visited >= 1);
        // Compaction keeps the document valid, and indenting the compact form too.
        let mut compact = Vec::new();
        gojson::compact_html(&mut compact, data);
        gojson::parse(&compact).expect("compacted JSON parses");
        let indented = gojson::indent(&compact, "", "   ");
        gojson::parse(&indented).expect("indented JSON parses");
    }
    // Any bytes encode to a JSON string that serde_json reads back as Go decodes it.
    let mut encoded = Vec::new();
    gojson::write_string(&mut encoded, data);
    let back: String = serde_json::from_slice(&encoded).expect("encoder output is JSON");
    let tape = gojson::parse(&encoded).expect("encoder output parses");
    assert_eq!(tape.root().string_value().as_deref(), Some(back.as_str()));
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(back, s, "valid UTF-8 round-trips");
    }
});
