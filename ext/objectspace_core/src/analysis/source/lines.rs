//! How a dump's bytes reach the scanner: [`Lines`] splits them into lines,
//! carrying a partial line across chunks, and scans each; a [`Progress`]
//! callback hears how far a read got. Imports none of its siblings.

use memchr::memchr;

use crate::analysis::error::AnalysisError;
use crate::scan::{scan, Record};

/// Progress callback: called with the number of input bytes (as stored, so
/// compressed for gzip) consumed since the previous call. May be called from
/// several threads at once. Returning false stops the read with
/// [`AnalysisError::Interrupted`] (the caller was interrupted: Ctrl-C).
pub type Progress<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// A progress callback that reports nothing and never stops.
pub fn no_progress(_: u64) -> bool {
    true
}

/// Report `bytes` to `progress`; an error if it asks to stop.
pub(super) fn report(progress: Progress, bytes: u64) -> Result<(), AnalysisError> {
    if progress(bytes) {
        Ok(())
    } else {
        Err(AnalysisError::Interrupted)
    }
}

/// What reading one dump saw, besides its records.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    /// Lines read (blank lines included).
    pub lines: u64,
    /// Bytes of JSON read (decompressed).
    pub bytes: u64,
}

/// Bytes of an input held in memory fed at once, between progress reports.
const PROGRESS_STEP: usize = 16 << 20;

/// Splits a byte stream into lines, carrying a partial line across chunks,
/// and scans each one.
pub(super) struct Lines {
    name: String,
    pub(super) carry: Vec<u8>,
    /// Number of the last complete line handed to the scanner.
    pub(super) line: u64,
    pub(super) bytes: u64,
}

impl Lines {
    pub(super) fn new(name: &str) -> Self {
        Lines {
            name: name.to_string(),
            carry: Vec::new(),
            line: 0,
            bytes: 0,
        }
    }

    #[inline]
    fn one<F: FnMut(&Record, u64)>(
        &mut self,
        line: &[u8],
        at_end: bool,
        f: &mut F,
    ) -> Result<(), AnalysisError> {
        self.line += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        match scan(line) {
            Ok(rec) => {
                f(&rec, self.line);
                Ok(())
            }
            Err(e) => {
                let cut = at_end && e.offset >= line.len();
                let message = if cut {
                    format!(
                        "record cut short at byte {} of the line (the dump ends mid-record: {})",
                        e.offset, e.message
                    )
                } else if !line.is_ascii()
                    && std::str::from_utf8(line).is_err()
                    && line.first() != Some(&b'{')
                {
                    format!("not a JSON record (binary data?) at byte {}", e.offset)
                } else {
                    format!("{} at byte {}", e.message, e.offset)
                };
                Err(AnalysisError::Parse {
                    source_name: self.name.clone(),
                    line: self.line,
                    message,
                })
            }
        }
    }

    /// Feed one chunk; a trailing partial line is kept for the next.
    pub(super) fn feed<F: FnMut(&Record, u64)>(
        &mut self,
        mut buf: &[u8],
        f: &mut F,
    ) -> Result<(), AnalysisError> {
        self.bytes += buf.len() as u64;
        if !self.carry.is_empty() {
            match memchr(b'\n', buf) {
                Some(k) => {
                    let mut carry = std::mem::take(&mut self.carry);
                    carry.extend_from_slice(&buf[..k]);
                    self.one(&carry, false, f)?;
                    carry.clear();
                    self.carry = carry;
                    buf = &buf[k + 1..];
                }
                None => {
                    self.carry.extend_from_slice(buf);
                    return Ok(());
                }
            }
        }
        let mut start = 0;
        while let Some(k) = memchr(b'\n', &buf[start..]) {
            self.one(&buf[start..start + k], false, f)?;
            start += k + 1;
        }
        self.carry.extend_from_slice(&buf[start..]);
        Ok(())
    }

    /// Feed a whole input held in memory, reporting progress as it goes.
    pub(super) fn feed_all<F: FnMut(&Record, u64)>(
        &mut self,
        buf: &[u8],
        progress: Progress,
        f: &mut F,
    ) -> Result<(), AnalysisError> {
        let mut offset = 0;
        while offset < buf.len() {
            let end = (offset + PROGRESS_STEP).min(buf.len());
            // Cut at a line end so that no line is copied into `carry`.
            let end = if end == buf.len() {
                end
            } else {
                match memchr(b'\n', &buf[end..]) {
                    Some(k) => end + k + 1,
                    None => buf.len(),
                }
            };
            self.feed(&buf[offset..end], f)?;
            report(progress, (end - offset) as u64)?;
            offset = end;
        }
        Ok(())
    }

    pub(super) fn finish<F: FnMut(&Record, u64)>(
        mut self,
        f: &mut F,
    ) -> Result<ReadStats, AnalysisError> {
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            self.one(&carry, true, f)?;
        }
        Ok(ReadStats {
            lines: self.line,
            bytes: self.bytes,
        })
    }
}
