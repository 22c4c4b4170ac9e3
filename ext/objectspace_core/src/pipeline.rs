//! The dump pipeline: `ObjectSpace.dump_all` writes JSON lines into a pipe; a
//! Rust thread reads them, drops string values (redaction), counts objects and
//! memsize by type, and gzips the result into memory or straight into a store.
//!
//! This pipeline never holds the raw JSON whole: memory stays bounded by the
//! gzip output (memory sink, ~14x smaller than the JSON) or by one multipart
//! part (store sink), and by its 4 MiB read buffer: a record longer than that
//! (one huge String or Array) has its big field spilled to disk ([`crate::spill`]). (Ruby may hold it: dumper.rb's buffered inline path on
//! Ruby < 3.4 with other threads alive takes `dump_all` into a String first.)
//!
//! Both ends of the pipe are registered in [`crate::inherited`], so that a
//! fork child made while the dump runs lets go of them at once; the write end
//! stays owned here ([`Pipeline::write_fd`] lends it, [`Pipeline::close_write`]
//! closes it), so that it is never closed behind the registry's back.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::annotate::Annotator;
use crate::error::{Error, Result};
use crate::inherited;
use crate::redact::Redactor;
use crate::runtime;
use crate::scan::{leading_u64, quoted_len};
use crate::sites::SharedSites;
use crate::spill::{self, Field, Spool};
use crate::store::Store;

/// gzip level 1 keeps pace with dump_all; level 6 blocks Ruby (measured: 0.53 s
/// against 1.9 s for 267 MB).
pub const DEFAULT_LEVEL: u32 = 1;
/// The store sink hands the gzip output over in chunks of this size.
const CHUNK: usize = 1 << 20;

/// How a pipeline treats the lines it reads.
#[derive(Clone, Default)]
pub struct Options {
    /// Drop string `value` fields (on by default in the middleware).
    pub redact: bool,
    /// gzip level, 0-9.
    pub level: u32,
    /// Add file, line and generation from this table (see [`crate::annotate`]).
    pub sites: Option<SharedSites>,
    /// Keep only objects allocated at or after this GC generation (a retained
    /// dump); needs `sites` or objspace's own tracing fields.
    pub since: Option<u64>,
}

/// Where the gzipped dump goes.
pub enum Sink {
    /// Kept in memory and returned by `finish` (for the writer queue or a Ruby `[]=` store).
    Memory,
    /// Streamed to a store under `key` (one PUT, or a multipart upload past 8 MiB).
    Store { store: Store, key: String },
}

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

impl Summary {
    fn count(&mut self, scanner: &Scanner, line: &[u8]) {
        self.lines += 1;
        let Some(kind) = field_str(line, &scanner.kind) else {
            self.untyped_lines += 1;
            return;
        };
        let memsize = field_u64(line, &scanner.memsize).unwrap_or(0);
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

/// The result of a finished pipeline.
pub struct Finished {
    pub summary: Summary,
    /// The gzipped dump, for `Sink::Memory`; empty once stored for `Sink::Store`.
    pub gzip: Vec<u8>,
}

/// One end of a dump pipe, registered in [`crate::inherited`] while open.
struct End<T: AsRawFd>(Option<T>);

impl<T: AsRawFd> End<T> {
    fn new(inner: T) -> Self {
        inherited::register(inner.as_raw_fd());
        End(Some(inner))
    }

    fn close(&mut self) {
        if let Some(inner) = self.0.take() {
            // Forget before closing: a fork between the two keeps a copy
            // (harmless once we closed ours), never blanks a reused number.
            inherited::forget(inner.as_raw_fd());
            drop(inner);
        }
    }
}

impl<T: AsRawFd> Drop for End<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// How often a waiting [`Pipeline::finish_until`] looks at its stop flag.
const POLL: Duration = Duration::from_millis(20);

/// A running pipeline: a pipe whose write end Ruby writes into, read by a Rust thread.
pub struct Pipeline {
    write: End<OwnedFd>,
    done: Option<Receiver<Result<Finished>>>,
    /// Set when the pipeline is dropped or abandoned unfinished: the reader
    /// stops at its next block and aborts an upload in progress.
    cancel: Arc<AtomicBool>,
    /// The reader thread (detached on drop; it ends on its own). Only the
    /// tests look at it: they check that it does end.
    #[cfg_attr(not(test), allow(dead_code))]
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Open the pipe and start the reader thread.
    pub fn start(options: Options, sink: Sink) -> Result<Pipeline> {
        let (reader, writer) = std::io::pipe()?;
        let reader = End::new(reader);
        let write = End::new(OwnedFd::from(writer));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::sync_channel(1);
        let stop = cancel.clone();
        let reader = std::thread::Builder::new()
            .name("rack-objectspace-dump".into())
            .spawn(move || {
                let _ = tx.send(run(reader, options, sink, &stop));
            })?;
        Ok(Pipeline {
            write,
            done: Some(done),
            cancel,
            reader: Some(reader),
        })
    }

    /// The pipe's write end, lent: write into it (Ruby: `IO.for_fd(fd,
    /// autoclose: false)`), then call [`Pipeline::close_write`], never close(2).
    pub fn write_fd(&self) -> Result<RawFd> {
        self.write
            .0
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .ok_or_else(|| Error::State("the pipe's write end is already closed".into()))
    }

    /// Close the write end: the reader sees EOF once it has read what was written.
    pub fn close_write(&mut self) {
        self.write.close();
    }

    /// Close the write end, then wait for the reader to finish (flush gzip,
    /// complete the upload).
    pub fn finish(self) -> Result<Finished> {
        self.finish_until(&AtomicBool::new(false))
    }

    /// [`Pipeline::finish`], giving up with `Error::State("interrupted")` soon
    /// after `stop` is set: the reader is then cancelled (an upload in progress
    /// is aborted) and ends on its own.
    pub fn finish_until(mut self, stop: &AtomicBool) -> Result<Finished> {
        self.wait_finished(stop)
            .unwrap_or_else(|| Err(Error::State("interrupted".into())))
    }

    /// Close the write end and wait for the reader to finish, or until `stop`
    /// is set: then None, and the pipeline is as it was (a caller woken by a
    /// signal with nothing to do may wait again). Dropping an unfinished
    /// pipeline cancels its reader.
    pub fn wait_finished(&mut self, stop: &AtomicBool) -> Option<Result<Finished>> {
        self.close_write();
        let Some(done) = self.done.as_ref() else {
            return Some(Err(Error::State("pipeline already finished".into())));
        };
        loop {
            let outcome = match done.recv_timeout(POLL) {
                Ok(result) => result,
                Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => return None,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    Err(Error::State("the dump reader thread panicked".into()))
                }
            };
            self.done = None;
            return Some(outcome);
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Unfinished (an error, an interrupt): the reader stops at its next
        // block; closing our write end lets it see EOF if it is waiting.
        if self.done.is_some() {
            self.cancel.store(true, Ordering::Relaxed);
        }
        self.write.close();
    }
}

/// Where gzip output goes while the stream runs.
enum Out {
    Memory,
    Store {
        key: String,
        writer: Box<object_store::buffered::BufWriter>,
    },
}

impl Out {
    /// Move full chunks of gzip output to the store (no-op for memory).
    fn drain(&mut self, encoder: &mut GzEncoder<Vec<u8>>, at_least: usize) -> Result<()> {
        if let Out::Store { key, writer } = self {
            if encoder.get_ref().len() >= at_least {
                // A copy of exactly the bytes (the Vec's spare capacity would
                // ride along in each part otherwise); the Vec keeps its capacity.
                let chunk = Bytes::copy_from_slice(encoder.get_ref());
                encoder.get_mut().clear();
                runtime::block_on(writer.put(chunk))?.map_err(|e| Error::store(&*key, e))?;
            }
        }
        Ok(())
    }
}

fn run(
    reader: End<std::io::PipeReader>,
    options: Options,
    sink: Sink,
    cancel: &AtomicBool,
) -> Result<Finished> {
    let started = Instant::now();
    let mut out = match sink {
        Sink::Memory => Out::Memory,
        Sink::Store { store, key } => Out::Store {
            writer: Box::new(store.writer(&key)),
            key,
        },
    };
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(CHUNK * 2),
        Compression::new(options.level.min(9)),
    );
    let mut summary = Summary::default();
    let result = stream(
        reader,
        options,
        &mut summary,
        &mut encoder,
        &mut out,
        cancel,
    );
    if let Err(err) = result {
        if let Out::Store { writer, .. } = &mut out {
            let _ = runtime::block_on(writer.abort());
        }
        return Err(err);
    }
    summary.read_ms = started.elapsed().as_millis() as u64;
    let mut gzip = encoder.finish()?;
    summary.stored_bytes += gzip.len() as u64;
    if let Out::Store { key, mut writer } = out {
        let chunk = Bytes::from(std::mem::take(&mut gzip));
        runtime::block_on(async {
            writer.put(chunk).await?;
            writer.shutdown().await
        })?
        .map_err(|e| Error::store(&key, e))?;
    }
    Ok(Finished { summary, gzip })
}

/// Searchers built once per pipeline, not once per line.
struct Scanner {
    kind: memchr::memmem::Finder<'static>,
    memsize: memchr::memmem::Finder<'static>,
    redactor: Redactor,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            kind: memchr::memmem::Finder::new(b"\"type\":\""),
            memsize: memchr::memmem::Finder::new(b"\"memsize\":"),
            redactor: Redactor::default(),
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

/// Read whole blocks of lines, count and redact each line, and hand each block
/// to gzip in one call (per-line calls into the compressor cost more than the lines).
fn stream(
    mut pipe: End<std::io::PipeReader>,
    options: Options,
    summary: &mut Summary,
    encoder: &mut GzEncoder<Vec<u8>>,
    out: &mut Out,
    cancel: &AtomicBool,
) -> Result<()> {
    let reader = pipe
        .0
        .as_mut()
        .ok_or_else(|| Error::State("the pipe's read end is closed".into()))?;
    widen_pipe(reader);
    let scanner = Scanner::new();
    let mut annotator = options
        .sites
        .clone()
        .map(|sites| Annotator::new(sites, options.since));
    let rewrite = options.redact || annotator.is_some();
    let redactor = options.redact.then_some(&scanner.redactor);
    let mut buf = vec![0u8; 4 * CHUNK];
    let mut filled = 0;
    let mut redacted = Vec::with_capacity(4 * CHUNK);
    // The first line in `buf` had its big field spilled (kept: to be put back).
    let mut spilled: Option<(Field, Spool)> = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(abandoned());
        }
        if filled == buf.len() {
            // One line longer than the buffer: spill its big field, if it has
            // one open (a huge String's value, a huge Array's references).
            let open = spill::open_field(&buf[..filled]).filter(|_| spilled.is_none());
            if let Some((start, field)) = open {
                let drop = options.redact && field == Field::Value;
                let mut spool = if drop { None } else { Spool::create() };
                if drop || spool.is_some() {
                    let closed = spill_field(
                        reader,
                        &mut buf,
                        (start, filled),
                        field,
                        spool.as_mut(),
                        summary,
                        cancel,
                    )?;
                    // At the end of input inside the field, what came before
                    // it is left: a record cut short, stored as such.
                    filled = closed.unwrap_or(start);
                    spilled = closed.and(spool).map(|s| (field, s));
                    continue;
                }
            }
            // No spool to be had, or some other huge line: grow.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let at_eof = n == 0;
        filled += n;
        summary.bytes += n as u64;
        let end = if at_eof {
            filled
        } else {
            match memchr::memrchr(b'\n', &buf[..filled]) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        if end > 0 {
            let block = &buf[..end];
            redacted.clear();
            let mut start = 0;
            // Where the first record's output ends (0 if it was left out).
            let mut first_out = 0;
            while start < block.len() {
                let stop =
                    memchr::memchr(b'\n', &block[start..]).map_or(block.len(), |i| start + i + 1);
                let line = &block[start..stop];
                let first = start == 0;
                start = stop;
                let mut values = 0;
                let mut copy = |l: &[u8], o: &mut Vec<u8>| match redactor {
                    Some(r) => values = r.redact_line(l, o),
                    None => o.extend_from_slice(l),
                };
                let at = redacted.len();
                let kept = match annotator.as_mut() {
                    Some(a) => a.process(line, &mut redacted, copy),
                    None if rewrite => {
                        copy(line, &mut redacted);
                        true
                    }
                    None => true,
                };
                if first && kept {
                    first_out = if rewrite { redacted.len() } else { stop };
                }
                if !kept {
                    summary.left_out += 1;
                    continue;
                }
                summary.redacted_values += values as u64;
                let kept = if rewrite { &redacted[at..] } else { line };
                summary.count(&scanner, kept);
            }
            summary.truncated = block.last() != Some(&b'\n');
            let output: &[u8] = if rewrite { &redacted } else { block };
            // A spilled field goes back where its placeholder is, in the
            // first record (unless it was left out).
            let put_back = spilled.take().and_then(|(field, spool)| {
                let at = memchr::memmem::find(&output[..first_out], field.placeholder())?;
                Some((at, at + field.placeholder().len(), spool))
            });
            match put_back {
                Some((at, after, spool)) => {
                    emit(encoder, out, summary, &output[..at])?;
                    let mut chunk = vec![0u8; CHUNK];
                    spool.replay(&mut chunk, |c| emit(encoder, out, summary, c))?;
                    emit(encoder, out, summary, &output[after..])?;
                }
                None => emit(encoder, out, summary, output)?,
            }
            buf.copy_within(end..filled, 0);
            filled -= end;
        }
        if at_eof {
            return Ok(());
        }
    }
}

fn abandoned() -> Error {
    Error::State("the dump was abandoned".into())
}

/// Gzip `bytes`; for a store, hand full chunks on.
fn emit(
    encoder: &mut GzEncoder<Vec<u8>>,
    out: &mut Out,
    summary: &mut Summary,
    bytes: &[u8],
) -> Result<()> {
    encoder.write_all(bytes)?;
    if let Out::Store { .. } = out {
        let before = encoder.get_ref().len() as u64;
        out.drain(encoder, CHUNK)?;
        if encoder.get_ref().is_empty() {
            summary.stored_bytes += before;
        }
    }
    Ok(())
}

/// The content of `field`, open at `start` in `buf[..filled]`, goes to
/// `spool` (or nowhere) until it closes; `buf` then holds the record's head,
/// the field's placeholder and what followed the field, and the new fill is
/// returned. `None` at the end of input inside the field.
fn spill_field(
    reader: &mut std::io::PipeReader,
    buf: &mut Vec<u8>,
    (start, filled): (usize, usize),
    field: Field,
    mut spool: Option<&mut Spool>,
    summary: &mut Summary,
    cancel: &AtomicBool,
) -> Result<Option<usize>> {
    if buf.len() - start < CHUNK {
        buf.resize(start + CHUNK, 0);
    }
    let mut end = spill::End::new(field);
    let (mut from, mut to) = (start, filled);
    loop {
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
            match reader.read(&mut buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        summary.bytes += n as u64;
        (from, to) = (start, start + n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    fn gunzip(bytes: &[u8]) -> String {
        let mut s = String::new();
        GzDecoder::new(bytes).read_to_string(&mut s).unwrap();
        s
    }

    fn memory_pipeline(redact: bool, level: u32) -> Pipeline {
        Pipeline::start(
            Options {
                redact,
                level,
                ..Options::default()
            },
            Sink::Memory,
        )
        .unwrap()
    }

    fn write_and_finish(pipeline: Pipeline, text: &[u8]) -> Result<Finished> {
        let fd = pipeline.write_fd()?;
        // SAFETY: write_fd lends a valid, open descriptor; ManuallyDrop keeps
        // the File from closing it (the pipeline does).
        let mut file = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        file.write_all(text).unwrap();
        pipeline.finish()
    }

    const DUMP: &str = concat!(
        "{\"type\":\"ROOT\", \"root\":\"vm\", \"references\":[\"0x1\"]}\n",
        "{\"address\":\"0x1\", \"type\":\"STRING\", \"class\":\"0x9\", \"bytesize\":6, \"value\":\"s3cret\", \"encoding\":\"UTF-8\", \"memsize\":40}\n",
        "{\"address\":\"0x2\", \"type\":\"ARRAY\", \"class\":\"0x8\", \"length\":1, \"file\":\"app.rb\", \"line\":3, \"memsize\":80}\n",
        "{\"address\":\"0x3\", \"type\":\"STRING\", \"class\":\"0x9\", \"bytesize\":2, \"value\":\"hi\", \"memsize\":40}\n",
    );

    #[test]
    fn round_trip_in_memory_redacts_and_summarises() {
        let p = memory_pipeline(true, 1);
        let done = write_and_finish(p, DUMP.as_bytes()).unwrap();
        let text = gunzip(&done.gzip);
        let expected = DUMP
            .replace(", \"value\":\"s3cret\"", "")
            .replace(", \"value\":\"hi\"", "");
        assert_eq!(text, expected);
        assert!(!text.contains("s3cret"));
        let s = done.summary;
        assert_eq!(
            (s.lines, s.bytes, s.redacted_values, s.truncated),
            (4, DUMP.len() as u64, 2, false)
        );
        assert_eq!(s.objects(), 3);
        assert_eq!(
            s.types[1],
            (
                "STRING".to_string(),
                TypeStat {
                    count: 2,
                    memsize: 80
                }
            )
        );
        assert_eq!(s.stored_bytes, done.gzip.len() as u64);
    }

    #[test]
    fn a_retained_pipeline_keeps_traced_objects_since_the_baseline() {
        // Objects are at least 40 bytes apart, as in a real heap.
        let dump = DUMP
            .replace("0x3", "0x78")
            .replace("0x2", "0x50")
            .replace("0x1", "0x28");
        let mut sites = crate::sites::SiteTable::default();
        sites.record(0x28, Some((7, b"app.rb")), 10, 4);
        sites.record(0x78, Some((7, b"app.rb")), 11, 2);
        let options = Options {
            redact: true,
            level: 1,
            sites: Some(std::sync::Arc::new(parking_lot::Mutex::new(sites))),
            since: Some(3),
        };
        let p = Pipeline::start(options, Sink::Memory).unwrap();
        let done = write_and_finish(p, dump.as_bytes()).unwrap();
        // 0x28 (generation 4) stays, with its site and without its value; the
        // ROOT, 0x50 (untraced) and 0x78 (generation 2) are left out.
        assert_eq!(
            gunzip(&done.gzip),
            "{\"address\":\"0x28\", \"type\":\"STRING\", \"class\":\"0x9\", \"bytesize\":6, \"encoding\":\"UTF-8\", \"memsize\":40, \"file\":\"app.rb\", \"line\":10, \"generation\":4}\n"
        );
        let s = done.summary;
        assert_eq!((s.lines, s.left_out, s.redacted_values), (1, 3, 1));
        assert_eq!(s.objects(), 1);
    }

    /// Records far longer than the 4 MiB buffer, with escapes all along.
    fn huge_records() -> String {
        let value = r#"ab\\\"cd\\"#.repeat(1_500_000); // escaped backslashes and quotes
        let refs = vec!["\"0x7f00deadbeef\""; 700_000].join(", ");
        format!(
            concat!(
                "{{\"address\":\"0x1\", \"type\":\"STRING\", \"bytesize\":9, \"value\":\"{}\", \"memsize\":40}}\n",
                "{{\"address\":\"0x2\", \"type\":\"ARRAY\", \"length\":700000, \"references\":[{}], \"memsize\":5600040}}\n",
                "{{\"address\":\"0x3\", \"type\":\"STRING\", \"value\":\"hi\", \"memsize\":40}}\n",
            ),
            value, refs
        )
    }

    #[test]
    fn records_longer_than_the_buffer_round_trip() {
        let dump = huge_records();
        assert!(dump.len() > 4 * 4 * CHUNK);
        let done = write_and_finish(memory_pipeline(false, 1), dump.as_bytes()).unwrap();
        assert_eq!(gunzip(&done.gzip), dump);
        assert_eq!(
            (done.summary.lines, done.summary.bytes),
            (3, dump.len() as u64)
        );
        assert_eq!(done.summary.objects(), 3);

        let done = write_and_finish(memory_pipeline(true, 1), dump.as_bytes()).unwrap();
        let text = gunzip(&done.gzip);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].get("value").is_none() && lines[2].get("value").is_none());
        assert_eq!(lines[0]["memsize"], 40);
        assert_eq!(lines[1]["references"].as_array().unwrap().len(), 700_000);
        assert_eq!(done.summary.redacted_values, 2);
    }

    #[test]
    fn a_dump_cut_inside_a_huge_value_keeps_nothing_of_it() {
        let dump = huge_records();
        let cut = &dump.as_bytes()[..10 * CHUNK];
        let done = write_and_finish(memory_pipeline(true, 1), cut).unwrap();
        assert_eq!(
            gunzip(&done.gzip),
            "{\"address\":\"0x1\", \"type\":\"STRING\", \"bytesize\":9"
        );
        assert!(done.summary.truncated);
        assert_eq!(done.summary.bytes, cut.len() as u64);
    }

    #[test]
    fn redaction_can_be_turned_off() {
        let p = memory_pipeline(false, 6);
        let done = write_and_finish(p, DUMP.as_bytes()).unwrap();
        assert_eq!(gunzip(&done.gzip), DUMP);
        assert_eq!(done.summary.redacted_values, 0);
    }

    #[test]
    fn a_dump_cut_short_is_flagged() {
        let cut = &DUMP.as_bytes()[..DUMP.len() - 30];
        let p = memory_pipeline(true, 1);
        let done = write_and_finish(p, cut).unwrap();
        assert!(done.summary.truncated);
        assert!(!gunzip(&done.gzip).contains("hi\""));
    }

    #[test]
    fn dropping_an_unused_pipeline_ends_its_thread() {
        use std::time::Duration;
        let mut p = memory_pipeline(true, 1);
        // Watch the reader through its handle; dropping the pipeline only
        // closes the write end, which must be enough for the reader to end.
        let reader = p.reader.take().expect("a reader thread");
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !reader.is_finished(),
            "the reader waits for the dump while the pipeline lives"
        );
        drop(p);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reader.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the reader thread still runs 10 s after the pipeline was dropped"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        reader.join().expect("the reader does not panic");
    }

    #[test]
    fn both_ends_are_registered_while_open() {
        let mut p = memory_pipeline(true, 1);
        let fd = p.write_fd().unwrap();
        assert!(inherited::registered().contains(&fd));
        p.close_write();
        assert!(!inherited::registered().contains(&fd));
        assert!(p.write_fd().is_err());
        p.finish().unwrap();
    }

    #[test]
    fn finish_until_gives_up_when_asked_and_the_reader_is_cancelled() {
        let p = memory_pipeline(true, 1);
        let fd = p.write_fd().unwrap();
        // Someone else holds a copy of the write end (as a fork child would):
        // the reader never sees EOF.
        // SAFETY: dup of a valid descriptor; the copy is closed below.
        let copy = unsafe { libc::dup(fd) };
        assert!(copy >= 0);
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let stopper = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, Ordering::Relaxed);
            });
            p.finish_until(&stop)
        });
        assert!(matches!(stopper, Err(Error::State(ref m)) if m == "interrupted"));
        assert!(started.elapsed() < Duration::from_secs(2));
        // SAFETY: our own copy.
        unsafe { libc::close(copy) };
    }

    #[test]
    fn a_fork_child_lets_go_of_the_pipe() {
        let p = memory_pipeline(true, 1);
        let fd = p.write_fd().unwrap();
        // SAFETY: the child only calls async-signal-safe functions, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                inherited::release_in_child();
                libc::sleep(5);
                libc::_exit(0);
            }
        }
        assert!(pid > 0);
        let started = Instant::now();
        // SAFETY: the lent descriptor is valid until finish; ManuallyDrop keeps it open.
        let mut file = std::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        file.write_all(DUMP.as_bytes()).unwrap();
        let done = p.finish().unwrap();
        let waited = started.elapsed();
        // SAFETY: reap our child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(done.summary.objects(), 3);
        assert!(
            waited < Duration::from_secs(3),
            "finish waited {waited:?} for the child"
        );
    }

    #[test]
    fn meta_gets_the_summary() {
        let p = memory_pipeline(true, 1);
        let done = write_and_finish(p, DUMP.as_bytes()).unwrap();
        let meta = done
            .summary
            .merge_into_meta(r#"{"request":{"path":"/x"}}"#)
            .unwrap();
        let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        assert_eq!(meta["request"]["path"], "/x");
        assert_eq!(meta["objects"], 3);
        assert_eq!(meta["types"]["STRING"]["count"], 2);
        assert!(done.summary.merge_into_meta("[1]").is_err());
    }
}
