//! `Native::Census`: the request thread's call (`request`), the heap walk that
//! gives sites their memsize and class (`walk`), and batches for the stores
//! (`take_batch` for `[]=` stores, `submit_batch` through a native writer for
//! URL stores). The logic lives in `objectspace_core::census` and `::sites`.

use std::borrow::Cow;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use magnus::rb_sys::AsRawValue;
use magnus::{function, prelude::*, RArray, RHash, RModule, Ruby, Value};
use objectspace_core::census::{self, Census, RequestEndpoints};
use objectspace_core::sites;
use objectspace_core::store::Store;
use objectspace_core::writer::Writer;
use objectspace_core::Error as CoreError;
use rb_sys::{
    rb_class_real, rb_gc_count, rb_gc_disable, rb_gc_enable, rb_hash_foreach, rb_hash_lookup2,
    rb_mod_name, st_retval, Qnil, Qtrue, VALUE,
};
use rustc_hash::FxHashMap;

use crate::counters;
use crate::errors::{to_ruby, RbResult};
use crate::ffi::{rb_obj_memsize_of, rb_objspace_each_objects};
use crate::nogvl::{nogvl, wait_until};
use crate::tracer;

/// The census writer of this process: (pid, url, writer).
static WRITER: Mutex<Option<(u32, String, Writer)>> = Mutex::new(None);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `bytes` as text: borrowed when valid UTF-8 (checked fast, as nearly
/// always), else with each invalid sequence replaced.
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// `Census.enable`: reconcile the counts after every GC whenever the tracer runs.
fn enable(ruby: &Ruby) {
    tracer::enable_census(ruby);
}

/// `Census.disable`: stop reconciling after GCs (the site table's counts go stale).
fn disable() {
    tracer::disable_census();
}

fn enabled() -> bool {
    tracer::census_enabled()
}

/// The Census (Ruby object) that serves this process: its id, and the pid
/// it began serving in (`Census.own`). A request of another, or in a fork
/// child, gets no number from `Census.request`.
static OWNER: AtomicU64 = AtomicU64::new(0);
static OWNER_PID: AtomicU32 = AtomicU32::new(0);

/// The env keys a request's endpoint is read from: frozen Strings made
/// once, marked and pinned for the life of the process.
static KEYS: OnceLock<[VALUE; 3]> = OnceLock::new();

/// `Census.own(owner)`: the census `owner` (its id) serves this process from
/// now on; 0: none does.
fn own(owner: u64) {
    OWNER.store(owner, Ordering::Relaxed);
    OWNER_PID.store(crate::child::pid(), Ordering::Relaxed);
}

/// `Census.request(env, owner)`: a request begins. Returns its number in
/// this process; nil, counting nothing, unless the census `owner` serves
/// this process (`Census.own`: a fork child's first request, or another
/// middleware's census took over). Every request's one call: its endpoint is
/// read from the env here, with no Ruby String made, when the census records
/// the request (the sampled census records one in N: the others' endpoints
/// are not read).
fn request(env: RHash, owner: u64) -> Option<u64> {
    if OWNER.load(Ordering::Relaxed) != owner
        || OWNER_PID.load(Ordering::Relaxed) != crate::child::pid()
    {
        return None;
    }
    let keys = KEYS.get()?;
    // The GC's reconciliation, if its postponed job could not be queued
    // (or, between the sampled census's windows, no hook saw the GC).
    tracer::reconcile_finished();
    // The window, if the sampled census's countdown ends on this request,
    // opens before the request is counted: nothing allocates in between.
    let recorded = crate::windows::begin_request();
    // SAFETY: reads a counter; called with the GVL.
    let gc = unsafe { rb_gc_count() } as u64;
    let at = now_ms();
    let n = if recorded {
        with_endpoint(env, keys, |method, path| {
            let mut c = census::global().lock();
            let mut t = sites::global().lock();
            c.begin_request(&mut t, method, path, gc, at)
        })
    } else {
        let mut c = census::global().lock();
        let mut t = sites::global().lock();
        c.begin_unrecorded_request(&mut t, gc, at)
    };
    tracer::THREAD_REQUEST.set(u32::try_from(n).unwrap_or(u32::MAX));
    Some(n)
}

/// Call `f` with the request's endpoint: its method and SCRIPT_NAME +
/// PATH_INFO, as valid UTF-8 (at most 16 and 2048 bytes), borrowed from the
/// env's Strings when they are.
fn with_endpoint(env: RHash, keys: &[VALUE; 3], f: impl FnOnce(&str, &str) -> u64) -> u64 {
    let [method_key, script_key, path_key] = *keys;
    // SAFETY: a plain look-up (no default value, and String keys are hashed
    // and compared without Ruby code); the values are only read, and no Ruby
    // code runs (nothing can change or free them) until `f` returns.
    let value = |key| unsafe {
        crate::string_bytes(rb_hash_lookup2(env.as_raw(), key, Qnil as VALUE)).unwrap_or(&[])
    };
    let method = value(method_key);
    // SCRIPT_NAME is most often empty: PATH_INFO alone is borrowed.
    let (script, path_info) = (value(script_key), value(path_key));
    let path: Cow<[u8]> = if script.is_empty() {
        Cow::Borrowed(path_info)
    } else {
        Cow::Owned([script, path_info].concat())
    };
    f(
        &utf8(&method[..method.len().min(16)]),
        &utf8(&path[..path.len().min(2048)]),
    )
}

/// `Census.claim(env)`: the Rack env Hash and its values, which the server
/// (or an outer middleware) made before this thread's request began, belong
/// to that request, not to the one the thread served before or to none: a
/// kept env is then put down to the endpoint that kept it. `input` is the
/// String inside `rack.input` when it is a StringIO (or nil).
fn claim(env: RHash, input: Value) {
    let request = tracer::THREAD_REQUEST.get();
    if request == 0 {
        return;
    }
    let mut objects = Claimed {
        request,
        len: 0,
        buf: [0; CLAIMED],
    };
    objects.push(env.as_raw());
    if !input.is_nil() {
        objects.push(input.as_raw());
    }
    // Ruby's own iteration (no Ruby block, no closure per value): every
    // request pays it. It calls back with no exception to catch: the callback
    // neither raises nor changes the Hash.
    unsafe extern "C" fn value(_key: VALUE, v: VALUE, arg: VALUE) -> c_int {
        // Special constants (nil, true, Integers, Symbols...) are not objects.
        if !rb_sys::SPECIAL_CONST_P(v) {
            // SAFETY: `arg` is the `Claimed` below, alive for the call.
            unsafe { (*(arg as *mut Claimed)).push(v) };
        }
        st_retval::ST_CONTINUE as c_int
    }
    // SAFETY: `env` is a live Hash; the callback matches rb_hash_foreach's.
    unsafe {
        rb_hash_foreach(
            env.as_raw(),
            Some(value),
            &mut objects as *mut Claimed as VALUE,
        )
    };
    objects.flush();
}

/// Objects to claim, collected on the stack a batch at a time: nothing may
/// allocate while the table is locked, so the values are collected first.
const CLAIMED: usize = 64;
struct Claimed {
    request: u32,
    len: usize,
    buf: [VALUE; CLAIMED],
}

impl Claimed {
    fn push(&mut self, object: VALUE) {
        if self.len == CLAIMED {
            self.flush();
        }
        self.buf[self.len] = object;
        self.len += 1;
    }

    fn flush(&mut self) {
        let mut t = sites::global().lock();
        for &object in &self.buf[..self.len] {
            t.claim(object, self.request);
        }
        self.len = 0;
    }
}

/// `Census.reset`: start over in a new process (the count of requests at 0).
fn reset() {
    let mut c = census::global().lock();
    let mut t = sites::global().lock();
    c.reset(&mut t);
}

/// `Census.growth_gcs`: major GCs at which the census saw a site grow
/// (`SiteTable::note_major`); the middleware's `auto_dump:` watches it.
fn growth_gcs() -> u64 {
    sites::global().lock().growth_gcs()
}

/// `Census.pending`: points waiting for a batch.
fn pending() -> usize {
    census::global().lock().pending()
}

struct Walk {
    acc: Vec<(u64, u64)>,
    objects: u64,
    /// Objects of each (site, class) that the last GC found alive.
    classes: FxHashMap<(u32, VALUE), u64>,
    requests: RequestEndpoints,
    by_endpoint: FxHashMap<(u32, u32), u64>,
    swept_gc: u64,
    in_flight: u32,
}

unsafe extern "C" fn walk_page(
    start: *mut c_void,
    end: *mut c_void,
    stride: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the Walk passed by `walk`; [start, end) is a heap page
    // of slots `stride` bytes apart, each starting with its flags word.
    unsafe {
        let walk = &mut *(data as *mut Walk);
        let table = sites::global().lock();
        let mut v = start as usize;
        while v < end as usize {
            let obj = v as VALUE;
            let flags = *(v as *const VALUE);
            let ty = flags & 0x1f;
            // T_NONE (free), T_ZOMBIE, T_MOVED have no memsize worth asking.
            if flags != 0 && ty != 0 && ty != 0x1d && ty != 0x1e {
                if let Some((site, request, generation)) = table
                    .site_and_request(obj as u64)
                    // Another type: another object than the one recorded;
                    // the next reconciliation drops it.
                    .filter(|&(site, ..)| sites::same_object_type(table.site_type(site), ty))
                {
                    // Only what the last GC found alive (allocated before it
                    // began), by a finished request: as the census counts.
                    let survived = u64::from(generation) < walk.swept_gc;
                    if survived && request != walk.in_flight {
                        if let Some(endpoint) = walk.requests.of(request) {
                            *walk.by_endpoint.entry((site, endpoint)).or_insert(0) += 1;
                        }
                    }
                    let i = site as usize;
                    if walk.acc.len() <= i {
                        walk.acc.resize(i + 1, (0, 0));
                    }
                    let e = &mut walk.acc[i];
                    // A site's class is that of most of its live objects (one
                    // line can make several: a controller's base class).
                    if survived && table.wants_class(site) {
                        let klass = *((v + std::mem::size_of::<VALUE>()) as *const VALUE);
                        // A class, or nothing to name (hidden objects have none).
                        if klass != 0 && *(klass as *const VALUE) & 0x1f == 0x02 {
                            *walk.classes.entry((site, klass)).or_insert(0) += 1;
                        }
                    }
                    e.0 += 1;
                    e.1 += rb_obj_memsize_of(obj) as u64;
                    walk.objects += 1;
                }
            }
            v += stride.max(1);
        }
        0
    }
}

/// `Census.walk`: walk the heap (with the GVL, GC held off), giving each site
/// the mean memsize of its objects, for OBJECT/STRUCT/DATA sites its class
/// name, and the census the endpoints whose requests allocated each site's
/// live objects. Returns `[objects_walked, milliseconds]`.
fn walk() -> (u64, f64) {
    tracer::reconcile();
    let started = Instant::now();
    let (sites_now, swept_gc) = {
        let t = sites::global().lock();
        (t.site_count(), t.swept_gc())
    };
    let census_now = census::global().lock().stats().requests;
    let mut walk = Walk {
        swept_gc,
        in_flight: u32::try_from(census_now).unwrap_or(u32::MAX),
        acc: vec![(0, 0); sites_now + 1],
        objects: 0,
        classes: FxHashMap::default(),
        requests: census::global().lock().request_endpoints(),
        by_endpoint: FxHashMap::default(),
    };
    // SAFETY: with the GVL. GC is disabled so that no object (nor the class
    // of a not-yet-swept garbage object) is freed before its name is read;
    // the callback allocates nothing and holds the table lock only per page.
    unsafe {
        let was_disabled = rb_gc_disable() == Qtrue as VALUE;
        rb_objspace_each_objects(walk_page, &mut walk as *mut Walk as *mut c_void);
        let mut most: FxHashMap<u32, (u64, VALUE)> = FxHashMap::default();
        for (&(site, klass), &n) in &walk.classes {
            let best = most.entry(site).or_insert((0, 0));
            if (n, klass) > *best {
                *best = (n, klass);
            }
        }
        let mut names = Vec::with_capacity(most.len());
        for (&site, &(_, klass)) in &most {
            let real = rb_class_real(klass);
            if real == 0 {
                continue;
            }
            // Anonymous (no String): named "".
            let name = crate::string_bytes(rb_mod_name(real))
                .map_or_else(String::new, |b| String::from_utf8_lossy(b).into_owned());
            names.push((site, name));
        }
        if !was_disabled {
            rb_gc_enable();
        }
        let gc = rb_gc_count() as u64;
        let mut c = census::global().lock();
        c.set_walk(std::mem::take(&mut walk.by_endpoint), gc);
        let mut t = sites::global().lock();
        t.apply_walk(&walk.acc);
        for (site, name) in names {
            t.set_class(site, &name);
        }
    }
    (walk.objects, started.elapsed().as_secs_f64() * 1000.0)
}

/// `Census.finish_sweep`: finish the GC under way, if any (its marking and
/// lazy sweep: `rb_objspace_each_objects` runs them first), and reconcile, so
/// that the next batch closes on that GC's counts. At flush and exit: the
/// last GC of a process is otherwise never seen when its sweep outlives the
/// last request.
fn finish_sweep() {
    unsafe extern "C" fn stop(_: *mut c_void, _: *mut c_void, _: usize, _: *mut c_void) -> c_int {
        1
    }
    // SAFETY: with the GVL, outside GC; the callback touches nothing.
    unsafe { rb_objspace_each_objects(stop, std::ptr::null_mut()) };
    tracer::reconcile();
}

/// A batch of the points waiting, closed on the state as it is now (see
/// `Census::close`): None when nothing is waiting.
fn batch(ruby: &Ruby, host: String, pid: u32) -> RbResult<Option<census::Batch>> {
    tracer::reconcile();
    // SAFETY: reads a counter; called with the GVL.
    let gc = unsafe { rb_gc_count() } as u64;
    {
        let mut c = census::global().lock();
        let mut t = sites::global().lock();
        c.close(&mut t, gc, now_ms());
    }
    nogvl(ruby, move || {
        Census::take_batch(census::global(), sites::global(), &host, pid)
    })
}

/// `Census.take_batch(host, pid)`: `[key, gzipped_bytes, points]`, or nil when
/// no point is waiting.
fn take_batch(ruby: &Ruby, host: String, pid: u32) -> RbResult<Option<RArray>> {
    let Some(batch) = batch(ruby, host, pid)? else {
        return Ok(None);
    };
    let out = ruby.ary_new();
    out.push(batch.key)?;
    out.push(ruby.str_from_slice(&batch.gzip))?;
    out.push(batch.points)?;
    Ok(Some(out))
}

/// `Census.submit_batch(url, capacity, host, pid)`: take a batch and queue it
/// on this process's census writer for `url`. `[key, points, queued]`, or nil
/// when no point is waiting; queued is false when the writer's queue was full
/// (the batch is dropped and counted).
fn submit_batch(
    ruby: &Ruby,
    url: String,
    capacity: usize,
    host: String,
    pid: u32,
) -> RbResult<Option<RArray>> {
    let Some(batch) = batch(ruby, host, pid)? else {
        return Ok(None);
    };
    let mut guard = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    let fresh = !matches!(&*guard, Some((p, u, _)) if *p == std::process::id() && *u == url);
    if fresh {
        let store = Store::open(&url).map_err(|e| to_ruby(ruby, e))?;
        let writer = Writer::new(store, capacity).map_err(|e| to_ruby(ruby, e))?;
        if let Some(old) = guard.take() {
            // Another process's writer (a fork): its tasks do not exist here.
            std::mem::forget(old);
        }
        *guard = Some((std::process::id(), url, writer));
    }
    let Some((_, _, writer)) = guard.as_ref() else {
        return Ok(None);
    };
    let key = batch.key.clone();
    let queued = match writer.try_put(batch.key, batch.gzip) {
        Ok(()) => true,
        Err(CoreError::QueueFull { .. }) => false,
        Err(e) => return Err(to_ruby(ruby, e)),
    };
    let out = ruby.ary_new();
    out.push(key)?;
    out.push(batch.points)?;
    out.push(queued)?;
    Ok(Some(out))
}

/// `Census.flush_writer(timeout)`: wait for the census writer (true when idle).
fn flush_writer(ruby: &Ruby, timeout: f64) -> RbResult<bool> {
    // The lock is taken per slice, so submit_batch is never kept waiting long.
    wait_until(ruby, timeout, |slice| {
        let guard = WRITER.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((pid, _, w)) if *pid == std::process::id() => w.flush(slice),
            _ => true,
        }
    })
}

/// `Census.writer_stats`: `{stored:, failed:, dropped:, pending:}` of the
/// census writer, or nil when this process has none.
fn writer_stats(ruby: &Ruby) -> RbResult<Option<RHash>> {
    let guard = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    let Some((pid, _, w)) = &*guard else {
        return Ok(None);
    };
    if *pid != std::process::id() {
        return Ok(None);
    }
    let s = w.stats();
    let counters = [
        ("stored", s.stored),
        ("failed", s.failed),
        ("dropped", s.dropped),
        ("pending", s.pending),
    ];
    counters::hash(ruby, &counters).map(Some)
}

/// `Census.writer_errors`: the census writer's failure messages since the last call.
fn writer_errors() -> Vec<String> {
    let guard = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    match &*guard {
        Some((pid, _, w)) if *pid == std::process::id() => w.take_errors(),
        _ => Vec::new(),
    }
}

/// `Census.counts(file)`: `[[line, type, at_gc, live], ...]` for the sites
/// of `file` (the path as Ruby reports it), after the pending
/// reconciliation: what the census counts there, for the differential spec.
fn counts(file: String) -> Vec<(u32, &'static str, u64, u64)> {
    tracer::reconcile();
    sites::global().lock().counts_in(file.as_bytes())
}

/// `Census.stats`: `{requests:, points:, dropped:, pending:, batches:}`.
fn stats(ruby: &Ruby) -> RbResult<RHash> {
    let s = census::global().lock().stats();
    counters::hash(
        ruby,
        &[
            ("requests", s.requests),
            ("points", s.points),
            ("dropped", s.dropped),
            ("pending", s.pending),
            ("batches", s.batches),
        ],
    )
}

pub fn init(ruby: &Ruby, native: RModule) -> RbResult<()> {
    let keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO"].map(|k| {
        let key = ruby.str_new(k);
        key.freeze();
        ruby.gc_register_mark_object(key);
        key.as_raw()
    });
    let _ = KEYS.set(keys);
    let m = native.define_module("Census")?;
    m.define_module_function("enable", function!(enable, 0))?;
    m.define_module_function("disable", function!(disable, 0))?;
    m.define_module_function("enabled?", function!(enabled, 0))?;
    m.define_module_function("own", function!(own, 1))?;
    m.define_module_function("request", function!(request, 2))?;
    m.define_module_function("claim", function!(claim, 2))?;
    m.define_module_function("reset", function!(reset, 0))?;
    m.define_module_function("pending", function!(pending, 0))?;
    m.define_module_function("growth_gcs", function!(growth_gcs, 0))?;
    m.define_module_function("walk", function!(walk, 0))?;
    m.define_module_function("finish_sweep", function!(finish_sweep, 0))?;
    m.define_module_function("take_batch", function!(take_batch, 2))?;
    m.define_module_function("submit_batch", function!(submit_batch, 4))?;
    m.define_module_function("flush_writer", function!(flush_writer, 1))?;
    m.define_module_function("writer_stats", function!(writer_stats, 0))?;
    m.define_module_function("writer_errors", function!(writer_errors, 0))?;
    m.define_module_function("stats", function!(stats, 0))?;
    m.define_module_function("counts", function!(counts, 1))?;
    m.const_set("MAX_PENDING_POINTS", census::MAX_PENDING_POINTS)?;
    Ok(())
}
