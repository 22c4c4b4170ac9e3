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
    /// Whether the GC marked `obj` (Ruby 3.3: at the end of marking, alive).
    #[cfg(ruby_gc_verdict = "marked")]
    pub(crate) fn rb_objspace_marked_object_p(obj: VALUE) -> c_int;
    /// Whether `obj` is garbage: a free, moved or zombie slot, or (while
    /// lazy sweeping) unmarked on a page not swept yet (Ruby 3.4).
    #[cfg(ruby_gc_verdict = "garbage")]
    pub(crate) fn rb_objspace_garbage_object_p(obj: VALUE) -> bool;
    /// Whether `obj` is a slot of a heap page Ruby has now (Ruby 3.4).
    #[cfg(ruby_gc_verdict = "garbage")]
    pub(crate) fn rb_gc_pointer_to_heap_p(obj: VALUE) -> bool;
}
