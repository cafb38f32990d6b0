//! Go 1.19 `encoding/json` output with HTML escaping on (what `json.Marshal` does).

use super::decode_rune;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string the way Go's `encodeState.string(s, true)` writes it.
/// `s` may hold invalid UTF-8; each invalid byte is written as `\ufffd`.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'<' | b'>' | b'&' | 0..=0x1f => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 15)]);
                }
                _ => out.push(b),
            }
            i += 1;
            continue;
        }
        match decode_rune(&s[i..]) {
            None => {
                out.extend_from_slice(b"\\ufffd");
                i += 1;
            }
            Some(('\u{2028}' | '\u{2029}', n)) => {
                out.extend_from_slice(b"\\u202");
                out.push(HEX[usize::from(s[i + 2] & 15)]);
                i += n;
            }
            Some((_, n)) => {
                out.extend_from_slice(&s[i..i + n]);
                i += n;
            }
        }
    }
    out.push(b'"');
}

/// Go's `compact(dst, src, escape=true)`, used when marshalling a `json.RawMessage`:
/// drops insignificant whitespace and escapes `<`, `>`, `&`, U+2028 and U+2029, copying
/// everything else byte for byte. `src` must be valid JSON.
pub fn compact_html(out: &mut Vec<u8>, src: &[u8]) {
    let mut in_string = false;
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if in_string {
            match c {
                b'\\' => {
                    out.extend_from_slice(&src[i..i + 2]);
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        } else if c == b'"' {
            in_string = true;
        }
        if matches!(c, b'<' | b'>' | b'&') {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
            i += 1;
        } else if c == 0xe2 && i + 2 < src.len() && src[i + 1] == 0x80 && src[i + 2] & !1 == 0xa8 {
            out.extend_from_slice(b"\\u202");
            out.push(HEX[usize::from(src[i + 2] & 15)]);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(input: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(&mut out, input);
        String::from_utf8(out).expect("escaped output is UTF-8")
    }

    #[test]
    fn string_escaping_is_go_1_19() {
        assert_eq!(s(b"a&b<c>"), r#""a\u0026b\u003cc\u003e""#);
        assert_eq!(s(b"\x08\x0c\x1b\n\r\t"), r#""\u0008\u000c\u001b\n\r\t""#);
        assert_eq!(
            s("\u{7f}é\u{2028}\u{2029}\u{fffd}".as_bytes()),
            "\"\u{7f}é\\u2028\\u2029\u{fffd}\""
        );
        assert_eq!(s(b"\xff\xfe"), r#""\ufffd\ufffd""#);
        assert_eq!(s(b"\"\\/"), r#""\"\\/""#);
    }

    #[test]
    fn compaction_keeps_source_bytes() {
        let mut out = Vec::new();
        compact_html(
            &mut out,
            "{ \"k\" : [1.50e3, \"a b<\\u00e9\\b\" , \"\u{2028}\"] , \"n\": null }".as_bytes(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"k":[1.50e3,"a b\u003c\u00e9\b","\u2028"],"n":null}"#
        );
    }
}

/// Go's `json.Indent(dst, src, prefix, indent)` for valid, compact `src` (what
/// `MarshalIndent` applies to `Marshal`'s output). Empty objects and arrays stay `{}`/`[]`.
pub fn indent(src: &[u8], prefix: &str, unit: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() * 2);
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend_from_slice(prefix.as_bytes());
        for _ in 0..depth {
            out.extend_from_slice(unit.as_bytes());
        }
    };
    let (mut depth, mut need_indent, mut in_string, mut escaped) = (0usize, false, false, false);
    for &c in src {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        if need_indent && c != b'}' && c != b']' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                in_string = true;
                out.push(c);
            }
            b'{' | b'[' => {
                need_indent = true;
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b'}' | b']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod indent_tests {
    use super::indent;

    #[test]
    fn indents_like_marshal_indent() {
        let got = indent(br#"{"a":[{"b":"x,{:"},[],{}],"c":1}"#, "", "   ");
        let want = "{\n   \"a\": [\n      {\n         \"b\": \"x,{:\"\n      },\n      [],\n      {}\n   ],\n   \"c\": 1\n}";
        assert_eq!(String::from_utf8(got).unwrap(), want);
        let with_prefix = indent(br#"[{"k":"v"}]"#, "  ", "  ");
        assert_eq!(
            String::from_utf8(with_prefix).unwrap(),
            "[\n    {\n      \"k\": \"v\"\n    }\n  ]"
        );
    }
}
