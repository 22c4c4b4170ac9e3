//! Where dumps come from, and how their lines reach the scanner.
//!
//! Local files are read (and gunzipped: gzip is detected by its magic bytes,
//! not the file name) on a reader thread, so that reading and inflating
//! overlap with parsing. Store objects are fetched whole (a dump is
//! tens of MB compressed at most) and then handled the same way.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use memchr::memchr;

use super::error::AnalysisError;
use crate::scan::{scan, Record};
use crate::store::Store;

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
fn report(progress: Progress, bytes: u64) -> Result<(), AnalysisError> {
    if progress(bytes) {
        Ok(())
    } else {
        Err(AnalysisError::Interrupted)
    }
}

/// One dump to read.
#[derive(Clone, Debug)]
pub enum Input {
    /// A file on this machine.
    Local(PathBuf),
    /// An object in a store, by key relative to the store's prefix.
    Stored { store: Store, key: String },
}

impl Input {
    /// The name used in messages: the path, or the store URL and key.
    pub fn name(&self) -> String {
        match self {
            Input::Local(p) => p.display().to_string(),
            Input::Stored { store, key } => {
                format!("{}/{}", store.url().trim_end_matches('/'), key)
            }
        }
    }

    /// The size as stored, for progress (0 when unknown).
    pub fn stored_size(&self) -> u64 {
        match self {
            Input::Local(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Input::Stored { .. } => 0,
        }
    }

    /// Read the whole object (used for small metadata records).
    pub fn read_all(&self) -> Result<Vec<u8>, AnalysisError> {
        match self {
            Input::Local(p) => std::fs::read(p).map_err(|e| read_error(&self.name(), e)),
            Input::Stored { store, key } => {
                let bytes = crate::runtime::block_on(store.get(key))??;
                Ok(bytes.to_vec())
            }
        }
    }
}

fn read_error(name: &str, e: io::Error) -> AnalysisError {
    let message = match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    AnalysisError::Read {
        source_name: name.to_string(),
        message,
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

const CHUNK: usize = 4 << 20;
const PROGRESS_STEP: usize = 16 << 20;

/// Read every record of a dump, in order, calling `f` with each and its line
/// number (1-based). Any unreadable part stops the read with an error that
/// names the input and the line.
pub fn read_records<F>(
    input: &Input,
    progress: Progress,
    mut f: F,
) -> Result<ReadStats, AnalysisError>
where
    F: FnMut(&Record, u64),
{
    let name = input.name();
    let mut lines = Lines::new(&name);
    match input {
        Input::Local(path) => read_local(path, &name, &mut lines, progress, &mut f)?,
        Input::Stored { store, key } => {
            let bytes = crate::runtime::block_on(store.get(key))??;
            report(progress, bytes.len() as u64)?;
            if is_gzip(&bytes) {
                pump_on_thread(
                    io::Cursor::new(bytes),
                    true,
                    &name,
                    &mut lines,
                    &no_progress,
                    &mut f,
                )?;
            } else {
                lines.feed_all(&bytes, &no_progress, &mut f)?;
            }
        }
    }
    lines.finish(&mut f)
}

fn is_gzip(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == 0x1f && b[1] == 0x8b
}

fn read_local<F: FnMut(&Record, u64)>(
    path: &Path,
    name: &str,
    lines: &mut Lines,
    progress: Progress,
    f: &mut F,
) -> Result<(), AnalysisError> {
    let mut file = File::open(path).map_err(|e| read_error(name, e))?;
    let meta = file.metadata().map_err(|e| read_error(name, e))?;
    if meta.is_dir() {
        return Err(AnalysisError::Read {
            source_name: name.to_string(),
            message: "is a folder; give a dump file (or use `leaks`/`ls` for a folder)".into(),
        });
    }
    // Sniff gzip from the first bytes, then read on from there (no reopening:
    // a FIFO or `<(zcat ...)` is read once, as it comes).
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(name, e)),
        }
    }
    if got == 0 {
        return Ok(());
    }
    let raw = io::Cursor::new(magic[..got].to_vec()).chain(file);
    // Plain JSON: a reader thread fills buffers with read(2) while this thread
    // parses (faster here than an mmap, whose page faults land on the parser).
    pump_on_thread(raw, is_gzip(&magic[..got]), name, lines, progress, f)
}

/// Counts the compressed bytes read, for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Chunk {
    Data(Vec<u8>),
    Error(io::Error),
}

/// Read `raw` (gunzipping it when `gzip`) on a reader thread, in big chunks,
/// and parse the lines on this thread as they arrive.
fn pump_on_thread<R, F>(
    raw: R,
    gzip: bool,
    name: &str,
    lines: &mut Lines,
    progress: Progress,
    f: &mut F,
) -> Result<(), AnalysisError>
where
    R: Read + Send + 'static,
    F: FnMut(&Record, u64),
{
    let count = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: raw,
        count: count.clone(),
    };
    let (tx, rx) = sync_channel::<Chunk>(4);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(6);
    let reader = std::thread::Builder::new()
        .name("objectspace-inflate".into())
        .spawn(move || {
            let mut gz: Box<dyn Read> = if gzip {
                Box::new(flate2::read::MultiGzDecoder::new(
                    io::BufReader::with_capacity(1 << 20, counting),
                ))
            } else {
                Box::new(counting)
            };
            loop {
                let mut buf = back_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                // Reused buffers keep their old bytes: no zeroing needed
                // beyond the first use, as only `filled` bytes are sent.
                if buf.len() != CHUNK {
                    buf.resize(CHUNK, 0);
                }
                let mut filled = 0;
                let mut failure = None;
                while filled < CHUNK {
                    match gz.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                buf.truncate(filled);
                let done = filled < CHUNK;
                if filled > 0 && tx.send(Chunk::Data(buf)).is_err() {
                    return;
                }
                if let Some(e) = failure {
                    let _ = tx.send(Chunk::Error(e));
                    return;
                }
                if done {
                    return;
                }
            }
        })
        .map_err(|e| read_error(name, e))?;
    let result = consume(&rx, &back_tx, &count, gzip, name, lines, progress, f);
    drop(rx);
    let _ = reader.join();
    result
}

#[allow(clippy::too_many_arguments)]
fn consume<F: FnMut(&Record, u64)>(
    rx: &Receiver<Chunk>,
    back: &std::sync::mpsc::SyncSender<Vec<u8>>,
    count: &AtomicU64,
    gzip: bool,
    name: &str,
    lines: &mut Lines,
    progress: Progress,
    f: &mut F,
) -> Result<(), AnalysisError> {
    let mut reported = 0u64;
    for chunk in rx.iter() {
        match chunk {
            Chunk::Data(buf) => {
                lines.feed(&buf, f)?;
                let _ = back.try_send(buf);
                let now = count.load(Ordering::Relaxed);
                report(progress, now - reported)?;
                reported = now;
            }
            Chunk::Error(e) if gzip => return Err(gzip_error(name, lines, e)),
            Chunk::Error(e) => {
                return Err(AnalysisError::Read {
                    source_name: name.to_string(),
                    message: format!("read failed after line {}: {e}", lines.line),
                })
            }
        }
    }
    let now = count.load(Ordering::Relaxed);
    report(progress, now.saturating_sub(reported))
}

fn gzip_error(name: &str, lines: &Lines, e: io::Error) -> AnalysisError {
    let complete = lines.line;
    if e.kind() == io::ErrorKind::UnexpectedEof {
        AnalysisError::Truncated {
            source_name: name.to_string(),
            line: complete,
            bytes: lines.bytes,
        }
    } else {
        AnalysisError::Parse {
            source_name: name.to_string(),
            line: complete + 1,
            message: format!(
                "invalid gzip data ({e}) after {} bytes of JSON",
                lines.bytes
            ),
        }
    }
}

/// Splits a byte stream into lines, carrying a partial line across chunks,
/// and scans each one.
struct Lines {
    name: String,
    carry: Vec<u8>,
    /// Number of the last complete line handed to the scanner.
    line: u64,
    bytes: u64,
}

impl Lines {
    fn new(name: &str) -> Self {
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
    fn feed<F: FnMut(&Record, u64)>(
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
    fn feed_all<F: FnMut(&Record, u64)>(
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

    fn finish<F: FnMut(&Record, u64)>(mut self, f: &mut F) -> Result<ReadStats, AnalysisError> {
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

/// A plain (not gzipped) regular local file and its size: one that can be
/// read in byte ranges by several threads. `None` for gzip (a deflate stream
/// can only be inflated from its start), store objects, FIFOs and folders.
pub fn splittable(input: &Input) -> Option<(PathBuf, u64)> {
    let Input::Local(path) = input else {
        return None;
    };
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut magic = [0u8; 2];
    let got = std::os::unix::fs::FileExt::read_at(&file, &mut magic, 0).ok()?;
    if is_gzip(&magic[..got]) {
        return None;
    }
    Some((path.clone(), meta.len()))
}

/// Where to cut a file of `size` bytes so that every part starts at a line:
/// for each of `cuts` (byte offsets, ascending), the first line start at or
/// after it. Returns the part boundaries `[0, c1, ..., size]`, without empty parts.
pub fn line_starts(file: &File, size: u64, cuts: &[u64]) -> io::Result<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let mut out = vec![0u64];
    let mut buf = vec![0u8; 64 << 10];
    for &cut in cuts {
        let floor = *out.last().unwrap_or(&0);
        if cut <= floor || cut >= size {
            continue;
        }
        // The line start at or after `cut`: just past the first '\n' at or after cut - 1.
        let mut at = cut - 1;
        let start = loop {
            if at >= size {
                break size;
            }
            let n = file.read_at(&mut buf, at)?;
            if n == 0 {
                break size;
            }
            if let Some(k) = memchr(b'\n', &buf[..n]) {
                break at + k as u64 + 1;
            }
            at += n as u64;
        };
        if start > floor && start < size {
            out.push(start);
        }
    }
    out.push(size);
    Ok(out)
}

/// Read the lines of `file` in `[start, end)` (`start` at a line start, `end`
/// at a line start or the end of the file) with `pread`, calling `f` with each
/// record and its line number counted from the start of the range. `at_eof`:
/// the range ends the file (a last line without '\n' is read, and cut short
/// if it is an incomplete record). Errors give lines counted from `start`:
/// the caller adds the lines of the parts before. Stops early, with
/// `Interrupted`, when `stopped()` says so (a part before this one failed).
pub fn read_range<F>(
    file: &File,
    name: &str,
    (start, end): (u64, u64),
    at_eof: bool,
    progress: Progress,
    stopped: &(dyn Fn() -> bool + Sync),
    mut f: F,
) -> Result<ReadStats, AnalysisError>
where
    F: FnMut(&Record, u64),
{
    use std::os::unix::fs::FileExt;
    let mut lines = Lines::new(name);
    let mut buf = vec![0u8; CHUNK];
    let mut at = start;
    while at < end {
        if stopped() {
            return Err(AnalysisError::Interrupted);
        }
        let want = ((end - at) as usize).min(CHUNK);
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(AnalysisError::Read {
                    source_name: name.to_string(),
                    message: format!("read failed after line {}: {e}", lines.line),
                })
            }
        };
        lines.feed(&buf[..n], &mut f)?;
        report(progress, n as u64)?;
        at += n as u64;
    }
    if !at_eof && !lines.carry.is_empty() {
        // Only the last part may end mid-line; the cuts are at line starts.
        return Err(AnalysisError::Read {
            source_name: name.to_string(),
            message: "the file changed while it was read".into(),
        });
    }
    lines.finish(&mut f)
}

/// A plain file smaller than two of these is read by one thread: below this,
/// a thread costs more than it saves.
const MIN_PART: u64 = 8 << 20;

/// Read every record of a dump in parts, each part with its own state
/// (`init` is given the part's size in bytes) fed by `add`, on up to
/// `threads` threads. A plain local file is cut at line starts into one byte
/// range per thread (a part of at least 8 MB); anything else (gzip, a store
/// object, a small file) is one part, read as [`read_records`] does. Returns
/// each part's state and stats, in file order.
pub fn read_in_parts<S, I, A>(
    input: &Input,
    progress: Progress,
    threads: usize,
    init: I,
    add: A,
) -> Result<Vec<(S, ReadStats)>, AnalysisError>
where
    S: Send,
    I: Fn(u64) -> S + Sync,
    A: Fn(&mut S, &Record) + Sync,
{
    let threads = threads.clamp(1, 16) as u64;
    match splittable(input) {
        Some((_, size)) if threads > 1 && size >= 2 * MIN_PART => {
            let parts = threads.min(size / MIN_PART);
            let cuts: Vec<u64> = (1..parts).map(|i| size / parts * i).collect();
            read_parts_at(input, progress, &cuts, init, add)
        }
        _ => {
            let mut state = init(input.stored_size());
            let stats = read_records(input, progress, |rec, _| add(&mut state, rec))?;
            Ok(vec![(state, stats)])
        }
    }
}

/// [`read_in_parts`] with the cuts given (byte offsets, ascending; each moves
/// on to the next line start): one thread per part. A gzipped or stored input
/// is one part. The first part (in file order) that fails names the error,
/// its line counted from the start of the file.
pub fn read_parts_at<S, I, A>(
    input: &Input,
    progress: Progress,
    cuts: &[u64],
    init: I,
    add: A,
) -> Result<Vec<(S, ReadStats)>, AnalysisError>
where
    S: Send,
    I: Fn(u64) -> S + Sync,
    A: Fn(&mut S, &Record) + Sync,
{
    let Some((path, size)) = splittable(input) else {
        let mut state = init(input.stored_size());
        let stats = read_records(input, progress, |rec, _| add(&mut state, rec))?;
        return Ok(vec![(state, stats)]);
    };
    let name = input.name();
    let io_error = |e: std::io::Error| AnalysisError::Read {
        source_name: name.clone(),
        message: e.to_string(),
    };
    let file = File::open(&path).map_err(io_error)?;
    let bounds = line_starts(&file, size, cuts).map_err(io_error)?;
    // The first part (in file order) that failed: the parts after it stop,
    // the ones before it run on, as their lines number its error.
    let failed = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let results: Vec<Result<(S, ReadStats), AnalysisError>> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (file, name, failed, init, add) = (&file, &name, &failed, &init, &add);
                let (start, end) = (w[0], w[1]);
                s.spawn(move || {
                    let mut state = init(end - start);
                    let stopped = || failed.load(Ordering::Relaxed) < i;
                    let read = read_range(
                        file,
                        name,
                        (start, end),
                        end == size,
                        progress,
                        &stopped,
                        |rec: &Record, _line| add(&mut state, rec),
                    );
                    match read {
                        Ok(stats) => Ok((state, stats)),
                        Err(e) => {
                            failed.fetch_min(i, Ordering::Relaxed);
                            Err(e)
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(AnalysisError::Read {
                        source_name: name.clone(),
                        message: "internal error while reading this dump (please report it)".into(),
                    })
                })
            })
            .collect()
    });
    // The first part in file order that failed names the error, its line
    // counted over the parts before it (which all ran to their end, as the
    // ones after it may have been stopped).
    let mut lines_before = 0u64;
    let mut parts = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok((state, stats)) => {
                lines_before += stats.lines;
                parts.push((state, stats));
            }
            Err(AnalysisError::Parse {
                source_name,
                line,
                message,
            }) => {
                return Err(AnalysisError::Parse {
                    source_name,
                    line: line + lines_before,
                    message,
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(parts)
}

/// Where a session's objects are: a local folder or a store.
pub enum Place {
    Folder(PathBuf),
    Store(Store),
}

impl Place {
    /// Every object under `source` (a folder, which must exist, or a store
    /// URL): the place and each object's key (relative to it) and size,
    /// sorted by key for a folder.
    pub fn list(source: &str) -> Result<(Place, Vec<(String, u64)>), AnalysisError> {
        match local_path(source) {
            Some(dir) => {
                let mut keys = Vec::new();
                walk(&dir, "", &mut keys).map_err(|e| AnalysisError::Read {
                    source_name: source.to_string(),
                    message: e.to_string(),
                })?;
                keys.sort();
                Ok((Place::Folder(dir), keys))
            }
            None => {
                let store = Store::open(source)?;
                let keys = crate::runtime::block_on(store.list(""))??;
                Ok((Place::Store(store), keys))
            }
        }
    }

    /// The input for one key of the place.
    pub fn input(&self, key: &str) -> Input {
        match self {
            Place::Folder(dir) => Input::Local(dir.join(key)),
            Place::Store(store) => Input::Stored {
                store: store.clone(),
                key: key.to_string(),
            },
        }
    }
}

/// Every file under `dir`, as (key relative to `dir`, size).
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let key = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = ent.file_type()?;
        if ft.is_dir() {
            walk(&ent.path(), &key, out)?;
        } else if ft.is_file() {
            out.push((key, ent.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    Ok(())
}

/// Resolve what the user typed into one input: a local path, or a store URL
/// naming one object (`s3://bucket/prefix/key.jsonl.gz`, `file://dir/x.jsonl.gz`).
pub fn input_for(spec: &str) -> Result<Input, AnalysisError> {
    if let Some(local) = local_path(spec) {
        return Ok(Input::Local(local));
    }
    // A URL: open the bucket (or memory store) and read the rest as the key.
    let (dir, key) = match spec.find("://").and_then(|at| {
        let slash = spec[at + 3..].find('/')? + at + 3;
        Some((&spec[..slash], &spec[slash + 1..]))
    }) {
        Some((dir, key)) if !key.is_empty() && !key.ends_with('/') => (dir, key),
        _ => {
            return Err(AnalysisError::Read {
                source_name: spec.to_string(),
                message: "expected a file path or a store URL ending in an object key".into(),
            })
        }
    };
    let store = crate::store::Store::open(dir)?;
    Ok(Input::Stored {
        store,
        key: key.to_string(),
    })
}

/// A local path for plain paths and `file://` URLs; `None` for other URLs.
pub fn local_path(spec: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = spec.strip_prefix("file://") {
        let rest = match rest.strip_prefix("localhost/") {
            Some(r) => format!("/{r}"),
            None => rest.to_string(),
        };
        return Some(std::path::PathBuf::from(rest));
    }
    if spec.contains("://") {
        return None;
    }
    Some(std::path::PathBuf::from(spec))
}
