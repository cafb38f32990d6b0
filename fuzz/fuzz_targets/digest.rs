//! Digest parsing (go-digest rules) and the name, tag and reference grammars it sits in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::digest::{Algorithm, Digest};
use registryfs::grammar;
use registryfs::manifest::PlatformChoice;
use registryfs::namespace::Reference;

fuzz_target!(|data: &[u8]| {
    let d = Digest::of(data);
    assert!(d.matches(data));
    assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(&d));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Digest::parse(text) {
        assert_eq!(d.as_str(), text);
        let (alg, hex) = text.split_once(':').expect("a colon");
        assert_eq!(alg, d.algorithm().name());
        assert_eq!(hex, d.encoded());
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        match d.sha256_hex() {
            Some(h) => {
                assert_eq!(d.algorithm(), Algorithm::Sha256);
                assert!(!h.bytes().any(|b| b.is_ascii_uppercase()));
            }
            None => assert!(
                d.algorithm() != Algorithm::Sha256 || hex.bytes().any(|b| b.is_ascii_uppercase())
            ),
        }
        let _ = d.matches(data);
    }
    if grammar::is_tag(text) {
        assert!(!text.contains(['/', ':']) && !text.starts_with(['.', '-']));
    }
    if grammar::is_repository_name(text) {
        assert!(!text
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".."));
    }
    match Reference::parse(text) {
        Some(Reference::Tag(t)) => assert!(grammar::is_tag(&t)),
        Some(Reference::Digest(d)) => assert!(d.sha256_hex().is_some()),
        None => {}
    }
    if let Ok(p) = text.parse::<PlatformChoice>() {
        assert_eq!(p.to_string().parse::<PlatformChoice>(), Ok(p));
    }
});
