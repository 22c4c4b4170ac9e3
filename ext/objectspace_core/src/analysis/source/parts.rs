//! A plain local file read in parts: cut at line starts into byte ranges,
//! each read by its own thread with `pread`.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use memchr::memchr;

use super::input::Input;
use super::lines::{report, Lines, Progress, ReadStats};
use super::stream::{is_gzip, read_records, CHUNK};
use crate::analysis::error::AnalysisError;
use crate::scan::Record;

/// A plain (not gzipped) regular local file and its size: one that can be
/// read in byte ranges by several threads. `None` for gzip (a deflate stream
/// can only be inflated from its start), store objects, FIFOs and folders.
pub fn splittable(input: &Input) -> Option<(PathBuf, u64)> {
    let Input::Local(path) = input else {
        return None;
    };
    // Look before opening: opening a FIFO waits for its writer, and closing it
    // again kills a writer whose write lands before the reader reopens it.
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
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
        _ => read_whole(input, progress, init, add),
    }
}

/// The whole input as one part, read as [`read_records`] does (gzip, a
/// store object, a small file).
fn read_whole<S>(
    input: &Input,
    progress: Progress,
    init: impl Fn(u64) -> S,
    add: impl Fn(&mut S, &Record),
) -> Result<Vec<(S, ReadStats)>, AnalysisError> {
    let mut state = init(input.stored_size());
    let stats = read_records(input, progress, |rec, _| add(&mut state, rec))?;
    Ok(vec![(state, stats)])
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
        return read_whole(input, progress, init, add);
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
