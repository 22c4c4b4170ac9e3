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
