//! Where dumps come from, and how their lines reach the scanner, one job a
//! module:
//! - `input.rs`: one dump to read ([`Input`]: a file or a store object), and
//!   what the user typed as one ([`input_for`], [`local_path`]);
//! - `lines.rs`: bytes split into lines and scanned ([`ReadStats`]), and
//!   the [`Progress`] callback; imports none of its siblings;
//! - `stream.rs`: a dump read from start to end, gunzipped on a reader
//!   thread ([`read_records`]);
//! - `parts.rs`: a plain local file read in byte ranges by several threads
//!   ([`read_in_parts`]);
//! - `place.rs`: a session's folder or store and its objects ([`Place`]).
//!
//! No module here imports one that imports it back, and this file only
//! declares and re-exports.

mod input;
mod lines;
mod parts;
mod place;
mod stream;

pub use input::{input_for, local_path, Input};
pub use lines::{no_progress, Progress, ReadStats};
pub use parts::{line_starts, read_in_parts, read_parts_at, read_range, splittable};
pub use place::Place;
pub use stream::read_records;
