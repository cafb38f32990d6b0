//! Manifest classification, platform choice, and re-signing of stored schema1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::manifest::{self, Manifest, ManifestKind, PlatformChoice};
use registryfs::schema1::jws;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = manifest::parse(data) else {
        return;
    };
    registryfs::gojson::parse(data).expect("a parsed manifest is valid JSON");
    match (&parsed.kind, &parsed.manifest) {
        (ManifestKind::Schema1, Manifest::Schema1) => {
            // A stored schema1 is served re-signed: that must always work and verify.
            let key = registryfs_fuzz::fixed_key();
            let signed = jws::sign(data, &key, "2024-01-02T03:04:05Z").expect("signs");
            let payload = registryfs_fuzz::verify_signed(&signed, &key);
            assert_eq!(payload, data, "stored payload round-trips");
        }
        (ManifestKind::Schema2 | ManifestKind::Oci, Manifest::Image { layers, .. }) => {
            for l in layers {
                let _ = manifest::is_foreign_layer(l);
            }
        }
        (ManifestKind::List | ManifestKind::OciIndex, Manifest::Index { manifests }) => {
            for choice in ["linux/amd64", "linux/arm/v7", "windows/amd64"] {
                let choice: PlatformChoice = choice.parse().expect("platform");
                if let Some(d) = choice.pick(manifests) {
                    let p = d.platform.as_ref().expect("picked entries have a platform");
                    assert_eq!(p.os, choice.os);
                }
            }
        }
        (kind, m) => panic!("kind {kind:?} with content {m:?}"),
    }
});
