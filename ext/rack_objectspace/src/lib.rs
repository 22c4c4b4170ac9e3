//! Ruby glue for rack-objectspace: type conversion, GVL release and error
//! mapping over `objectspace_core`. Everything here is private API under
//! `Rack::Objectspace::Native`; defaults live in Ruby.

mod analysis;
mod capture;
mod census;
mod child;
mod counters;
mod errors;
mod nogvl;
mod tracer;

use magnus::{Module, Ruby};
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

#[magnus::init(name = "rack_objectspace")]
fn init(ruby: &Ruby) -> Result<(), magnus::Error> {
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
