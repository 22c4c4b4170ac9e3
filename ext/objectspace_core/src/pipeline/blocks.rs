//! The pipe read into blocks of whole lines. A line longer than the buffer
//! has its big field spilled ([`crate::spill`]): the block then holds the
//! record with a placeholder, and the field comes with the block to be put
//! back when the record is written.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::End;
use crate::error::{Error, Result};
use crate::spill::{self, Field, Spool};

/// The read buffer: a record longer than this has its big field spilled.
pub(super) const BUFFER: usize = 4 << 20;
/// Room kept to read into while a field is spilled.
const SPILL_ROOM: usize = 1 << 20;

/// Whole lines read from the pipe, at least one at a time.
pub(super) struct Block<'a> {
    /// Whole lines; the last one has no newline only at the end of input.
    pub lines: &'a [u8],
    /// The field spilled out of the first line, where its placeholder stands.
    pub spilled: Option<(Field, Spool)>,
}

/// Reads the pipe into a buffer and hands out the whole lines in it.
pub(super) struct Blocks {
    pipe: End<std::io::PipeReader>,
    /// Drop a spilled string value instead of spooling it (redaction).
    drop_values: bool,
    buf: Vec<u8>,
    filled: usize,
    /// The end of the block handed out last, dropped at the next call.
    handed_out: usize,
    at_eof: bool,
    /// The first line in `buf` had its big field spilled (kept: to be put back).
    spilled: Option<(Field, Spool)>,
    /// Raw bytes read from the pipe.
    pub bytes: u64,
}

impl Blocks {
    pub(super) fn new(pipe: End<std::io::PipeReader>, drop_values: bool) -> Result<Blocks> {
        widen_pipe(pipe.0.as_ref().ok_or_else(read_end_closed)?);
        Ok(Blocks {
            pipe,
            drop_values,
            buf: vec![0u8; BUFFER],
            filled: 0,
            handed_out: 0,
            at_eof: false,
            spilled: None,
            bytes: 0,
        })
    }

    /// The next block of whole lines, or None at the end of input.
    pub(super) fn next(&mut self, cancel: &AtomicBool) -> Result<Option<Block<'_>>> {
        let end = self.handed_out;
        self.buf.copy_within(end..self.filled, 0);
        self.filled -= end;
        self.handed_out = 0;
        if self.at_eof {
            return Ok(None);
        }
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(abandoned());
            }
            if self.filled == self.buf.len() && self.spill(cancel)? {
                continue;
            }
            let reader = self.pipe.0.as_mut().ok_or_else(read_end_closed)?;
            let n = match reader.read(&mut self.buf[self.filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.at_eof = n == 0;
            self.filled += n;
            self.bytes += n as u64;
            let end = if self.at_eof {
                self.filled
            } else {
                match memchr::memrchr(b'\n', &self.buf[..self.filled]) {
                    Some(i) => i + 1,
                    None => continue,
                }
            };
            if end > 0 {
                self.handed_out = end;
                return Ok(Some(Block {
                    lines: &self.buf[..end],
                    spilled: self.spilled.take(),
                }));
            }
            if self.at_eof {
                return Ok(None);
            }
        }
    }

    /// The buffer holds one line, longer than the buffer: spill its big
    /// field, if it has one open (a huge String's value, a huge Array's
    /// references), and return true; else grow the buffer and return false.
    fn spill(&mut self, cancel: &AtomicBool) -> Result<bool> {
        let filled = self.filled;
        let open = spill::open_field(&self.buf[..filled]).filter(|_| self.spilled.is_none());
        if let Some((start, field)) = open {
            let drop = self.drop_values && field == Field::Value;
            let mut spool = if drop { None } else { Spool::create() };
            if drop || spool.is_some() {
                let closed = self.spill_field((start, filled), field, spool.as_mut(), cancel)?;
                // At the end of input inside the field, what came before
                // it is left: a record cut short, stored as such.
                self.filled = closed.unwrap_or(start);
                self.spilled = closed.and(spool).map(|s| (field, s));
                return Ok(true);
            }
        }
        // No spool to be had, or some other huge line: grow.
        self.buf.resize(self.buf.len() * 2, 0);
        Ok(false)
    }

    /// The content of `field`, open at `start` in `buf[..filled]`, goes to
    /// `spool` (or nowhere) until it closes; `buf` then holds the record's
    /// head, the field's placeholder and what followed the field, and the new
    /// fill is returned. `None` at the end of input inside the field.
    fn spill_field(
        &mut self,
        (start, filled): (usize, usize),
        field: Field,
        mut spool: Option<&mut Spool>,
        cancel: &AtomicBool,
    ) -> Result<Option<usize>> {
        if self.buf.len() - start < SPILL_ROOM {
            self.buf.resize(start + SPILL_ROOM, 0);
        }
        let mut end = spill::End::new(field);
        let (mut from, mut to) = (start, filled);
        loop {
            let buf = &mut self.buf;
            if let Some(i) = end.find(&buf[from..to]) {
                let close = from + i;
                if let Some(s) = spool.as_mut() {
                    s.write(&buf[from..close])?;
                }
                let placeholder = field.placeholder();
                let fill = start + placeholder.len() + (to - close);
                if fill > buf.len() {
                    buf.resize(fill, 0);
                }
                buf.copy_within(close..to, start + placeholder.len());
                buf[start..start + placeholder.len()].copy_from_slice(placeholder);
                return Ok(Some(fill));
            }
            if let Some(s) = spool.as_mut() {
                s.write(&buf[from..to])?;
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(abandoned());
            }
            let n = loop {
                let reader = self.pipe.0.as_mut().ok_or_else(read_end_closed)?;
                match reader.read(&mut self.buf[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if n == 0 {
                return Ok(None);
            }
            self.bytes += n as u64;
            (from, to) = (start, start + n);
        }
    }
}

/// Grow the pipe to 1 MiB (best effort): fewer wake-ups between Ruby and us.
fn widen_pipe(reader: &std::io::PipeReader) {
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure (an old kernel, a limit) is harmless.
    unsafe {
        libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

fn read_end_closed() -> Error {
    Error::State("the pipe's read end is closed".into())
}

fn abandoned() -> Error {
    Error::State("the dump was abandoned".into())
}
