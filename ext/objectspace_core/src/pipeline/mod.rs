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
//!
//! The stream is the composition of one job a module:
//! - [`blocks`]: the pipe read into blocks of whole lines, a huge record's
//!   big field spilled and carried with its block;
//! - [`records`]: each line annotated (and left out of a retained dump),
//!   redacted, and counted into the [`Summary`] ([`summary`]);
//! - [`gzip`]: the output gzipped into memory or handed to a store in chunks.

mod blocks;
mod gzip;
mod records;
mod summary;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::annotate::Annotator;
use crate::error::{Error, Result};
use crate::inherited;
use crate::sites::SharedSites;
use crate::spill::{Field, Spool};

use blocks::{Block, Blocks, BUFFER};
use gzip::{Gzip, CHUNK};
use records::{Filtered, Records};

pub use gzip::Sink;
pub use summary::{Summary, TypeStat};

/// gzip level 1 keeps pace with dump_all; level 6 blocks Ruby (measured: 0.53 s
/// against 1.9 s for 267 MB).
pub const DEFAULT_LEVEL: u32 = 1;

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

fn run(
    reader: End<std::io::PipeReader>,
    options: Options,
    sink: Sink,
    cancel: &AtomicBool,
) -> Result<Finished> {
    let started = Instant::now();
    let mut gzip = Gzip::new(sink, options.level);
    let mut summary = Summary::default();
    if let Err(err) = stream(reader, &options, &mut summary, &mut gzip, cancel) {
        gzip.abort();
        return Err(err);
    }
    summary.read_ms = started.elapsed().as_millis() as u64;
    let (gzip, stored_bytes) = gzip.finish()?;
    summary.stored_bytes = stored_bytes;
    Ok(Finished { summary, gzip })
}

/// Read whole blocks of lines, pass each line through ([`records`]), and
/// hand each block to gzip in one call (per-line calls into the compressor
/// cost more than the lines).
fn stream(
    pipe: End<std::io::PipeReader>,
    options: &Options,
    summary: &mut Summary,
    gzip: &mut Gzip,
    cancel: &AtomicBool,
) -> Result<()> {
    // Redaction would drop a spilled string value: it is not spooled.
    let mut blocks = Blocks::new(pipe, options.redact)?;
    let annotator = options
        .sites
        .clone()
        .map(|sites| Annotator::new(sites, options.since));
    let mut records = Records::new(options.redact, annotator, BUFFER);
    while let Some(Block { lines, spilled }) = blocks.next(cancel)? {
        let stored = records.filter(lines, summary);
        summary.truncated = lines.last() != Some(&b'\n');
        write_block(gzip, stored, spilled)?;
    }
    summary.bytes = blocks.bytes;
    Ok(())
}

/// Gzip a block's records as stored. A spilled field goes back where its
/// placeholder is, in the first record (unless it was left out).
fn write_block(gzip: &mut Gzip, stored: Filtered, spilled: Option<(Field, Spool)>) -> Result<()> {
    let put_back = spilled.and_then(|(field, spool)| {
        let placeholder = field.placeholder();
        let at = memchr::memmem::find(&stored.bytes[..stored.first_end], placeholder)?;
        Some((at, at + placeholder.len(), spool))
    });
    match put_back {
        Some((at, after, spool)) => {
            gzip.write(&stored.bytes[..at])?;
            let mut chunk = vec![0u8; CHUNK];
            spool.replay(&mut chunk, |c| gzip.write(c))?;
            gzip.write(&stored.bytes[after..])
        }
        None => gzip.write(stored.bytes),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

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
