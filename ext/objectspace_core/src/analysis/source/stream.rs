//! One dump read from start to end. Local files are read (and gunzipped:
//! gzip is detected by its magic bytes, not the file name) on a reader
//! thread, so that reading and inflating overlap with parsing. Store objects
//! are fetched whole (a dump is tens of MB compressed at most) and then
//! handled the same way.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use super::input::{read_error, Input};
use super::lines::{no_progress, report, Lines, Progress, ReadStats};
use crate::analysis::error::AnalysisError;
use crate::scan::Record;

/// Bytes the reader thread hands over at once.
pub(super) const CHUNK: usize = 4 << 20;

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

pub(super) fn is_gzip(b: &[u8]) -> bool {
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
