//! Manifest kinds and the fields registryfs needs, classified from the stored bytes the way
//! registry 2.8.2's manifest store does (`schemaVersion`, then `mediaType`).

use crate::gojson::{self, Kind, Node};

pub const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";

/// One representation of a manifest: a file name in the namespace and its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ManifestKind {
    Schema1,
    Schema2,
    List,
    Oci,
    OciIndex,
}

impl ManifestKind {
    pub const ALL: [ManifestKind; 5] = [
        ManifestKind::Schema1,
        ManifestKind::Schema2,
        ManifestKind::List,
        ManifestKind::Oci,
        ManifestKind::OciIndex,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            ManifestKind::Schema1 => "schema1",
            ManifestKind::Schema2 => "schema2",
            ManifestKind::List => "list",
            ManifestKind::Oci => "oci",
            ManifestKind::OciIndex => "oci-index",
        }
    }

    pub fn from_file_name(name: &str) -> Option<ManifestKind> {
        ManifestKind::ALL
            .into_iter()
            .find(|k| k.file_name() == name)
    }

    /// The Content-Type a registry sends for this kind.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::Schema1 => SCHEMA1_SIGNED,
            ManifestKind::Schema2 => SCHEMA2,
            ManifestKind::List => LIST,
            ManifestKind::Oci => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

#[derive(Clone, Debug, Default)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub platform: Option<Platform>,
    pub annotations: Vec<(String, String)>,
}

/// What a stored manifest says, as far as conversion and the namespace need.
#[derive(Clone, Debug)]
pub enum Manifest {
    Schema1,
    /// schema2 or OCI image manifest.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// Docker manifest list or OCI index.
    Index {
        manifests: Vec<Descriptor>,
    },
}

#[derive(Clone, Debug)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    pub manifest: Manifest,
    /// Stored without `mediaType` (an index then skips registry 2.8.2's OCI gate).
    pub untyped: bool,
}

/// Go struct-field lookup: the last member whose key matches `name` exactly or as Go
/// folds field names (`ſchemaVersion` is `schemaVersion` to registry 2.8.2 too).
fn field<'t, 'a>(obj: &Node<'t, 'a>, name: &str) -> Option<Node<'t, 'a>> {
    obj.members()
        .filter(|(k, _)| k == name || gojson::field_name_folds(name, k))
        .map(|(_, v)| v)
        .last()
}

fn string_field(obj: &Node<'_, '_>, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None => Ok(String::new()),
        Some(v) => match v.kind() {
            Kind::Null => Ok(String::new()),
            Kind::String => Ok(v.string_value().unwrap_or_default()),
            _ => Err(format!("{name:?} must be a string")),
        },
    }
}

fn descriptor(node: &Node<'_, '_>) -> Result<Descriptor, String> {
    if !matches!(node.kind(), Kind::Object | Kind::Null) {
        return Err("a descriptor must be an object".into());
    }
    let platform = match field(node, "platform") {
        Some(p) if p.kind() == Kind::Object => Some(Platform {
            os: string_field(&p, "os")?,
            architecture: string_field(&p, "architecture")?,
            variant: string_field(&p, "variant")?,
        }),
        Some(p) if p.kind() != Kind::Null => return Err("\"platform\" must be an object".into()),
        _ => None,
    };
    let annotations = match field(node, "annotations") {
        Some(a) if a.kind() == Kind::Object => {
            let mut out = Vec::new();
            for (k, v) in a.members() {
                out.push((
                    k.into_owned(),
                    v.string_value()
                        .ok_or("annotation values must be strings")?,
                ));
            }
            out
        }
        _ => Vec::new(),
    };
    Ok(Descriptor {
        media_type: string_field(node, "mediaType")?,
        digest: string_field(node, "digest")?,
        platform,
        annotations,
    })
}

fn descriptors(obj: &Node<'_, '_>, name: &str) -> Result<Vec<Descriptor>, String> {
    match field(obj, name) {
        None => Ok(Vec::new()),
        Some(v) if v.kind() == Kind::Null => Ok(Vec::new()),
        Some(v) if v.kind() == Kind::Array => v.elements().map(|e| descriptor(&e)).collect(),
        Some(_) => Err(format!("{name:?} must be an array")),
    }
}

/// Classifies and parses stored manifest bytes; errors where registry 2.8.2 answers 500.
pub fn parse(bytes: &[u8]) -> Result<ParsedManifest, String> {
    let tape = gojson::parse(bytes).map_err(|e| e.to_string())?;
    let root = tape.root();
    if root.kind() != Kind::Object {
        return Err("a manifest must be a JSON object".into());
    }
    let version = match field(&root, "schemaVersion") {
        None => 0,
        Some(v) if v.kind() == Kind::Null => 0,
        Some(v) if v.kind() == Kind::Number => std::str::from_utf8(v.raw())
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or("\"schemaVersion\" must be an integer")?,
        Some(_) => return Err("\"schemaVersion\" must be a number".into()),
    };
    let media_type = string_field(&root, "mediaType")?;
    let image = |kind| -> Result<ParsedManifest, String> {
        let config = match field(&root, "config") {
            Some(c) => descriptor(&c)?,
            None => Descriptor::default(),
        };
        Ok(ParsedManifest {
            kind,
            manifest: Manifest::Image {
                config,
                layers: descriptors(&root, "layers")?,
            },
            untyped: media_type.is_empty(),
        })
    };
    let index = |kind| -> Result<ParsedManifest, String> {
        Ok(ParsedManifest {
            kind,
            manifest: Manifest::Index {
                manifests: descriptors(&root, "manifests")?,
            },
            untyped: media_type.is_empty(),
        })
    };
    match (version, media_type.as_str()) {
        (1, _) => Ok(ParsedManifest {
            kind: ManifestKind::Schema1,
            manifest: Manifest::Schema1,
            untyped: media_type.is_empty(),
        }),
        (2, SCHEMA2) => image(ManifestKind::Schema2),
        (2, OCI_MANIFEST) => image(ManifestKind::Oci),
        (2, LIST) => index(ManifestKind::List),
        (2, OCI_INDEX) => index(ManifestKind::OciIndex),
        // 2.8.2 tries an index first (non-null `manifests`), else an OCI image manifest,
        // so a schema2 body without mediaType is OCI.
        (2, "") => match field(&root, "manifests") {
            Some(m) if m.kind() != Kind::Null => index(ManifestKind::OciIndex),
            _ => image(ManifestKind::Oci),
        },
        (2, other) => Err(format!("unrecognized manifest content type {other:?}")),
        (v, _) => Err(format!("unrecognized manifest schemaVersion {v}")),
    }
}

/// Whether a layer's bytes live outside the registry (Docker foreign or OCI
/// non-distributable layers).
pub fn is_foreign_layer(d: &Descriptor) -> bool {
    d.media_type == FOREIGN_LAYER || d.media_type.starts_with(OCI_NONDISTRIBUTABLE_PREFIX)
}

/// An `os/arch[/variant]` choice for picking a manifest-list entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlatformChoice {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for PlatformChoice {
    /// registry 2.8.2's choice: linux/amd64, any variant.
    fn default() -> Self {
        PlatformChoice {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for PlatformChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(PlatformChoice {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(PlatformChoice {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(format!("{s:?} is not os/arch[/variant]")),
        }
    }
}

impl std::fmt::Display for PlatformChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl PlatformChoice {
    /// The first entry matching exactly (case-sensitive; variant only when asked for).
    pub fn pick<'d>(&self, manifests: &'d [Descriptor]) -> Option<&'d Descriptor> {
        manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == self.os
                    && p.architecture == self.architecture
                    && self.variant.as_ref().is_none_or(|v| *v == p.variant)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_registry_2_8_2() {
        let cases = [
            (r#"{"schemaVersion":1}"#, Some(ManifestKind::Schema1)),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
                Some(ManifestKind::Schema2),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}"#,
                Some(ManifestKind::List),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                Some(ManifestKind::Oci),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
                Some(ManifestKind::OciIndex),
            ),
            (
                r#"{"schemaVersion":2,"config":{},"layers":[]}"#,
                Some(ManifestKind::Oci),
            ),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#,
                Some(ManifestKind::OciIndex),
            ),
            (
                r#"{"schemaVersion":2,"manifests":null}"#,
                Some(ManifestKind::Oci),
            ),
            // Keys fold as Go folds field names: U+017F is an `s` to it.
            (
                "{\"\u{17f}chemaVersion\":2,\"MEDIATYPE\":\"application/vnd.docker.distribution.manifest.v2+json\"}",
                Some(ManifestKind::Schema2),
            ),
            (r#"{"schemaVersion":3}"#, None),
            (r#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None),
            (r#"{"schemaVersion":"2"}"#, None),
            (r#"[]"#, None),
            (r#"{"#, None),
        ];
        for (json, want) in cases {
            assert_eq!(parse(json.as_bytes()).ok().map(|p| p.kind), want, "{json}");
        }
    }

    #[test]
    fn picks_platform_like_registry() {
        let list = parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
            {"digest":"arm","platform":{"os":"linux","architecture":"arm64"}},
            {"digest":"v3","platform":{"os":"linux","architecture":"amd64","variant":"v3"}},
            {"digest":"plain","platform":{"os":"linux","architecture":"amd64"}}]}"#)
        .unwrap();
        let Manifest::Index { manifests } = list.manifest else {
            panic!("an index")
        };
        let pick = |s: &str| {
            s.parse::<PlatformChoice>()
                .unwrap()
                .pick(&manifests)
                .map(|d| d.digest.clone())
        };
        assert_eq!(
            PlatformChoice::default()
                .pick(&manifests)
                .map(|d| d.digest.as_str()),
            Some("v3")
        );
        assert_eq!(pick("linux/arm64").as_deref(), Some("arm"));
        assert_eq!(pick("linux/amd64/v3").as_deref(), Some("v3"));
        assert_eq!(pick("linux/amd64/v2"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert!("linux".parse::<PlatformChoice>().is_err());
    }
}
