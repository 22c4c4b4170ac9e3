//! The pipeline's output: gzip, kept in memory or handed to a store in
//! chunks as it grows (one PUT, or a multipart upload past 8 MiB).

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::runtime;
use crate::store::Store;

/// The store sink hands the gzip output over in chunks of this size.
pub(super) const CHUNK: usize = 1 << 20;

/// Where the gzipped dump goes.
pub enum Sink {
    /// Kept in memory and returned by `finish` (for the writer queue or a Ruby `[]=` store).
    Memory,
    /// Streamed to a store under `key` (one PUT, or a multipart upload past 8 MiB).
    Store { store: Store, key: String },
}

/// Where gzip output goes while the stream runs.
enum Out {
    Memory,
    Store {
        key: String,
        writer: Box<object_store::buffered::BufWriter>,
    },
}

/// The gzip stream of a dump and its sink.
pub(super) struct Gzip {
    encoder: GzEncoder<Vec<u8>>,
    out: Out,
    /// gzip bytes handed to the store so far.
    handed_over: u64,
}

impl Gzip {
    /// `level` is gzip's, 0-9 (higher is clamped to 9).
    pub(super) fn new(sink: Sink, level: u32) -> Self {
        let out = match sink {
            Sink::Memory => Out::Memory,
            Sink::Store { store, key } => Out::Store {
                writer: Box::new(store.writer(&key)),
                key,
            },
        };
        Gzip {
            encoder: GzEncoder::new(
                Vec::with_capacity(CHUNK * 2),
                Compression::new(level.min(9)),
            ),
            out,
            handed_over: 0,
        }
    }

    /// Gzip `bytes`; for a store, hand full chunks on.
    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.encoder.write_all(bytes)?;
        if let Out::Store { key, writer } = &mut self.out {
            let pending = self.encoder.get_ref().len();
            if pending >= CHUNK {
                // A copy of exactly the bytes (the Vec's spare capacity would
                // ride along in each part otherwise); the Vec keeps its capacity.
                let chunk = Bytes::copy_from_slice(self.encoder.get_ref());
                self.encoder.get_mut().clear();
                runtime::block_on(writer.put(chunk))?.map_err(|e| Error::store(&*key, e))?;
                self.handed_over += pending as u64;
            }
        }
        Ok(())
    }

    /// Abort an upload in progress (the stream failed); nothing for memory.
    pub(super) fn abort(&mut self) {
        if let Out::Store { writer, .. } = &mut self.out {
            let _ = runtime::block_on(writer.abort());
        }
    }

    /// End the gzip stream and, for a store, complete the upload. Returns
    /// the gzip bytes (empty once stored) and the gzip size in all.
    pub(super) fn finish(self) -> Result<(Vec<u8>, u64)> {
        let mut gzip = self.encoder.finish()?;
        let stored = self.handed_over + gzip.len() as u64;
        if let Out::Store { key, mut writer } = self.out {
            let chunk = Bytes::from(std::mem::take(&mut gzip));
            runtime::block_on(async {
                writer.put(chunk).await?;
                writer.shutdown().await
            })?
            .map_err(|e| Error::store(&key, e))?;
        }
        Ok((gzip, stored))
    }
}
