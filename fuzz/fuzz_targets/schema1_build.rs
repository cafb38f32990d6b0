//! The whole schema2 → schema1 build with arbitrary config bytes and layer digests,
//! then signing: the payload must be JSON, sign, verify and round-trip.
//!
//! Input: `<layer digests, one a line> NUL <config>`; without a NUL the whole input is
//! the config and there is one valid layer digest per `diff_ids` entry (so plain JSON
//! seeds reach the builder).
#![no_main]

use libfuzzer_sys::fuzz_target;
use registryfs::digest::Digest;
use registryfs::manifest::{self, ManifestKind};
use registryfs::schema1::{self, config::ImageConfig, jws};

fuzz_target!(|data: &[u8]| {
    let (layers, config): (Vec<String>, &[u8]) = match data.iter().rposition(|&b| b == 0) {
        Some(nul) => (
            String::from_utf8_lossy(&data[..nul])
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            &data[nul + 1..],
        ),
        None => {
            let n = ImageConfig::decode(data)
                .ok()
                .and_then(|c| c.rootfs.map(|r| r.diff_ids.as_slice().len()))
                .unwrap_or(0)
                .min(64);
            (
                (0..n)
                    .map(|i| Digest::of(&i.to_le_bytes()).to_string())
                    .collect(),
                data,
            )
        }
    };
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let Ok(payload) = schema1::build_payload("library/fuzz", "latest", &refs, config) else {
        return;
    };
    let text = std::str::from_utf8(&payload.bytes).expect("payload is UTF-8");
    let value: serde_json::Value = serde_json::from_str(text).expect("payload is JSON");
    assert_eq!(value["schemaVersion"], 1);
    let history = value["history"].as_array().expect("history");
    let fs_layers = value["fsLayers"].as_array().expect("fsLayers");
    assert_eq!(history.len(), fs_layers.len());
    for h in history {
        let v1 = h["v1Compatibility"]
            .as_str()
            .expect("v1Compatibility string");
        registryfs::gojson::parse(v1.as_bytes()).expect("v1Compatibility is JSON");
    }
    for l in fs_layers {
        let sum = l["blobSum"].as_str().expect("blobSum");
        assert!(Digest::parse(sum).is_ok(), "{sum}");
    }
    registryfs_fuzz::assert_time_format(&payload.signing_time);
    assert_eq!(
        manifest::parse(&payload.bytes).map(|p| p.kind),
        Ok(ManifestKind::Schema1)
    );

    let key = registryfs_fuzz::fixed_key();
    let signed = jws::sign(&payload.bytes, &key, &payload.signing_time).expect("signs");
    let round_trip = registryfs_fuzz::verify_signed(&signed, &key);
    assert_eq!(
        round_trip, payload.bytes,
        "payload round-trips through the JWS"
    );
    serde_json::from_slice::<serde_json::Value>(&signed).expect("signed document is JSON");
});
