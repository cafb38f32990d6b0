//! The part of an image config that registry 2.8.2 reads when it builds schema1, decoded
//! with Go's `encoding/json` rules so that what it accepts and rejects matches.
//!
//! Go decodes into existing values: a repeated key merges into the struct that an earlier
//! key filled, and re-decoding a slice reuses its old elements. Configs with duplicate or
//! case-variant keys (`"History"`, `"ROOTFS"`) depend on that, so it is modelled here.

use crate::gojson::{self, Kind, Node};
use crate::gotime::GoTime;

#[derive(Clone, Debug, Default)]
pub struct History {
    pub created: Option<GoTime>,
    pub author: String,
    pub created_by: String,
    pub comment: String,
    pub empty_layer: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RootFs {
    pub diff_ids: GoSlice<String>,
    pub base_layer: String,
}

#[derive(Debug, Default)]
pub struct ImageConfig {
    pub rootfs: Option<RootFs>,
    pub history: GoSlice<History>,
    pub architecture: String,
}

/// A Go slice: elements past `len` but within capacity keep old values that a later
/// decode into the same slice can see again.
#[derive(Clone, Debug, Default)]
pub struct GoSlice<T> {
    backing: Vec<T>,
    len: usize,
}

impl<T> GoSlice<T> {
    pub fn as_slice(&self) -> &[T] {
        &self.backing[..self.len]
    }
}

type Decoded = Result<(), String>;

fn type_error(field: &str, node: &Node<'_, '_>) -> String {
    format!(
        "json: cannot unmarshal {} into field {field}",
        kind_name(node.kind())
    )
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Null => "null",
        Kind::True | Kind::False => "bool",
        Kind::Number => "number",
        Kind::String => "string",
        Kind::Array => "array",
        Kind::Object => "object",
    }
}

fn decode_string(dst: &mut String, node: &Node<'_, '_>, field: &str) -> Decoded {
    match node.kind() {
        Kind::Null => Ok(()),
        Kind::String => {
            *dst = node.string_value().unwrap_or_default();
            Ok(())
        }
        _ => Err(type_error(field, node)),
    }
}

fn decode_bool(dst: &mut bool, node: &Node<'_, '_>, field: &str) -> Decoded {
    match node.kind() {
        Kind::Null => Ok(()),
        Kind::True => {
            *dst = true;
            Ok(())
        }
        Kind::False => {
            *dst = false;
            Ok(())
        }
        _ => Err(type_error(field, node)),
    }
}

/// `time.Time.UnmarshalJSON` sees every non-null token, whatever its JSON type.
fn decode_time(dst: &mut Option<GoTime>, node: &Node<'_, '_>) -> Decoded {
    if node.kind() == Kind::Null {
        return Ok(());
    }
    match GoTime::parse_json_token(node.raw()) {
        Some(t) => {
            *dst = Some(t);
            Ok(())
        }
        None => Err(format!(
            "parsing time {} as \"2006-01-02T15:04:05Z07:00\": cannot parse",
            String::from_utf8_lossy(node.raw())
        )),
    }
}

/// Go 1.19 `decodeState.array` into a slice.
fn decode_slice<T: Default + Clone>(
    dst: &mut GoSlice<T>,
    node: &Node<'_, '_>,
    field: &str,
    mut element: impl FnMut(&mut T, &Node<'_, '_>) -> Decoded,
) -> Decoded {
    match node.kind() {
        Kind::Null => {
            *dst = GoSlice {
                backing: Vec::new(),
                len: 0,
            };
            Ok(())
        }
        Kind::Array => {
            let mut i = 0;
            for item in node.elements() {
                if i >= dst.backing.len() {
                    let cap = dst.backing.len();
                    let new_cap = (cap + cap / 2).max(4);
                    // MakeSlice + Copy(len): elements past len are fresh zero values.
                    dst.backing.truncate(dst.len);
                    dst.backing.resize(new_cap, T::default());
                }
                if i >= dst.len {
                    dst.len = i + 1;
                }
                element(&mut dst.backing[i], &item)?;
                i += 1;
            }
            if i < dst.len {
                dst.len = i;
            }
            if i == 0 {
                *dst = GoSlice {
                    backing: Vec::new(),
                    len: 0,
                };
            }
            Ok(())
        }
        _ => Err(type_error(field, node)),
    }
}

/// Calls `field(name, value)` for each member whose key matches one of `names` by Go's
/// rules (exact match first, then case-insensitive in declaration order).
fn decode_struct(
    node: &Node<'_, '_>,
    what: &str,
    names: &[&str],
    mut field: impl FnMut(usize, &Node<'_, '_>) -> Decoded,
) -> Decoded {
    match node.kind() {
        Kind::Null => Ok(()),
        Kind::Object => {
            for (key, value) in node.members() {
                let index = names
                    .iter()
                    .position(|n| *n == key)
                    .or_else(|| names.iter().position(|n| gojson::field_name_folds(n, &key)));
                if let Some(i) = index {
                    field(i, &value)?;
                }
            }
            Ok(())
        }
        _ => Err(type_error(what, node)),
    }
}

fn decode_history(h: &mut History, node: &Node<'_, '_>) -> Decoded {
    let names = ["created", "author", "created_by", "comment", "empty_layer"];
    decode_struct(node, "history", &names, |i, v| match i {
        0 => decode_time(&mut h.created, v),
        1 => decode_string(&mut h.author, v, "author"),
        2 => decode_string(&mut h.created_by, v, "created_by"),
        3 => decode_string(&mut h.comment, v, "comment"),
        _ => decode_bool(&mut h.empty_layer, v, "empty_layer"),
    })
}

fn decode_rootfs(slot: &mut Option<RootFs>, node: &Node<'_, '_>) -> Decoded {
    match node.kind() {
        Kind::Null => {
            *slot = None;
            Ok(())
        }
        Kind::Object => {
            let r = slot.get_or_insert_with(RootFs::default);
            let mut unused_type = String::new();
            decode_struct(
                node,
                "rootfs",
                &["type", "diff_ids", "base_layer"],
                |i, v| match i {
                    0 => decode_string(&mut unused_type, v, "type"),
                    1 => decode_slice(&mut r.diff_ids, v, "diff_ids", |s, e| {
                        decode_string(s, e, "diff_ids")
                    }),
                    _ => decode_string(&mut r.base_layer, v, "base_layer"),
                },
            )
        }
        _ => Err(type_error("rootfs", node)),
    }
}

impl ImageConfig {
    /// Decodes the fields distribution's `configManifestBuilder` declares.
    pub fn decode(config: &[u8]) -> Result<ImageConfig, String> {
        let tape = gojson::parse(config).map_err(|e| e.to_string())?;
        ImageConfig::from_tape(&tape)
    }

    /// [`ImageConfig::decode`] of a config already parsed (the conversion reads the
    /// tape twice: here, and for the top history entry's raw members).
    pub fn from_tape(tape: &gojson::Tape<'_>) -> Result<ImageConfig, String> {
        let mut c = ImageConfig::default();
        let root = tape.root();
        if !matches!(root.kind(), Kind::Object | Kind::Null) {
            return Err(type_error("config", &root));
        }
        decode_struct(
            &root,
            "config",
            &["rootfs", "history", "architecture"],
            |i, v| match i {
                0 => decode_rootfs(&mut c.rootfs, v),
                1 => decode_slice(&mut c.history, v, "history", decode_history),
                _ => decode_string(&mut c.architecture, v, "architecture"),
            },
        )?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_like_go() {
        let c = ImageConfig::decode(
            "{\"ARCHITECTURE\":\"arm\",\"Hi\u{17f}tory\":[{\"Created_By\":\"x\",\"EMPTY_LAYER\":true}],\"rootfs\":{\"diff_ids\":[]}}"
                .as_bytes(),
        )
        .expect("decodes");
        assert_eq!(c.architecture, "arm");
        assert_eq!(c.history.as_slice().len(), 1);
        assert_eq!(c.history.as_slice()[0].created_by, "x");
        assert!(c.history.as_slice()[0].empty_layer);
        assert!(c.rootfs.is_some());
    }

    #[test]
    fn repeated_keys_merge_into_existing_values() {
        let c = ImageConfig::decode(
            br#"{"history":[{"author":"a","comment":"c"},{"author":"b"}],"History":[{"author":"z"}]}"#,
        )
        .expect("decodes");
        let h = c.history.as_slice();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].author.as_str(), h[0].comment.as_str()), ("z", "c"));
    }

    #[test]
    fn null_leaves_primitives_and_resets_slices() {
        let c = ImageConfig::decode(
            br#"{"architecture":"x","architecture":null,"history":[{}],"history":null,"rootfs":{"diff_ids":["a"]},"rootfs":null}"#,
        )
        .expect("decodes");
        assert_eq!(c.architecture, "x");
        assert!(c.history.as_slice().is_empty());
        assert!(c.rootfs.is_none());
    }

    #[test]
    fn type_errors_fail() {
        for bad in [
            &br#"{"architecture":5}"#[..],
            br#"{"history":[{"empty_layer":"true"}]}"#,
            br#"{"history":[{"created":5}]}"#,
            br#"{"history":[{"created":""}]}"#,
            br#"{"rootfs":{"diff_ids":[1]}}"#,
            br#"{"rootfs":[]}"#,
            br#"[]"#,
            br#"{"history":{}}"#,
        ] {
            assert!(
                ImageConfig::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
