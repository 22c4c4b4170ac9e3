//! `Rack::Objectspace::Native::Analysis` (private API): the analyses of the core
//! crate, run without the GVL, returning their reports as JSON strings that
//! lib/rack/objectspace/analysis.rb parses. Defaults live in Ruby: every
//! argument is explicit here.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use magnus::{function, prelude::*, Error, RModule, Ruby};
use objectspace_core::analysis::{self, AnalysisError, Input};

use crate::errors::{analysis_to_ruby as to_ruby, class, RbResult};
use crate::nogvl::{nogvl, wait_for};

fn encode_error(ruby: &Ruby, e: serde_json::Error) -> Error {
    Error::new(
        class(ruby, "Error"),
        format!("cannot encode the report: {e}"),
    )
}

/// A progress bar on stderr (the caller decides whether stderr is a terminal).
/// Called from reader threads without the GVL, so it writes with Rust's stderr.
struct Bar {
    enabled: bool,
    total: u64,
    done: AtomicU64,
    last: Mutex<Option<Instant>>,
    label: &'static str,
}

impl Bar {
    fn new(enabled: bool, total: u64, label: &'static str) -> Bar {
        Bar {
            enabled,
            total,
            done: AtomicU64::new(0),
            last: Mutex::new(None),
            label,
        }
    }

    fn tick(&self, delta: u64) {
        if !self.enabled {
            return;
        }
        let done = self.done.fetch_add(delta, Ordering::Relaxed) + delta;
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        let now = Instant::now();
        if matches!(*last, Some(t) if now.duration_since(t) < Duration::from_millis(100)) {
            return;
        }
        *last = Some(now);
        let mb = |b: u64| b as f64 / 1e6;
        let line = if self.total > 0 {
            let frac = (done as f64 / self.total as f64).min(1.0);
            let filled = (frac * 30.0) as usize;
            format!(
                "\r{} [{}{}] {:3.0}% {:.0}/{:.0} MB",
                self.label,
                "#".repeat(filled),
                " ".repeat(30 - filled),
                frac * 100.0,
                mb(done),
                mb(self.total)
            )
        } else {
            format!("\r{} {:.0} MB", self.label, mb(done))
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn finish(&self) {
        if self.enabled {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}

/// Run an analysis, turning a panic (a bug) into an error instead of a Ruby
/// `fatal` that would kill the process.
fn guarded<T>(f: impl FnOnce() -> Result<T, AnalysisError>) -> Result<T, AnalysisError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(AnalysisError::Read {
            source_name: "rack-objectspace".into(),
            message: format!("internal error ({what}); please report it"),
        })
    })
}

fn input(ruby: &Ruby, spec: &str) -> RbResult<Input> {
    analysis::input_for(spec).map_err(|e| to_ruby(ruby, e))
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// What the caller's thread and the analysis thread share.
struct Shared {
    bar: Bar,
    cancelled: AtomicBool,
}

/// How long a raise waits for the analysis to stop at its next block of
/// input before leaving it to stop on its own.
const GRACE: Duration = Duration::from_millis(500);

/// Run an analysis without the GVL, showing `bar`. The analysis runs on a
/// thread of its own while this one waits; Ctrl-C (or Thread#raise) stops it
/// at the next block of input and raises the pending exception. A signal with
/// nothing to raise (a trap, SIGCHLD) lets it go on.
fn run<T: Send + 'static>(
    ruby: &Ruby,
    bar: Bar,
    analysis: impl FnOnce(analysis::Progress) -> Result<T, AnalysisError> + Send + 'static,
) -> RbResult<T> {
    let shared = std::sync::Arc::new(Shared {
        bar,
        cancelled: AtomicBool::new(false),
    });
    let theirs = std::sync::Arc::clone(&shared);
    let worker = std::thread::Builder::new()
        .name("rack-objectspace analysis".into())
        .spawn(move || {
            // Once cancelled, nothing more is drawn: the caller may have
            // cleared the bar and moved on.
            let tick = |d: u64| {
                if theirs.cancelled.load(Ordering::Relaxed) {
                    return false;
                }
                theirs.bar.tick(d);
                true
            };
            guarded(|| analysis(&tick))
        })
        .map_err(|e| {
            Error::new(
                class(ruby, "Error"),
                format!("cannot start the analysis: {e}"),
            )
        })?;
    let waited = wait_for(ruby, |stop| loop {
        if worker.is_finished() {
            return Some(());
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    });
    if let Err(raised) = waited {
        // Ruby raises: the analysis stops at its next block of input. That
        // block may have to come from another Ruby thread (a pipe it feeds),
        // so it is waited for without the GVL, for a moment: input that never
        // comes (a FIFO nobody opened for writing, a stalled pipe) must not
        // hold the raise. The thread then ends on its own when its read
        // returns.
        shared.cancelled.store(true, Ordering::Relaxed);
        let _ = nogvl(ruby, || {
            let until = Instant::now() + GRACE;
            while !worker.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        if worker.is_finished() {
            let _ = worker.join();
        }
        shared.bar.finish();
        return Err(raised);
    }
    let result = worker
        .join()
        .map_err(|_| Error::new(class(ruby, "Error"), "the analysis thread panicked"))?;
    shared.bar.finish();
    result.map_err(|e| to_ruby(ruby, e))
}

/// `Native::Analysis.summary(path_or_url, top, progress)` -> JSON String
fn summary(ruby: &Ruby, spec: String, top: usize, progress: bool) -> RbResult<String> {
    let input = input(ruby, &spec)?;
    let bar = Bar::new(progress, input.stored_size(), "reading");
    let started = Instant::now();
    let mut report = run(ruby, bar, move |tick| analysis::summary(&input, tick, top))?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    serde_json::to_string(&report).map_err(|e| encode_error(ruby, e))
}

/// `Native::Analysis.diff(before, after, retained, top, progress)` -> JSON String
fn diff(
    ruby: &Ruby,
    a: String,
    b: String,
    c: String,
    top: usize,
    progress: bool,
) -> RbResult<String> {
    let (a, b, c) = (input(ruby, &a)?, input(ruby, &b)?, input(ruby, &c)?);
    let total = a.stored_size() + b.stored_size() + c.stored_size();
    let bar = Bar::new(progress, total, "reading");
    let report = run(ruby, bar, move |tick| {
        analysis::diff([&a, &b, &c], tick, top)
    })?;
    serde_json::to_string(&report).map_err(|e| encode_error(ruby, e))
}

/// `Native::Analysis.leaks(source, top, progress, floor)` -> JSON String;
/// `floor`: `[objects per request, live objects]` under which growing sites
/// are only counted (`hidden_sites`), or nil for all.
fn leaks(
    ruby: &Ruby,
    source: String,
    top: usize,
    progress: bool,
    floor: Option<(f64, u64)>,
) -> RbResult<String> {
    let bar = Bar::new(progress, 0, "reading dumps");
    let floor = floor.map(|(per_request, objects)| analysis::Floor {
        per_request,
        objects,
    });
    let options = analysis::LeaksOptions {
        top,
        threads: threads(),
        floor,
    };
    let report = run(ruby, bar, move |tick| {
        analysis::leaks_with(&source, tick, options)
    })?;
    serde_json::to_string(&report).map_err(|e| encode_error(ruby, e))
}

/// `Native::Analysis.ls(source)` -> JSON String
fn ls(ruby: &Ruby, source: String) -> RbResult<String> {
    let result = nogvl(ruby, || guarded(|| analysis::ls(&source)))?;
    serde_json::to_string(&result.map_err(|e| to_ruby(ruby, e))?).map_err(|e| encode_error(ruby, e))
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), magnus::Error> {
    let m = native.define_module("Analysis")?;
    m.define_singleton_method("summary", function!(summary, 3))?;
    m.define_singleton_method("diff", function!(diff, 5))?;
    m.define_singleton_method("leaks", function!(leaks, 4))?;
    m.define_singleton_method("ls", function!(ls, 1))?;
    let _ = ruby;
    Ok(())
}
