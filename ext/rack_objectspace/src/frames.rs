//! The allocating line of a NEWOBJ event, cached by the instruction that
//! allocates.
//!
//! `rb_tracearg_path` and `rb_tracearg_lineno` find the nearest Ruby frame
//! and compute its line from the iseq's table of positions, a rank over a
//! bit vector: ~140 instructions an allocation (docs/census.md), the largest
//! part of the tracer's own cost. The same instruction (iseq, pc) always
//! allocates on the same line, so this cache keys the answer by it: a hit
//! reads two words of the frame and one entry.
//!
//! The frame is read as Ruby lays it out (vm_core.h: `rb_trace_arg_t` begins
//! with the event, the execution context and the current frame; a frame with
//! `pc`, `sp`, `iseq`, `self`, `ep`; the context with its stack and its size;
//! `ep[0]` holds the frame's flags). That layout was checked for 3.1, 3.3 and
//! 3.4 (build.rs sets `ruby_frame_words` for those only); on any other Ruby
//! every allocation asks Ruby. The extension refuses to load on a Ruby other
//! than the one it was built for, so the layout cannot change under it.
//!
//! An entry lives one GC generation: iseqs, their instructions and their
//! path strings are freed (or moved by compaction) only by a GC, so within
//! one an instruction's address names it. The first [`CHECKED_HITS`] hits
//! are also asked of Ruby; on any difference the cache turns itself off
//! ([`mismatches`]) and every allocation asks Ruby, as without it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rb_sys::{
    rb_trace_arg_t, rb_tracearg_lineno, rb_tracearg_path, ruby_value_type, FIX2LONG, FIXNUM_P,
    RB_TYPE_P, VALUE,
};

/// The words of `rb_control_frame_t` on this Ruby (None: not checked).
#[cfg(ruby_frame_words = "8")]
const FRAME_WORDS: Option<usize> = Some(8);
#[cfg(ruby_frame_words = "7")]
const FRAME_WORDS: Option<usize> = Some(7);
#[cfg(not(any(ruby_frame_words = "7", ruby_frame_words = "8")))]
const FRAME_WORDS: Option<usize> = None;

/// `VM_FRAME_FLAG_CFRAME` in `ep[0]` (the same on 3.1-3.4): a C method's frame.
const CFRAME: usize = 0x80;

/// Entries: 4,096 of 32 bytes (128 KiB). A request's allocating
/// instructions are a few hundred to a few thousand.
const BITS: u32 = 12;

/// Hits also asked of Ruby, to check the layout on this machine's Ruby.
pub const CHECKED_HITS: u64 = 4096;

#[derive(Clone, Copy)]
struct Entry {
    iseq: usize,
    pc: usize,
    path: VALUE,
    line: u32,
    /// The GC count (low 32 bits) the entry was made in.
    gc: u32,
}

const EMPTY: Entry = Entry {
    iseq: 0,
    pc: 0,
    path: 0,
    line: 0,
    gc: 0,
};

struct Cache(UnsafeCell<[Entry; 1 << BITS]>);

// SAFETY: only touched from the NEWOBJ hook, which Ruby runs with the GVL
// (and, with several Ractors, under the VM lock of its slow allocation
// path): one at a time.
unsafe impl Sync for Cache {}

static CACHE: Cache = Cache(UnsafeCell::new([EMPTY; 1 << BITS]));
/// Hits checked against Ruby so far, and differences found.
static CHECKED: AtomicU64 = AtomicU64::new(0);
static MISMATCHES: AtomicU64 = AtomicU64::new(0);
static OFF: AtomicBool = AtomicBool::new(false);

/// Differences between the cache and Ruby found by the check (any turns the
/// cache off).
pub fn mismatches() -> u64 {
    MISMATCHES.load(Ordering::Relaxed)
}

/// Whether allocations find their line in the cache on this Ruby.
pub fn enabled() -> bool {
    FRAME_WORDS.is_some() && !OFF.load(Ordering::Relaxed)
}

/// What Ruby says: the path string (or nil) and line of the nearest Ruby frame.
///
/// # Safety
/// From a NEWOBJ hook, with its trace argument.
unsafe fn ask_ruby(arg: *mut rb_trace_arg_t) -> (VALUE, u32) {
    // SAFETY: see above.
    unsafe {
        let path = rb_tracearg_path(arg);
        let line = rb_tracearg_lineno(arg);
        let line = if FIXNUM_P(line) {
            FIX2LONG(line).clamp(0, u32::MAX as _) as u32
        } else {
            0
        };
        (path, line)
    }
}

/// The (iseq, pc) of the nearest Ruby frame, as `rb_vm_get_ruby_level_next_cfp`
/// finds it, or None if there is none (or no iseq).
///
/// # Safety
/// From a NEWOBJ hook, with its trace argument, on a Ruby whose frame has
/// `words` words.
#[inline]
unsafe fn ruby_frame(arg: *mut rb_trace_arg_t, words: usize) -> Option<(usize, usize)> {
    // SAFETY: rb_trace_arg_t is { u32 event; ec; cfp; ... } and the context
    // { vm_stack; vm_stack_size; cfp; ... } (see the module's doc); frames
    // run from the current one up to the end of the VM stack.
    unsafe {
        let arg = arg as *const usize;
        let ec = *arg.add(1) as *const usize;
        let mut cfp = *arg.add(2) as *const usize;
        let end = (*ec as *const usize).add(*ec.add(1));
        while cfp < end {
            let ep = *cfp.add(4) as *const usize;
            if *ep & CFRAME == 0 {
                let iseq = *cfp.add(2);
                return (iseq != 0).then(|| (iseq, *cfp));
            }
            cfp = cfp.add(words);
        }
        None
    }
}

/// The allocating path string (or nil) and line of this NEWOBJ event; `gc`
/// is `rb_gc_count()`.
///
/// # Safety
/// From a NEWOBJ hook, with its trace argument.
#[inline]
pub unsafe fn allocating_line(arg: *mut rb_trace_arg_t, gc: u64) -> (VALUE, u32) {
    // SAFETY: see above; the cache is the hook's alone (see `Cache`).
    unsafe {
        let Some(words) = FRAME_WORDS.filter(|_| !OFF.load(Ordering::Relaxed)) else {
            return ask_ruby(arg);
        };
        let Some((iseq, pc)) = ruby_frame(arg, words) else {
            return ask_ruby(arg);
        };
        let gc = gc as u32;
        let index = ((pc >> 3) ^ (pc >> (3 + BITS))) & ((1 << BITS) - 1);
        let entry = &mut (*CACHE.0.get())[index];
        if entry.pc == pc && entry.iseq == iseq && entry.gc == gc {
            if CHECKED.load(Ordering::Relaxed) < CHECKED_HITS {
                CHECKED.fetch_add(1, Ordering::Relaxed);
                let ruby = ask_ruby(arg);
                if ruby != (entry.path, entry.line) {
                    MISMATCHES.fetch_add(1, Ordering::Relaxed);
                    OFF.store(true, Ordering::Relaxed);
                    return ruby;
                }
            }
            return (entry.path, entry.line);
        }
        let (path, line) = ask_ruby(arg);
        // Only a path string is kept: nil (no Ruby frame) is asked each time.
        if RB_TYPE_P(path, ruby_value_type::RUBY_T_STRING) {
            *entry = Entry {
                iseq,
                pc,
                path,
                line,
                gc,
            };
        }
        (path, line)
    }
}
