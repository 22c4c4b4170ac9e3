//! Ruby glue for rack-objectspace: type conversion, GVL release and error
//! mapping over `objectspace_core`. Everything here is private API under
//! `Rack::Objectspace::Native`; defaults live in Ruby.

mod analysis;
mod capture;
mod census;
mod child;
mod counters;
mod errors;
mod ffi;
mod frames;
mod nogvl;
mod tracer;
mod windows;

use magnus::{Module, Ruby};

/// Large blocks straight from the kernel, so that the analyser's phases give
/// their memory back (see `objectspace_core::alloc`).
#[global_allocator]
static ALLOC: objectspace_core::alloc::LargeMmap = objectspace_core::alloc::LargeMmap;
use rb_sys::{ruby_value_type, RB_TYPE_P, RSTRING_LEN, RSTRING_PTR, VALUE};

/// The bytes of `v` if it is a String.
///
/// # Safety
/// `v` is a live Ruby value; the slice borrows the string's buffer, so use it
/// before any Ruby code runs (nothing can change or free the string meanwhile).
#[inline]
unsafe fn string_bytes<'a>(v: VALUE) -> Option<&'a [u8]> {
    // SAFETY: see above.
    unsafe {
        RB_TYPE_P(v, ruby_value_type::RUBY_T_STRING).then(|| {
            let len = RSTRING_LEN(v).max(0) as usize;
            std::slice::from_raw_parts(RSTRING_PTR(v) as *const u8, len)
        })
    }
}

/// The Ruby version this extension was built for (see build.rs).
const BUILT_FOR: &str = env!("RACK_OBJECTSPACE_BUILT_FOR");

/// Why this extension must not run on the Ruby that loads it, or None. Reads
/// only a plain exported array: nothing whose layout depends on the version.
fn wrong_ruby() -> Option<String> {
    // SAFETY: a static array of three ints that libruby exports and never changes.
    let running = unsafe { ffi::ruby_api_version };
    let built: Vec<i32> = BUILT_FOR
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    (built.len() < 2 || built[..2] != running[..2]).then(|| {
        format!(
            "rack-objectspace's native extension was built for Ruby {BUILT_FOR}, but Ruby {}.{} loads it. \
             To fix this, build it with this Ruby: `ruby -S rake compile` in the gem's folder (or bin/setup).",
            running[0], running[1]
        )
    })
}

#[magnus::init(name = "rack_objectspace")]
fn init(ruby: &Ruby) -> Result<(), magnus::Error> {
    if let Some(message) = wrong_ruby() {
        return Err(magnus::Error::new(ruby.exception_load_error(), message));
    }
    let rack = ruby.define_module("Rack")?;
    let objectspace = rack.define_class("Objectspace", ruby.class_object())?;
    let native = objectspace.define_module("Native")?;
    capture::init(ruby, native)?;
    child::init(ruby, native)?;
    analysis::init(ruby, native)?;
    tracer::init(ruby, native)?;
    census::init(ruby, native)?;
    Ok(())
}
