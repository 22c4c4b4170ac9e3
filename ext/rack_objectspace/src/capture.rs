//! `Native::Pipeline`, `Native::Dump` and `Native::Writer`: the capture half.

use std::sync::Mutex;

use magnus::scan_args::{get_kwargs, scan_args};
use magnus::{function, method, prelude::*, RHash, RModule, RString, Ruby, Value};
use objectspace_core::keys::DumpKey;
use objectspace_core::pipeline::{self, Finished, Options, Pipeline, Sink};
use objectspace_core::store::Store;
use objectspace_core::writer::Writer;
use objectspace_core::Error as CoreError;

use crate::counters;
use crate::errors::{argument, to_ruby, RbResult};
use crate::nogvl::{wait_for, wait_until};

/// The keywords both `Pipeline.new` and `Pipeline.streaming` take, all
/// required (defaults live in Ruby): `redact:` drops string values,
/// `gzip_level:` 0..9, `sites:` annotates records from `Native::Tracer`'s
/// table, `since:` keeps only objects from that GC generation on (a retained
/// dump; nil keeps all).
const OPTIONS: [&str; 4] = ["redact", "gzip_level", "sites", "since"];

/// `Pipeline.streaming`'s keywords: `OPTIONS`, then the store's URL, the
/// dump's key and its metadata record's key.
const STREAMING: [&str; 7] = [
    "redact",
    "gzip_level",
    "sites",
    "since",
    "url",
    "key",
    "meta_key",
];

fn options(
    ruby: &Ruby,
    (redact, level, sites, since): (bool, u32, bool, Option<u64>),
) -> RbResult<Options> {
    if level > 9 {
        return Err(argument(
            ruby,
            format!("gzip level must be 0..9, got {level}"),
        ));
    }
    if sites {
        // The sampled census between windows: entries of objects a GC freed
        // since the last reconciliation go before the dump is annotated.
        crate::tracer::reconcile();
    }
    Ok(Options {
        redact,
        level,
        sites: sites.then(|| objectspace_core::sites::global().clone()),
        since,
    })
}

fn state(ruby: &Ruby, message: &str) -> magnus::Error {
    to_ruby(ruby, CoreError::State(message.to_string()))
}

/// A dump in progress: Ruby writes into `write_fd`, Rust reads the other end.
#[magnus::wrap(class = "Rack::Objectspace::Native::Pipeline", free_immediately, size)]
struct RbPipeline {
    inner: Mutex<Option<Pipeline>>,
    meta_key: Option<(Store, String)>,
}

impl RbPipeline {
    /// `Pipeline.new(redact:, gzip_level:, sites:, since:)`: gzip into memory.
    fn new(ruby: &Ruby, args: &[Value]) -> RbResult<Self> {
        let args = scan_args::<(), (), (), (), RHash, ()>(args)?;
        let kw = get_kwargs::<_, _, (), ()>(args.keywords, &OPTIONS, &[])?;
        let pipeline = Pipeline::start(options(ruby, kw.required)?, Sink::Memory)
            .map_err(|e| to_ruby(ruby, e))?;
        Ok(RbPipeline {
            inner: Mutex::new(Some(pipeline)),
            meta_key: None,
        })
    }

    /// `Pipeline.streaming(redact:, gzip_level:, sites:, since:, url:, key:, meta_key:)`:
    /// stream to a store; `finish` then stores the metadata record too.
    fn streaming(ruby: &Ruby, args: &[Value]) -> RbResult<Self> {
        let args = scan_args::<(), (), (), (), RHash, ()>(args)?;
        let kw = get_kwargs::<_, _, (), ()>(args.keywords, &STREAMING, &[])?;
        let (redact, level, sites, since, url, key, meta_key): (
            bool,
            u32,
            bool,
            Option<u64>,
            String,
            String,
            String,
        ) = kw.required;
        let options = options(ruby, (redact, level, sites, since))?;
        let store = Store::open(&url).map_err(|e| to_ruby(ruby, e))?;
        let sink = Sink::Store {
            store: store.clone(),
            key,
        };
        let pipeline = Pipeline::start(options, sink).map_err(|e| to_ruby(ruby, e))?;
        Ok(RbPipeline {
            inner: Mutex::new(Some(pipeline)),
            meta_key: Some((store, meta_key)),
        })
    }

    /// The pipe's write end, lent: wrap it with `IO.for_fd(fd, autoclose: false)`,
    /// flush that IO when done, then call `close_write` (never IO#close).
    fn write_fd(ruby: &Ruby, rb_self: &Self) -> RbResult<i32> {
        let guard = rb_self
            .inner
            .lock()
            .map_err(|_| state(ruby, "pipeline lock poisoned"))?;
        let pipeline = guard
            .as_ref()
            .ok_or_else(|| state(ruby, "pipeline already finished"))?;
        pipeline.write_fd().map_err(|e| to_ruby(ruby, e))
    }

    /// Close the write end (with the GVL, so no fork can come in between the
    /// close and the registry's update). Idempotent.
    fn close_write(ruby: &Ruby, rb_self: &Self) -> RbResult<()> {
        let mut guard = rb_self
            .inner
            .lock()
            .map_err(|_| state(ruby, "pipeline lock poisoned"))?;
        if let Some(pipeline) = guard.as_mut() {
            pipeline.close_write();
        }
        Ok(())
    }

    /// Wait (without the GVL) for the reader to drain the pipe, then return a
    /// `Native::Dump` whose metadata is `meta_json` plus the summary. Closes
    /// the write end first. Thread#raise, Thread#kill or Ctrl-C stop the wait:
    /// the dump is abandoned (its upload aborted) and the exception raised.
    fn finish(ruby: &Ruby, rb_self: &Self, meta_json: String) -> RbResult<RbDump> {
        let pipeline = rb_self
            .inner
            .lock()
            .map_err(|_| state(ruby, "pipeline lock poisoned"))?
            .take()
            .ok_or_else(|| state(ruby, "pipeline already finished"))?;
        let meta_key = rb_self.meta_key.clone();
        let mut pipeline = pipeline;
        // A signal with nothing to raise (a trap, SIGCHLD) waits on; a raise
        // drops the pipeline, which cancels its reader.
        let result = wait_for(ruby, move |stop| {
            let finished = match pipeline.wait_finished(stop)? {
                Ok(finished) => finished,
                Err(e) => return Some(Err(e)),
            };
            Some((|| -> Result<(Finished, String), CoreError> {
                let meta = finished.summary.merge_into_meta(&meta_json)?;
                if let Some((store, key)) = &meta_key {
                    objectspace_core::runtime::block_on(store.put(key, meta.clone().into()))??;
                }
                Ok((finished, meta))
            })())
        })?;
        let (finished, meta) = result.map_err(|e| to_ruby(ruby, e))?;
        Ok(RbDump {
            gzip: Mutex::new(Some(finished.gzip)),
            meta,
            stored_bytes: finished.summary.stored_bytes,
            objects: finished.summary.objects(),
        })
    }
}

/// A finished dump: its metadata JSON and (memory sink) the gzipped bytes.
#[magnus::wrap(class = "Rack::Objectspace::Native::Dump", free_immediately, size)]
struct RbDump {
    gzip: Mutex<Option<Vec<u8>>>,
    meta: String,
    stored_bytes: u64,
    objects: u64,
}

impl RbDump {
    /// `Dump.shipped(bytes, meta)`: a dump a fork child shipped back to the
    /// parent (for stores only the parent can write to), as one shape with
    /// the dumps the parent took itself.
    fn shipped(bytes: RString, meta: String) -> RbDump {
        // SAFETY: the slice is copied before any other Ruby call can move or free the string.
        let gzip = unsafe { bytes.as_slice() }.to_vec();
        RbDump {
            stored_bytes: gzip.len() as u64,
            objects: 0,
            gzip: Mutex::new(Some(gzip)),
            meta,
        }
    }

    fn meta(&self) -> String {
        self.meta.clone()
    }

    fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    fn objects(&self) -> u64 {
        self.objects
    }

    /// The gzipped dump as a binary String (for `[]=` stores). Moves the bytes
    /// out: a second call, or a call after `Writer#submit`, raises.
    fn take_bytes(ruby: &Ruby, rb_self: &Self) -> RbResult<RString> {
        let bytes = rb_self
            .gzip
            .lock()
            .map_err(|_| state(ruby, "dump lock poisoned"))?
            .take()
            .ok_or_else(|| state(ruby, "the dump's bytes were already taken"))?;
        Ok(ruby.str_from_slice(&bytes))
    }
}

/// The bounded asynchronous writer for URL stores (inline mode).
#[magnus::wrap(class = "Rack::Objectspace::Native::Writer", free_immediately, size)]
struct RbWriter {
    inner: Writer,
}

impl RbWriter {
    /// `Writer.new(url, capacity)`: raises ArgumentError for an unusable URL.
    fn new(ruby: &Ruby, url: String, capacity: usize) -> RbResult<Self> {
        let store = Store::open(&url).map_err(|e| to_ruby(ruby, e))?;
        let inner = Writer::new(store, capacity).map_err(|e| to_ruby(ruby, e))?;
        Ok(RbWriter { inner })
    }

    /// Queue a finished dump; false when the queue was full (the dump is dropped).
    fn submit(
        ruby: &Ruby,
        rb_self: &Self,
        key: String,
        meta_key: String,
        dump: &RbDump,
    ) -> RbResult<bool> {
        let gzip = dump
            .gzip
            .lock()
            .map_err(|_| state(ruby, "dump lock poisoned"))?
            .take()
            .ok_or_else(|| state(ruby, "the dump's bytes were already taken"))?;
        match rb_self
            .inner
            .try_submit(key, gzip, meta_key, dump.meta.clone())
        {
            Ok(()) => Ok(true),
            Err(CoreError::QueueFull { .. }) => Ok(false),
            Err(e) => Err(to_ruby(ruby, e)),
        }
    }

    /// Wait (without the GVL) up to `timeout` seconds for pending writes. True
    /// when all done. Thread#raise, Thread#kill or Ctrl-C end the wait early
    /// and raise; the writes go on.
    fn flush(ruby: &Ruby, rb_self: &Self, timeout: f64) -> RbResult<bool> {
        let writer = &rb_self.inner;
        wait_until(ruby, timeout, |slice| writer.flush(slice))
    }

    /// `{submitted:, stored:, failed:, dropped:, pending:}`.
    fn stats(ruby: &Ruby, rb_self: &Self) -> RbResult<RHash> {
        let s = rb_self.inner.stats();
        counters::hash(
            ruby,
            &[
                ("submitted", s.submitted),
                ("stored", s.stored),
                ("failed", s.failed),
                ("dropped", s.dropped),
                ("pending", s.pending),
            ],
        )
    }

    /// Failure messages since the last call.
    fn errors(&self) -> Vec<String> {
        self.inner.take_errors()
    }
}

/// `Native.check_store(url)`: opens the URL (creating a file:// folder) or raises
/// ArgumentError; returns true when another process can write to it (not memory://).
fn check_store(ruby: &Ruby, url: String) -> RbResult<bool> {
    let store = Store::open(&url).map_err(|e| to_ruby(ruby, e))?;
    Ok(!store.is_process_local())
}

/// `Native.dump_keys(host, pid, seq, unix_ms, method, path, salt)`: the sanitised
/// `[dump_key, meta_key]` of one dump (see objectspace_core::keys).
fn dump_keys(
    host: String,
    pid: u32,
    seq: u64,
    unix_ms: u64,
    method: String,
    path: String,
    salt: u32,
) -> (String, String) {
    let key = DumpKey::new(&host, pid, seq, unix_ms, &method, &path, salt);
    (key.dump_key(), key.meta_key())
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("check_store", function!(check_store, 1))?;
    native.define_module_function("dump_keys", function!(dump_keys, 7))?;
    native.const_set("DEFAULT_GZIP_LEVEL", pipeline::DEFAULT_LEVEL)?;

    let class = native.define_class("Pipeline", ruby.class_object())?;
    class.define_singleton_method("new", function!(RbPipeline::new, -1))?;
    class.define_singleton_method("streaming", function!(RbPipeline::streaming, -1))?;
    class.define_method("write_fd", method!(RbPipeline::write_fd, 0))?;
    class.define_method("close_write", method!(RbPipeline::close_write, 0))?;
    class.define_method("finish", method!(RbPipeline::finish, 1))?;

    let class = native.define_class("Dump", ruby.class_object())?;
    class.define_singleton_method("shipped", function!(RbDump::shipped, 2))?;
    class.define_method("meta", method!(RbDump::meta, 0))?;
    class.define_method("stored_bytes", method!(RbDump::stored_bytes, 0))?;
    class.define_method("objects", method!(RbDump::objects, 0))?;
    class.define_method("take_bytes", method!(RbDump::take_bytes, 0))?;

    let class = native.define_class("Writer", ruby.class_object())?;
    class.define_singleton_method("new", function!(RbWriter::new, 2))?;
    class.define_method("submit", method!(RbWriter::submit, 3))?;
    class.define_method("flush", method!(RbWriter::flush, 1))?;
    class.define_method("stats", method!(RbWriter::stats, 0))?;
    class.define_method("errors", method!(RbWriter::errors, 0))?;
    Ok(())
}
