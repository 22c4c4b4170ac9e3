//! String-value redaction: a heap dump holds the contents of nearly every
//! String (session ids, tokens, passwords). `ObjectSpace.dump_all` writes them
//! as a `"value"` field on STRING (and SYMBOL) records; we drop that field and
//! keep everything else, `bytesize` included, so the record stays valid JSON.

use crate::scan::quoted_len;
use memchr::memmem;

const NEEDLE: &[u8] = b"\"value\":";

/// Removes `"value"` fields; build one and reuse it (the searcher is built once).
pub struct Redactor {
    finder: memmem::Finder<'static>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor {
            finder: memmem::Finder::new(NEEDLE),
        }
    }
}

/// Copy `line` into `out` without any `"value":...` field (see [`Redactor::redact_line`]).
pub fn redact_line(line: &[u8], out: &mut Vec<u8>) -> usize {
    Redactor::default().redact_line(line, out)
}

impl Redactor {
    /// Copy `line` into `out` without any `"value":...` field. Returns how many
    /// values were removed. A value whose end cannot be found (a line cut short)
    /// is dropped together with the rest of the line, never copied.
    pub fn redact_line(&self, line: &[u8], out: &mut Vec<u8>) -> usize {
        let finder = &self.finder;
        let mut removed = 0;
        let mut rest = line;
        while let Some(at) = finder.find(rest) {
            // Drop the separator before the field too: `, "value":` or `,"value":`.
            let mut start = at;
            while start > 0 && rest[start - 1] == b' ' {
                start -= 1;
            }
            let had_comma = start > 0 && rest[start - 1] == b',';
            if had_comma {
                start -= 1;
            }
            out.extend_from_slice(&rest[..start]);
            removed += 1;
            let value = &rest[at + NEEDLE.len()..];
            match value_end(value) {
                Some(end) => {
                    let mut after = &value[end..];
                    if !had_comma {
                        // `{"value":"x", "a":1}` -> `{"a":1}`: eat the comma after instead.
                        let trimmed = after.strip_prefix(b",").unwrap_or(after);
                        after = trimmed.strip_prefix(b" ").unwrap_or(trimmed);
                    }
                    rest = after;
                }
                None => {
                    // Unterminated: keep nothing of it; close the record if it was open.
                    if line.last() == Some(&b'\n') {
                        out.extend_from_slice(b"}\n");
                    }
                    return removed;
                }
            }
        }
        out.extend_from_slice(rest);
        removed
    }
}

/// The length of the JSON value at the start of `bytes` (after optional spaces).
fn value_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    if bytes.get(i) == Some(&b'"') {
        return Some(i + 1 + quoted_len(&bytes[i + 1..])? + 1);
    }
    // Not a string (no Ruby writes one, but never copy what we cannot parse):
    // a scalar runs to the next `,` or `}`.
    let pos = memchr::memchr2(b',', b'}', &bytes[i..])?;
    Some(i + pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(line: &str) -> (String, usize) {
        let mut out = Vec::new();
        let n = redact_line(line.as_bytes(), &mut out);
        (String::from_utf8(out).unwrap(), n)
    }

    #[test]
    fn drops_the_value_and_keeps_bytesize() {
        let line = r#"{"address":"0x7f", "type":"STRING", "class":"0x1", "bytesize":11, "value":"hunter2 pwd", "encoding":"UTF-8", "memsize":40}"#;
        let (out, n) = redact(line);
        assert_eq!(n, 1);
        assert_eq!(
            out,
            r#"{"address":"0x7f", "type":"STRING", "class":"0x1", "bytesize":11, "encoding":"UTF-8", "memsize":40}"#
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
    }

    #[test]
    fn handles_escapes_and_quotes_inside_values() {
        let line = "{\"type\":\"STRING\", \"value\":\"a\\\"b\\\\\", \"x\":1}\n";
        let (out, n) = redact(line);
        assert_eq!((out.as_str(), n), ("{\"type\":\"STRING\", \"x\":1}\n", 1));
    }

    #[test]
    fn a_value_that_looks_like_a_key_is_not_a_key() {
        // The string's content is `"value":"x"`; JSON escapes its quotes.
        let line = r#"{"type":"STRING", "value":"\"value\":\"secret\"", "memsize":40}"#;
        let (out, n) = redact(line);
        assert_eq!(n, 1);
        assert!(!out.contains("secret"), "{out}");
    }

    #[test]
    fn value_as_first_field() {
        let (out, _) = redact(r#"{"value":"tok", "type":"SYMBOL"}"#);
        assert_eq!(out, r#"{"type":"SYMBOL"}"#);
    }

    #[test]
    fn cut_short_values_are_dropped_not_copied() {
        let (out, n) = redact("{\"type\":\"STRING\", \"value\":\"secret-tok\n");
        assert_eq!(n, 1);
        assert_eq!(out, "{\"type\":\"STRING\"}\n");
        let (out, _) = redact("{\"type\":\"STRING\", \"value\":\"secret\\");
        assert_eq!(out, "{\"type\":\"STRING\"");
    }

    #[test]
    fn lines_without_values_are_copied_verbatim() {
        let line = "{\"address\":\"0x1\", \"type\":\"ARRAY\", \"length\":2}\n";
        let (out, n) = redact(line);
        assert_eq!((out.as_str(), n), (line, 0));
    }
}
