//! Functions libruby exports but its public headers do not declare (so
//! rb-sys has no bindings for them), in one place.

use std::ffi::{c_int, c_void};

use rb_sys::VALUE;

extern "C" {
    /// Calls `callback(start, end, stride, data)` for each heap page; a
    /// non-zero return stops the walk. Finishes a lazy sweep first.
    pub(crate) fn rb_objspace_each_objects(
        callback: unsafe extern "C" fn(*mut c_void, *mut c_void, usize, *mut c_void) -> c_int,
        data: *mut c_void,
    );
    /// `ObjectSpace.memsize_of(obj)`, without the Ruby call.
    pub(crate) fn rb_obj_memsize_of(obj: VALUE) -> usize;
    /// The running Ruby's API version, e.g. `[3, 3, 0]`.
    pub(crate) static ruby_api_version: [c_int; 3];
}
