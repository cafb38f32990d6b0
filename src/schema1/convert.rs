//! schema2 → schema1 conversion, following distribution 2.8.2's `configManifestBuilder`.
//!
//! The output is the canonical (unsigned) payload: Go's `MarshalIndent` with a 3-space
//! indent. Its sha256 is the manifest digest that the registry sends as
//! `Docker-Content-Digest`; signing (jws.rs) splices signatures into it afterwards.

use super::config::ImageConfig;
use crate::digest::Digest;
use crate::gojson::{self, compact_html, write_string, Kind};
use crate::gotime::GoTime;
use sha2::{Digest as _, Sha256, Sha384};
use std::borrow::Cow;

/// The gzipped empty tar that every `empty_layer` history entry points at.
pub const EMPTY_LAYER_DIGEST: &str =
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

/// The 32 bytes named by [`EMPTY_LAYER_DIGEST`].
pub const EMPTY_LAYER_TAR: [u8; 32] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x00, 0xff, 0x62, 0x18, 0x05, 0xa3, 0x60, 0x14,
    0x8c, 0x58, 0x00, 0x08, 0x00, 0x00, 0xff, 0xff, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04, 0x00, 0x00,
];

/// A canonical schema1 payload and the deterministic signing time chosen for it.
#[derive(Debug, Clone)]
pub struct Payload {
    pub bytes: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SSZ`: the config's `created` in UTC, so every node signs alike.
    pub signing_time: String,
}

/// Used when a config carries no usable `created`.
pub const FALLBACK_SIGNING_TIME: &str = "1970-01-01T00:00:00Z";

/// Builds the schema1 payload for `name:tag` from a schema2 (or OCI) manifest's layer
/// digests, base first, and its config blob. Errors where registry 2.8.2 refuses.
pub fn build_payload(
    name: &str,
    tag: &str,
    layers: &[&str],
    config: &[u8],
) -> Result<Payload, String> {
    for layer in layers {
        let digest = Digest::parse(layer).map_err(|e| format!("layer digest: {e}"))?;
        // Debian's registry 2.8.2 (the oracle) is built with go-digest 1.0.0, which
        // rejects upper-case hex that the upstream build's older go-digest accepted.
        if digest.encoded().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("layer digest {layer}: upper-case hex is invalid"));
        }
    }
    let tape = gojson::parse(config).map_err(|e| format!("config: {e}"))?;
    let img = ImageConfig::from_tape(&tape).map_err(|e| format!("config: {e}"))?;
    let history = img.history.as_slice();
    let Some((top, lower)) = history.split_last() else {
        return Err("empty history when trying to create schema1 manifest".into());
    };
    // registry 2.8.2 dereferences a nil rootfs here and drops the connection.
    let Some(rootfs) = &img.rootfs else {
        return Err("config has no rootfs (registry 2.8.2 crashes on this config)".into());
    };
    let layer_count = rootfs.diff_ids.as_slice().len();
    if layer_count != layers.len() {
        return Err(format!(
            "number of descriptors and number of layers in rootfs must match: {layer_count} != {}",
            layers.len()
        ));
    }

    let mut next_layer = 0;
    let mut blob_sum = |empty: bool, advance: bool| -> Result<&str, String> {
        if empty {
            return Ok(EMPTY_LAYER_DIGEST);
        }
        let layer = layers
            .get(next_layer)
            .ok_or("too many non-empty layers in History section")?;
        if advance {
            next_layer += 1;
        }
        Ok(layer)
    };

    let n = history.len();
    let mut fs_layers = vec![""; n];
    let mut v1_compat = vec![Vec::new(); n];
    let mut parent = String::new();
    for (i, h) in lower.iter().enumerate() {
        let sum = blob_sum(h.empty_layer, true)?;
        let v1_id = v1_id(&[encoded(sum).as_bytes(), b" ", parent.as_bytes()]);
        if i == 0 && !rootfs.base_layer.is_empty() {
            // Windows base layer: only entry 0's `parent` field shows it.
            parent = crate::digest::hex(&Sha384::digest(rootfs.base_layer.as_bytes())[..32]);
        }
        v1_compat[n - 1 - i] = lower_v1_compatibility(&v1_id, &parent, h);
        fs_layers[n - 1 - i] = sum;
        parent = v1_id;
    }
    let sum = blob_sum(top.empty_layer, false)?;
    fs_layers[0] = sum;
    let top_id = v1_id(&[
        encoded(sum).as_bytes(),
        b" ",
        parent.as_bytes(),
        b" ",
        config,
    ]);
    let (top_json, created) = top_v1_compatibility(&tape, &top_id, &parent, top.empty_layer)?;
    v1_compat[0] = top_json;

    let signing_time = created
        .or(top.created)
        .and_then(|t| t.to_utc_seconds())
        .unwrap_or_else(|| FALLBACK_SIGNING_TIME.to_string());
    let bytes = print_manifest(name, tag, &img.architecture, &fs_layers, &v1_compat);
    Ok(Payload {
        bytes,
        signing_time,
    })
}

/// A v1 ID: the sha256 hex of the parts, one after the other.
fn v1_id(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    crate::digest::hex(&hasher.finalize())
}

/// go-digest `Hex()`: everything after the first ':'.
fn encoded(digest: &str) -> &str {
    digest.split_once(':').map_or("", |(_, h)| h)
}

/// The fixed-struct v1Compatibility of every entry but the top one.
fn lower_v1_compatibility(id: &str, parent: &str, h: &super::config::History) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + h.created_by.len() + h.comment.len());
    let field = |out: &mut Vec<u8>, key: &str, value: &str| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_string(out, value.as_bytes());
    };
    out.extend_from_slice(b"{\"id\":");
    write_string(&mut out, id.as_bytes());
    if !parent.is_empty() {
        field(&mut out, "parent", parent);
    }
    if !h.comment.is_empty() {
        field(&mut out, "comment", &h.comment);
    }
    let created = h.created.unwrap_or_else(GoTime::zero).to_rfc3339_nano();
    field(&mut out, "created", &created);
    out.extend_from_slice(b",\"container_config\":{\"Cmd\":[");
    write_string(&mut out, h.created_by.as_bytes());
    out.extend_from_slice(b"]}");
    if !h.author.is_empty() {
        field(&mut out, "author", &h.author);
    }
    if h.empty_layer {
        out.extend_from_slice(b",\"throwaway\":true");
    }
    out.push(b'}');
    out
}

/// `MakeV1ConfigFromConfig`: the config as a map of raw values, minus `rootfs`/`history`,
/// plus `id` (and `parent`/`throwaway` when set), written with sorted keys. Also returns
/// the config's top-level `created`, which picks the signing time.
fn top_v1_compatibility(
    tape: &gojson::Tape<'_>,
    id: &str,
    parent: &str,
    throwaway: bool,
) -> Result<(Vec<u8>, Option<GoTime>), String> {
    if tape.root().kind() != Kind::Object {
        return Err("config: json: cannot unmarshal into map".into());
    }
    // Go unmarshals into a map (the last of equal keys wins) and marshals it with sorted
    // keys; a stable sort of the members, skipping all but the last of equal keys, is
    // the same without a map. Ours come last, so they win over the config's.
    let id = format!("\"{id}\"");
    let parent = (!parent.is_empty()).then(|| format!("\"{parent}\""));
    let mut members: Vec<(Cow<'_, str>, V1Value<'_>)> = tape
        .root()
        .members()
        .map(|(key, value)| (key, V1Value::Raw(value.raw())))
        .filter(|(key, _)| key != "rootfs" && key != "history")
        .collect();
    members.push(("id".into(), V1Value::Made(id.as_bytes())));
    if let Some(parent) = &parent {
        members.push(("parent".into(), V1Value::Made(parent.as_bytes())));
    }
    if throwaway {
        members.push(("throwaway".into(), V1Value::Made(b"true")));
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(tape.root().raw().len() + 128);
    let mut created = None;
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if members.get(i + 1).is_some_and(|(next, _)| next == key) {
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        write_string(&mut out, key.as_bytes());
        out.push(b':');
        let start = out.len();
        match value {
            V1Value::Raw(raw) => compact_html(&mut out, raw),
            V1Value::Made(bytes) => out.extend_from_slice(bytes),
        }
        if key == "created" {
            created = GoTime::parse_json_token(&out[start..]);
        }
    }
    out.push(b'}');
    Ok((out, created))
}

/// A member of the top entry's v1Compatibility: a config member's raw JSON, compacted
/// when written, or one of ours, written as it is.
enum V1Value<'a> {
    Raw(&'a [u8]),
    Made(&'a [u8]),
}

/// `json.MarshalIndent(manifest, "", "   ")` of schema1's `Manifest` struct, written
/// indented at once: the layout is fixed, and a second pass over the escaped history
/// (Go's `Indent`) was about a tenth of the conversion. `gojson::indent` of the compact form
/// gives the same bytes (a test holds them together).
fn print_manifest(
    name: &str,
    tag: &str,
    arch: &str,
    fs_layers: &[&str],
    v1: &[Vec<u8>],
) -> Vec<u8> {
    let mut c = Vec::with_capacity(v1.iter().map(|v| v.len() * 9 / 8 + 48).sum::<usize>() + 512);
    c.extend_from_slice(b"{\n   \"schemaVersion\": 1,\n   \"name\": ");
    write_string(&mut c, name.as_bytes());
    c.extend_from_slice(b",\n   \"tag\": ");
    write_string(&mut c, tag.as_bytes());
    c.extend_from_slice(b",\n   \"architecture\": ");
    write_string(&mut c, arch.as_bytes());
    c.extend_from_slice(b",\n   \"fsLayers\": ");
    indented_array(&mut c, "blobSum", fs_layers.iter().map(|s| s.as_bytes()));
    c.extend_from_slice(b",\n   \"history\": ");
    indented_array(&mut c, "v1Compatibility", v1.iter().map(|v| v.as_slice()));
    c.extend_from_slice(b"\n}");
    c
}

/// An array of one-member objects `{key: string}` at depth 1 of a `MarshalIndent` with a
/// 3-space indent (an empty one is `[]`, as Go's `Indent` leaves it).
fn indented_array<'a>(c: &mut Vec<u8>, key: &str, values: impl ExactSizeIterator<Item = &'a [u8]>) {
    if values.len() == 0 {
        c.extend_from_slice(b"[]");
        return;
    }
    c.push(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            c.push(b',');
        }
        c.extend_from_slice(b"\n      {\n         \"");
        c.extend_from_slice(key.as_bytes());
        c.extend_from_slice(b"\": ");
        write_string(c, value);
        c.extend_from_slice(b"\n      }");
    }
    c.extend_from_slice(b"\n   ]");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::digest::sha256_hex;

    /// The worked example of shared/docs/schema1-conversion.md §12, checked there against
    /// a running registry 2.8.2.
    pub const EXAMPLE_CONFIG: &str = r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"created":"2023-05-19T20:19:24.08704963Z","history":[{"created":"2023-05-19T20:19:23.908246913Z","created_by":"/bin/sh -c #(nop) ADD file:4f1c in / "},{"created":"2023-05-19T20:19:24Z","created_by":"RUN apk add curl \u0026\u0026 rm -rf /var/cache/apk/*","comment":"buildkit.dockerfile.v0"},{"created":"2023-05-19T20:19:24.08704963Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111","sha256:2222222222222222222222222222222222222222222222222222222222222222"]}}"#;

    fn example_layers() -> [String; 2] {
        [
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        ]
    }

    #[test]
    fn worked_example_matches_registry_2_8_2() {
        assert_eq!(EXAMPLE_CONFIG.len(), 726);
        let layers = example_layers();
        let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
        let p = build_payload(
            "library/example",
            "latest",
            &refs,
            EXAMPLE_CONFIG.as_bytes(),
        )
        .expect("converts");
        assert_eq!(p.bytes.len(), 1524);
        assert_eq!(
            sha256_hex(&p.bytes),
            "8e5a0ce9569ec389724987ee54f11092885e1b43aa7c84fa6929cd9670bec409"
        );
        assert_eq!(p.signing_time, "2023-05-19T20:19:24Z");
    }

    #[test]
    fn refusals_match_registry() {
        let layer = format!("sha256:{}", "a".repeat(64));
        let one = [layer.as_str()];
        let upper = format!("sha256:{}", "A".repeat(64));
        let cases = [
            (
                r#"{"rootfs":{"diff_ids":["x"]}}"#,
                &one[..],
                "empty history",
            ),
            (r#"{"history":[{}]}"#, &one[..], "no rootfs"),
            (
                r#"{"history":[{}],"rootfs":{"diff_ids":[]}}"#,
                &one[..],
                "must match",
            ),
            (
                r#"{"history":[{},{}],"rootfs":{"diff_ids":[]}}"#,
                &[][..],
                "too many non-empty",
            ),
            (
                r#"{"history":[{}],"rootfs":{"diff_ids":["x"]}}"#,
                &["sha256:abc"][..],
                "layer digest",
            ),
            (
                r#"{"history":[{}],"rootfs":{"diff_ids":["x"]}}"#,
                &[upper.as_str()][..],
                "upper-case hex",
            ),
        ];
        for (config, layers, want) in cases {
            let err = build_payload("a", "t", layers, config.as_bytes()).expect_err(config);
            assert!(err.contains(want), "{config}: {err}");
        }
    }

    #[test]
    fn fewer_history_entries_than_layers_drop_upper_layers() {
        let (a, b) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        let config = r#"{"history":[{"created_by":"x"}],"rootfs":{"diff_ids":["1","2"]}}"#;
        let p = build_payload("r", "t", &[&a, &b], config.as_bytes()).expect("converts");
        let text = String::from_utf8(p.bytes).unwrap();
        assert!(text.contains(&a) && !text.contains(&b), "{text}");
        assert_eq!(p.signing_time, FALLBACK_SIGNING_TIME);
    }

    #[test]
    fn top_entry_takes_the_last_of_equal_keys_and_ours_win() {
        let config = r#"{"x":1,"id":"theirs","created":"2020-01-01T00:00:00Z","x":2,"created":"2021-02-03T04:05:06Z","throwaway":false,"history":[{"empty_layer":true},{"empty_layer":true}],"rootfs":{"diff_ids":[]}}"#;
        let p = build_payload("r", "t", &[], config.as_bytes()).expect("converts");
        let text = String::from_utf8(p.bytes).unwrap();
        assert!(
            text.contains(r#""v1Compatibility": "{\"created\":\"2021-02-03T04:05:06Z\",\"id\":\""#),
            "{text}"
        );
        assert!(text.contains(r#"\"throwaway\":true,\"x\":2}""#), "{text}");
        assert!(!text.contains("theirs"), "{text}");
        assert_eq!(p.signing_time, "2021-02-03T04:05:06Z");
    }

    #[test]
    fn top_entry_keeps_raw_values_and_escapes_twice() {
        let config = "{\"z\":{\"b\":1.50e3,\"a\":\"<\\u00e9\\b\u{2028}\"},\"A&\":null,\"history\":[{\"empty_layer\":true}],\"rootfs\":{\"diff_ids\":[]},\"parent\":\"keep\"}";
        let p = build_payload("r", "t", &[], config.as_bytes()).expect("converts");
        let text = String::from_utf8(p.bytes).unwrap();
        assert!(
            text.contains(r#""v1Compatibility": "{\"A\\u0026\":null,\"id\":\""#),
            "{text}"
        );
        assert!(text.contains(r#"\"parent\":\"keep\""#), "{text}");
        assert!(
            text.contains(r#"\"z\":{\"b\":1.50e3,\"a\":\"\\u003c\\u00e9\\b\\u2028\"}"#),
            "{text}"
        );
    }

    /// The direct layout is `Indent` of `Marshal`'s compact output, as Go makes it.
    #[test]
    fn the_manifest_is_indented_as_go_indents_it() {
        /// What Go's `Marshal` writes for the struct: members in field order, no spaces.
        fn compact(name: &str, tag: &str, arch: &str, sums: &[&str], v1: &[Vec<u8>]) -> Vec<u8> {
            let mut c = b"{\"schemaVersion\":1".to_vec();
            for (key, value) in [("name", name), ("tag", tag), ("architecture", arch)] {
                c.extend_from_slice(format!(",\"{key}\":").as_bytes());
                write_string(&mut c, value.as_bytes());
            }
            let sums: Vec<&[u8]> = sums.iter().map(|s| s.as_bytes()).collect();
            let v1: Vec<&[u8]> = v1.iter().map(|v| v.as_slice()).collect();
            for (array, key, values) in [
                ("fsLayers", "blobSum", sums),
                ("history", "v1Compatibility", v1),
            ] {
                c.extend_from_slice(format!(",\"{array}\":[").as_bytes());
                for (i, value) in values.iter().enumerate() {
                    let comma = if i > 0 { "," } else { "" };
                    c.extend_from_slice(format!("{comma}{{\"{key}\":").as_bytes());
                    write_string(&mut c, value);
                    c.push(b'}');
                }
                c.push(b']');
            }
            c.push(b'}');
            c
        }
        let other = format!("sha256:{}", "c".repeat(64));
        let sums: Vec<&str> = vec![EMPTY_LAYER_DIGEST, &other];
        let v1: Vec<Vec<u8>> = vec![
            br#"{"id":"x","config":{"Cmd":["a "b" <c>"]},"s":"[{,:}]"}"#.to_vec(),
            "{\"created_by\":\"\u{2028}\\n\\\"\"}".into(),
        ];
        for (sums, v1) in [
            (&sums[..], &v1[..]),
            (&sums[..1], &v1[..1]),
            (&[][..], &[][..]),
        ] {
            for (name, tag, arch) in [("library/example", "latest", "amd64"), ("a&b", "<t>", "")] {
                assert_eq!(
                    String::from_utf8(print_manifest(name, tag, arch, sums, v1)).unwrap(),
                    String::from_utf8(gojson::indent(
                        &compact(name, tag, arch, sums, v1),
                        "",
                        "   "
                    ))
                    .unwrap()
                );
            }
        }
    }
}
