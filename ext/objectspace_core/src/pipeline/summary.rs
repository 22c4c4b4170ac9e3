//! What a pipeline saw: records, bytes, and objects and memsize by type.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::scan::{leading_u64, quoted_len};

/// Count and memsize of one object type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStat {
    pub count: u64,
    pub memsize: u64,
}

/// What a pipeline saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// JSON lines (records) read.
    pub lines: u64,
    /// Raw bytes read from the pipe.
    pub bytes: u64,
    /// gzip bytes produced (what the store holds).
    pub stored_bytes: u64,
    /// String values removed by redaction.
    pub redacted_values: u64,
    /// Lines without a `"type"` field (a cut-short record, or junk).
    pub untyped_lines: u64,
    /// Records left out of a retained dump: older than its baseline, or untraced.
    pub left_out: u64,
    /// True when the last line had no newline: the dump was cut short.
    pub truncated: bool,
    /// Milliseconds from start to the end of the stream.
    pub read_ms: u64,
    /// Objects and memsize by record type, in order of first appearance.
    pub types: Vec<(String, TypeStat)>,
}

/// The searchers for a record's `type` and `memsize`, built once per
/// pipeline, not once per line.
pub(super) struct TypeFields {
    kind: memchr::memmem::Finder<'static>,
    memsize: memchr::memmem::Finder<'static>,
}

impl TypeFields {
    pub(super) fn new() -> Self {
        TypeFields {
            kind: memchr::memmem::Finder::new(b"\"type\":\""),
            memsize: memchr::memmem::Finder::new(b"\"memsize\":"),
        }
    }
}

impl Summary {
    /// Count one record as it is stored.
    pub(super) fn count(&mut self, fields: &TypeFields, line: &[u8]) {
        self.lines += 1;
        let Some(kind) = field_str(line, &fields.kind) else {
            self.untyped_lines += 1;
            return;
        };
        let memsize = field_u64(line, &fields.memsize).unwrap_or(0);
        if let Some((_, stat)) = self.types.iter_mut().find(|(t, _)| t.as_bytes() == kind) {
            stat.count += 1;
            stat.memsize += memsize;
        } else {
            self.types.push((
                String::from_utf8_lossy(kind).into_owned(),
                TypeStat { count: 1, memsize },
            ));
        }
    }

    /// Total objects (records with a type, ROOT records excluded).
    pub fn objects(&self) -> u64 {
        self.types
            .iter()
            .filter(|(t, _)| t != "ROOT")
            .map(|(_, s)| s.count)
            .sum()
    }

    /// Add this summary's fields to a metadata record given as a JSON object.
    pub fn merge_into_meta(&self, meta_json: &str) -> Result<String> {
        let mut meta: serde_json::Value = serde_json::from_str(meta_json)
            .map_err(|e| Error::State(format!("metadata is not JSON: {e}")))?;
        let Some(object) = meta.as_object_mut() else {
            return Err(Error::State("metadata must be a JSON object".into()));
        };
        let types: serde_json::Map<String, serde_json::Value> = self
            .types
            .iter()
            .map(|(t, s)| {
                (
                    t.clone(),
                    serde_json::json!({"count": s.count, "memsize": s.memsize}),
                )
            })
            .collect();
        object.insert("lines".into(), self.lines.into());
        object.insert("objects".into(), self.objects().into());
        object.insert("bytes".into(), self.bytes.into());
        object.insert("stored_bytes".into(), self.stored_bytes.into());
        object.insert("redacted_values".into(), self.redacted_values.into());
        object.insert("left_out".into(), self.left_out.into());
        object.insert("truncated".into(), self.truncated.into());
        object.insert(
            "memsize".into(),
            self.types
                .iter()
                .map(|(_, s)| s.memsize)
                .sum::<u64>()
                .into(),
        );
        object.insert("types".into(), types.into());
        serde_json::to_string(&meta).map_err(|e| Error::State(e.to_string()))
    }
}

/// The bytes of a string field, e.g. `"type":"` -> `STRING`.
fn field_str<'a>(line: &'a [u8], needle: &memchr::memmem::Finder) -> Option<&'a [u8]> {
    let at = needle.find(line)? + needle.needle().len();
    let len = quoted_len(&line[at..])?;
    Some(&line[at..at + len])
}

/// An unsigned integer field, e.g. `"memsize":` -> 40.
fn field_u64(line: &[u8], needle: &memchr::memmem::Finder) -> Option<u64> {
    leading_u64(&line[needle.find(line)? + needle.needle().len()..])
}
