//! Native analysis API (in progress, owned by the analysis work).

use magnus::{RModule, Ruby};

pub fn init(_ruby: &Ruby, _native: RModule) -> Result<(), magnus::Error> {
    Ok(())
}
