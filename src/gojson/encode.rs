//! Go 1.19 `encoding/json` output with HTML escaping on (what `json.Marshal` does).

use super::decode_rune;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes that Go's string encoder copies as they are (printable ASCII but `"`, `\\`,
/// `<`, `>`, `&`).
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = !matches!(b as u8, b'"' | b'\\' | b'<' | b'>' | b'&');
        b += 1;
    }
    t
};

/// Appends `s` as a JSON string the way Go's `encodeState.string(s, true)` writes it.
/// `s` may hold invalid UTF-8; each invalid byte is written as `\ufffd`.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut i = 0;
    while i < s.len() {
        // Runs of plain bytes are copied at once.
        let run = s[i..].iter().position(|&b| !PLAIN[usize::from(b)]);
        let end = run.map_or(s.len(), |n| i + n);
        out.extend_from_slice(&s[i..end]);
        i = end;
        if i == s.len() {
            break;
        }
        let b = s[i];
        if b < 0x80 {
            match b {
                b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    // `<`, `>`, `&` and the other control characters.
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 15)]);
                }
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
    out.reserve(src.len());
    let mut in_string = false;
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if in_string {
            // Copy up to the next byte that matters inside a string.
            let run = src[i..]
                .iter()
                .position(|&b| matches!(b, b'\\' | b'"' | b'<' | b'>' | b'&' | 0xe2));
            let end = run.map_or(src.len(), |n| i + n);
            out.extend_from_slice(&src[i..end]);
            i = end;
            if i == src.len() {
                break;
            }
            match src[i] {
                b'\\' => {
                    let end = (i + 2).min(src.len());
                    out.extend_from_slice(&src[i..end]);
                    i = end;
                    continue;
                }
                b'"' => {
                    in_string = false;
                    out.push(b'"');
                    i += 1;
                    continue;
                }
                _ => {}
            }
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        } else if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
            continue;
        }
        let c = src[i];
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
    let (mut depth, mut need_indent) = (0usize, false);
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if need_indent && c != b'}' && c != b']' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                // The whole string at once: up to the closing quote, escapes skipped.
                let start = i;
                i += 1;
                loop {
                    match src[i.min(src.len())..]
                        .iter()
                        .position(|&b| b == b'"' || b == b'\\')
                    {
                        None => {
                            i = src.len();
                            break;
                        }
                        Some(n) if src[i + n] == b'\\' => i += n + 2,
                        Some(n) => {
                            i += n + 1;
                            break;
                        }
                    }
                }
                let end = i.min(src.len());
                out.extend_from_slice(&src[start..end]);
                continue;
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
        i += 1;
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
