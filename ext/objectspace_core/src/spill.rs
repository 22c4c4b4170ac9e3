//! Records longer than the pipeline's buffer: one object can be bigger than
//! any buffer we would want to hold (a file read into a String, an Array of
//! millions of elements). Nearly all of such a record is one field: a
//! String's `"value"` or an Array's or Hash's `"references"`. The pipeline
//! keeps the record's head and tail in its buffer, with a short placeholder
//! where that field's content was, and the content itself goes to a spool
//! file on disk (or nowhere, when redaction drops it). When the record is
//! written out, the placeholder is replaced by the spooled content, streamed
//! in chunks. Memory stays bounded by the buffer whatever the record's size.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::scan::quoted_len;

/// Which field's content is spilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// A string value, after its opening quote; ends at the closing quote.
    Value,
    /// A `references` array, after its `[`; ends at its `]`.
    References,
}

impl Field {
    /// What stands in for the content while the record is processed: the
    /// record stays valid JSON, and the marker cannot appear elsewhere in it
    /// (only this field's content could hold it, and that content is gone).
    pub fn placeholder(self) -> &'static [u8] {
        match self {
            Field::Value => b"\\u0000rack-objectspace:spilled\\u0000",
            Field::References => b"\"rack-objectspace:spilled\"",
        }
    }
}

/// `head` is the start of one record with no newline in it: where the
/// content of a `"value"` string or a `references` array that is still open
/// at the end of `head` begins, and which it is.
pub fn open_field(head: &[u8]) -> Option<(usize, Field)> {
    if let Some(at) = memchr::memmem::find(head, b"\"value\":\"") {
        let start = at + 9;
        if quoted_len(&head[start..]).is_none() {
            return Some((start, Field::Value));
        }
    }
    if let Some(at) = memchr::memmem::find(head, b"\"references\":[") {
        let start = at + 14;
        if memchr::memchr(b']', &head[start..]).is_none() {
            return Some((start, Field::References));
        }
    }
    None
}

/// Finds the end of a spilled field's content across chunks.
pub struct End {
    field: Field,
    /// The previous chunk ended with a backslash inside the string.
    escaped: bool,
}

impl End {
    pub fn new(field: Field) -> Self {
        End {
            field,
            escaped: false,
        }
    }

    /// The offset in `chunk` of the closing quote or bracket, if it is there.
    pub fn find(&mut self, chunk: &[u8]) -> Option<usize> {
        match self.field {
            Field::References => memchr::memchr(b']', chunk),
            Field::Value => {
                let mut i = 0;
                if self.escaped {
                    if chunk.is_empty() {
                        return None;
                    }
                    self.escaped = false;
                    i = 1;
                }
                while let Some(pos) = memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                    let at = i + pos;
                    if chunk[at] == b'"' {
                        return Some(at);
                    }
                    if at + 1 == chunk.len() {
                        self.escaped = true;
                        return None;
                    }
                    i = at + 2;
                }
                None
            }
        }
    }
}

/// Spilled content: an unlinked temporary file, read back once.
pub struct Spool {
    file: File,
    pub len: u64,
}

impl Spool {
    /// A new spool in the temporary directory; `None` where none can be
    /// made (the pipeline then holds the record in memory, as before).
    pub fn create() -> Option<Spool> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rack-objectspace-spill-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .ok()?;
        // Unlinked at once: nothing is left behind, whatever happens next.
        let _ = std::fs::remove_file(&path);
        Some(Spool { file, len: 0 })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Hand the content back in chunks of up to `buf.len()` bytes.
    pub fn replay(
        mut self,
        buf: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut left = self.len;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            sink(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_open_field() {
        assert_eq!(
            open_field(br#"{"address":"0x1", "type":"STRING", "value":"abc"#),
            Some((44, Field::Value))
        );
        assert_eq!(
            open_field(br#"{"address":"0x1", "type":"STRING", "value":"abc", "x":"#),
            None
        );
        assert_eq!(
            open_field(br#"{"address":"0x1", "type":"ARRAY", "references":["0x2", "0x3"#),
            Some((48, Field::References))
        );
        assert_eq!(
            open_field(br#"{"address":"0x1", "type":"ARRAY", "references":["0x2"], "fi"#),
            None
        );
    }

    #[test]
    fn the_end_of_a_value_across_chunks_minds_escapes() {
        let mut end = End::new(Field::Value);
        assert_eq!(end.find(br#"abc\"de"#), None);
        assert_eq!(end.find(br#"f\\"#), None); // an escaped backslash, then no quote
        assert_eq!(end.find(b"gh\\"), None); // a backslash at the chunk's end...
        assert_eq!(end.find(b"\"ij\"k"), Some(3)); // ...escapes this chunk's first quote
        let mut end = End::new(Field::References);
        assert_eq!(end.find(b"\"0x1\", \"0x2\""), None);
        assert_eq!(end.find(b", \"0x3\"], \"file\""), Some(7));
    }

    #[test]
    fn the_end_is_found_wherever_the_chunks_split() {
        let value = r#"ab\\\"cd\\"#.repeat(3);
        let text = format!(r#"{value}", "memsize":40}}"#);
        let b = text.as_bytes();
        for cut in 0..=b.len() {
            let mut end = End::new(Field::Value);
            let found = end
                .find(&b[..cut])
                .or_else(|| end.find(&b[cut..]).map(|i| i + cut));
            assert_eq!(found, Some(value.len()), "split at {cut}");
        }
    }

    #[test]
    fn a_spool_gives_back_what_it_took() {
        let mut spool = Spool::create().expect("a temporary file");
        spool.write(b"hello ").unwrap();
        spool.write(b"world").unwrap();
        let mut got = Vec::new();
        spool
            .replay(&mut [0u8; 4], |c| {
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert_eq!(got, b"hello world");
    }
}
