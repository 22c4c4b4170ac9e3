//! A global allocator that maps large blocks straight from the kernel.
//!
//! glibc's malloc serves blocks above its mmap threshold with `mmap` and
//! gives them back on free, but it raises that threshold to the size of each
//! such block freed (up to 32 MB). From then on, blocks of up to that size
//! come from its arenas, where a freed block stays resident until the memory
//! above it is freed too. The analyser reads dumps in phases (a table built by
//! threads and joined, buffers that grow and are dropped), so under glibc's
//! rule each phase leaves tens of MB resident for the next: `diff` of three
//! 1.2M-object dumps peaked at 174 MB instead of 113 MB.
//!
//! [`LargeMmap`] sends every block of [`LARGE`] bytes or more to `mmap`
//! (grown with `mremap`, so a growing `Vec` is never copied) and everything
//! else to the system allocator, unchanged. Freed large blocks return to the
//! kernel at once. It affects the Rust allocations of the binary that
//! declares it (`#[global_allocator]`), never the host's (Ruby's) own.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this many bytes or more are mapped directly.
pub const LARGE: usize = 1 << 20;

/// Page alignment that `mmap` gives; larger alignments go to the system allocator.
const PAGE: usize = 4096;

/// See the module documentation.
pub struct LargeMmap;

#[inline]
fn is_large(size: usize, align: usize) -> bool {
    size >= LARGE && align <= PAGE
}

// SAFETY: every block is either from `System` (sizes below LARGE, or
// alignments above a page) or from `mmap`, and `dealloc`/`realloc` tell them
// apart by the same test on the layout the caller must pass back unchanged.
// `mmap` returns page-aligned, zero-filled memory or MAP_FAILED (mapped to null).
unsafe impl GlobalAlloc for LargeMmap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            // Fresh anonymous mappings are zero-filled.
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: `ptr` was mapped by `map` with this size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let (was, will) = (is_large(layout.size(), align), is_large(new_size, align));
        match (was, will) {
            // SAFETY: `ptr` came from `System` with `layout`.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes; the
                // kernel moves or extends it without copying the pages.
                let moved = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if moved == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    moved.cast()
                }
            }
            _ => {
                // Across the line: a new block, a copy of what both hold, the old one freed.
                // SAFETY: `new_size` with the same alignment is a valid layout
                // (the caller guarantees it does not overflow isize).
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
                // SAFETY: as for `alloc`.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and do not overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

/// A fresh private anonymous mapping of `size` bytes, or null.
#[inline]
fn map(size: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_on_both_sides_of_the_line_keep_their_bytes_through_realloc() {
        let a = LargeMmap;
        for (from, to) in [
            (100, 200),
            (100, LARGE + 5),
            (LARGE + 5, 3 * LARGE),
            (3 * LARGE, LARGE + 1),
            (LARGE + 1, 64),
        ] {
            let layout = Layout::from_size_align(from, 8).unwrap();
            // SAFETY: non-zero sizes, the layouts passed back unchanged.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                for i in 0..from {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = a.realloc(p, layout, to);
                assert!(!q.is_null());
                for i in 0..from.min(to) {
                    assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to} at {i}");
                }
                a.dealloc(q, Layout::from_size_align(to, 8).unwrap());
            }
        }
        // Zeroed large blocks are zero.
        let layout = Layout::from_size_align(2 * LARGE, 64).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!((0..2 * LARGE).step_by(4093).all(|i| *p.add(i) == 0));
            a.dealloc(p, layout);
        }
    }
}
