//! Where a session's objects are: a local folder, walked, or a store,
//! listed ([`Place`]).

use std::path::{Path, PathBuf};

use super::input::{local_path, Input};
use crate::analysis::error::AnalysisError;
use crate::store::Store;

/// Where a session's objects are: a local folder or a store.
pub enum Place {
    Folder(PathBuf),
    Store(Store),
}

impl Place {
    /// Every object under `source` (a folder, which must exist, or a store
    /// URL): the place and each object's key (relative to it) and size,
    /// sorted by key for a folder.
    pub fn list(source: &str) -> Result<(Place, Vec<(String, u64)>), AnalysisError> {
        match local_path(source) {
            Some(dir) => {
                let mut keys = Vec::new();
                walk(&dir, "", &mut keys).map_err(|e| AnalysisError::Read {
                    source_name: source.to_string(),
                    message: e.to_string(),
                })?;
                keys.sort();
                Ok((Place::Folder(dir), keys))
            }
            None => {
                let store = Store::open(source)?;
                let keys = crate::runtime::block_on(store.list(""))??;
                Ok((Place::Store(store), keys))
            }
        }
    }

    /// The input for one key of the place.
    pub fn input(&self, key: &str) -> Input {
        match self {
            Place::Folder(dir) => Input::Local(dir.join(key)),
            Place::Store(store) => Input::Stored {
                store: store.clone(),
                key: key.to_string(),
            },
        }
    }
}

/// Every file under `dir`, as (key relative to `dir`, size).
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let key = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = ent.file_type()?;
        if ft.is_dir() {
            walk(&ent.path(), &key, out)?;
        } else if ft.is_file() {
            out.push((key, ent.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    Ok(())
}
