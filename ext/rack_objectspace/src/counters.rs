//! Counters as Ruby sees them: a Hash of Symbol => Integer, the shape of
//! every `stats` the glue returns.

use magnus::{RHash, Ruby};

/// `{name: value, ...}` with Symbol keys, in the given order.
pub fn hash(ruby: &Ruby, counters: &[(&str, u64)]) -> Result<RHash, magnus::Error> {
    let hash = ruby.hash_new();
    for &(name, value) in counters {
        hash.aset(ruby.to_symbol(name), value)?;
    }
    Ok(hash)
}
