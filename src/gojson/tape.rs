//! A validating JSON parser that records every value as a node in a flat list.
//!
//! Flat storage and an explicit stack mean a config nested 10,000 deep (Go's limit, which
//! the registry accepts) neither overflows a thread's stack on parse nor on drop.

use super::decode_rune;
use std::borrow::Cow;

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    True,
    False,
    Number,
    String,
    Array,
    Object,
}

/// One value: its kind, its byte span in the source, and the index just past its subtree.
#[derive(Clone, Copy, Debug)]
struct Entry {
    kind: Kind,
    start: usize,
    end: usize,
    next: usize,
}

#[derive(Debug)]
pub struct Tape<'a> {
    src: &'a [u8],
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub msg: &'static str,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.msg)
    }
}

/// A value in a [`Tape`].
#[derive(Clone, Copy)]
pub struct Node<'t, 'a> {
    tape: &'t Tape<'a>,
    index: usize,
}

impl<'a> Tape<'a> {
    pub fn root(&self) -> Node<'_, 'a> {
        Node {
            tape: self,
            index: 0,
        }
    }
}

impl<'t, 'a> Node<'t, 'a> {
    fn entry(&self) -> Entry {
        self.tape.entries[self.index]
    }

    pub fn kind(&self) -> Kind {
        self.entry().kind
    }

    /// The value's exact source bytes (strings include their quotes).
    pub fn raw(&self) -> &'a [u8] {
        let e = self.entry();
        &self.tape.src[e.start..e.end]
    }

    /// Array elements, in order; empty for non-arrays.
    pub fn elements(&self) -> impl Iterator<Item = Node<'t, 'a>> + 't {
        let tape = self.tape;
        let e = self.entry();
        let mut i = if e.kind == Kind::Array {
            self.index + 1
        } else {
            e.next
        };
        std::iter::from_fn(move || {
            (i < e.next).then(|| {
                let n = Node { tape, index: i };
                i = tape.entries[i].next;
                n
            })
        })
    }

    /// Object members as (decoded key, value), in document order; empty for non-objects.
    /// A key without escapes is borrowed from the source: looking a field up by name
    /// allocates nothing.
    pub fn members(&self) -> impl Iterator<Item = (Cow<'a, str>, Node<'t, 'a>)> + 't {
        let tape = self.tape;
        let e = self.entry();
        let mut i = if e.kind == Kind::Object {
            self.index + 1
        } else {
            e.next
        };
        std::iter::from_fn(move || {
            (i < e.next).then(|| {
                let key = Node { tape, index: i };
                let value = Node {
                    tape,
                    index: key.entry().next,
                };
                i = value.entry().next;
                (key.key_value(), value)
            })
        })
    }

    /// A string's value as Go's decoder produces it, or None for non-strings.
    pub fn string_value(&self) -> Option<String> {
        (self.kind() == Kind::String).then(|| unquote(self.raw()))
    }

    /// A member key's value (a key is always a string): as it stands in the source when
    /// it is valid UTF-8 without escapes (what `unquote` would return unchanged), else
    /// decoded.
    fn key_value(&self) -> Cow<'a, str> {
        let raw = self.raw();
        let body = &raw[1..raw.len() - 1];
        match std::str::from_utf8(body) {
            Ok(plain) if !body.contains(&b'\\') => Cow::Borrowed(plain),
            _ => unquote(raw).into(),
        }
    }
}

/// Go's `unquote`: resolves escapes; invalid UTF-8 and unpaired surrogates become U+FFFD.
fn unquote(raw: &[u8]) -> String {
    let body = &raw[1..raw.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        // Runs of ASCII without escapes are copied as they are.
        let run = body[i..]
            .iter()
            .position(|&b| b == b'\\' || b >= 0x80)
            .unwrap_or(body.len() - i);
        if run > 0 {
            // ASCII bytes: valid UTF-8 on their own.
            out.push_str(std::str::from_utf8(&body[i..i + run]).unwrap_or_default());
            i += run;
            continue;
        }
        match body[i] {
            b'\\' => {
                let esc = body[i + 1];
                i += 2;
                let simple = match esc {
                    b'"' => Some('"'),
                    b'\\' => Some('\\'),
                    b'/' => Some('/'),
                    b'b' => Some('\u{8}'),
                    b'f' => Some('\u{c}'),
                    b'n' => Some('\n'),
                    b'r' => Some('\r'),
                    b't' => Some('\t'),
                    _ => None,
                };
                if let Some(c) = simple {
                    out.push(c);
                    continue;
                }
                let first = hex4(&body[i..]).unwrap_or(0);
                i += 4;
                if (0xd800..0xe000).contains(&first) {
                    let second = (body.get(i) == Some(&b'\\') && body.get(i + 1) == Some(&b'u'))
                        .then(|| hex4(&body[i + 2..]))
                        .flatten();
                    if let Some(second) = second {
                        if (0xd800..0xdc00).contains(&first) && (0xdc00..0xe000).contains(&second) {
                            let c = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                            out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                            i += 6;
                            continue;
                        }
                    }
                    out.push('\u{fffd}');
                } else {
                    out.push(char::from_u32(first).unwrap_or('\u{fffd}'));
                }
            }
            _ => match decode_rune(&body[i..]) {
                Some((c, n)) => {
                    out.push(c);
                    i += n;
                }
                None => {
                    out.push('\u{fffd}');
                    i += 1;
                }
            },
        }
    }
    out
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Parses and validates `src` the way Go's `checkValid` does.
pub fn parse(src: &[u8]) -> Result<Tape<'_>, SyntaxError> {
    Parser {
        src,
        pos: 0,
        // About one value per 16 bytes of a typical image config; fewer reallocations.
        entries: Vec::with_capacity(src.len() / 16 + 4),
        stack: Vec::with_capacity(8),
    }
    .run()
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    entries: Vec<Entry>,
    /// Open containers: entry index.
    stack: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, msg: &'static str) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            offset: self.pos,
            msg,
        })
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn push_leaf(&mut self, kind: Kind, start: usize) {
        let next = self.entries.len() + 1;
        self.entries.push(Entry {
            kind,
            start,
            end: self.pos,
            next,
        });
    }

    fn open(&mut self, kind: Kind) -> Result<(), SyntaxError> {
        self.entries.push(Entry {
            kind,
            start: self.pos,
            end: 0,
            next: 0,
        });
        self.stack.push(self.entries.len() - 1);
        if self.stack.len() > MAX_DEPTH {
            return self.err("exceeded max depth");
        }
        self.pos += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.pos += 1;
        if let Some(i) = self.stack.pop() {
            self.entries[i].end = self.pos;
            self.entries[i].next = self.entries.len();
        }
    }

    fn run(mut self) -> Result<Tape<'a>, SyntaxError> {
        self.skip_ws();
        'value: loop {
            // Parse one value at self.pos.
            match self.peek() {
                Some(b'{') => {
                    self.open(Kind::Object)?;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.close();
                    } else {
                        self.member_key()?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.open(Kind::Array)?;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.close();
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b't') => self.literal(b"true", Kind::True)?,
                Some(b'f') => self.literal(b"false", Kind::False)?,
                Some(b'n') => self.literal(b"null", Kind::Null)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return self.err("expected a value"),
            }
            // After a value: close containers or move to the next element.
            loop {
                self.skip_ws();
                let Some(&top) = self.stack.last() else {
                    break 'value;
                };
                let is_object = self.entries[top].kind == Kind::Object;
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                        if is_object {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if is_object => self.close(),
                    Some(b']') if !is_object => self.close(),
                    _ => return self.err("expected ',' or a closing bracket"),
                }
            }
        }
        if self.pos != self.src.len() {
            return self.err("unexpected data after the top-level value");
        }
        Ok(Tape {
            src: self.src,
            entries: self.entries,
        })
    }

    /// A member's key and colon; leaves pos at the value.
    fn member_key(&mut self) -> Result<(), SyntaxError> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string key");
        }
        self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return self.err("expected ':'");
        }
        self.pos += 1;
        self.skip_ws();
        Ok(())
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Result<(), SyntaxError> {
        let start = self.pos;
        if !self.src[self.pos..].starts_with(word) {
            return self.err("invalid literal");
        }
        self.pos += word.len();
        self.push_leaf(kind, start);
        Ok(())
    }

    fn string(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                    return self.err("invalid \\u escape");
                                }
                                self.pos += 1;
                            }
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(c) if c < 0x20 => return self.err("control character in string"),
                Some(_) => self.pos += 1,
            }
        }
        self.pos += 1;
        self.push_leaf(Kind::String, start);
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        self.push_leaf(Kind::Number, start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members_and_raw_spans() {
        let src = br#" {"a": [1, 2.5e3, "x"], "b": {"c": null}, "a": true} "#;
        let tape = parse(src).expect("valid");
        let members: Vec<_> = tape.root().members().collect();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].0, "a");
        assert_eq!(members[0].1.raw(), br#"[1, 2.5e3, "x"]"#);
        let elems: Vec<_> = members[0].1.elements().map(|n| n.raw()).collect();
        assert_eq!(elems, vec![&b"1"[..], b"2.5e3", br#""x""#]);
        assert_eq!(members[1].1.kind(), Kind::Object);
        assert_eq!(members[2].1.kind(), Kind::True);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"{\"a\" 1}",
            b"01",
            b"1.",
            b"-",
            b"\"\x01\"",
            b"\"\\x\"",
            b"[1] x",
            b"",
            b"nul",
            b"{\"a\":1,}",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn nesting_limit_is_gos() {
        let ok = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(ok.as_bytes()).is_ok());
        let too_deep = format!("{}{}", "[".repeat(10_001), "]".repeat(10_001));
        assert!(parse(too_deep.as_bytes()).is_err());
    }

    #[test]
    fn unquote_matches_go() {
        let cases: &[(&[u8], &str)] = &[
            (br#""a\u00e9\n""#, "a\u{e9}\n"),
            (br#""\ud83d\ude00""#, "\u{1f600}"),
            (br#""\ud800x""#, "\u{fffd}x"),
            (br#""\ud800\u0041""#, "\u{fffd}A"),
            (br#""\udc00""#, "\u{fffd}"),
            (b"\"\xff\"", "\u{fffd}"),
            // Go replaces each byte of a truncated sequence, unlike from_utf8_lossy.
            (b"\"\xf0\x90\x80A\"", "\u{fffd}\u{fffd}\u{fffd}A"),
            (b"\"\xed\xa0\x80\"", "\u{fffd}\u{fffd}\u{fffd}"),
        ];
        for (raw, want) in cases {
            let tape = parse(raw).expect("valid");
            assert_eq!(tape.root().string_value().as_deref(), Some(*want));
        }
    }
}
