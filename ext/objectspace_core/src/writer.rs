//! The asynchronous store writer used in `:inline` mode.
//!
//! `try_submit` never blocks: it either hands a finished, gzipped dump to a
//! task on this process's tokio runtime or, when `capacity` dumps are already
//! waiting, drops it and counts the drop. Nothing is buffered without limit.
//! Failures are counted and their messages kept (the last few) for the Ruby
//! side to log; the core itself never prints.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::runtime;
use crate::store::{Store, PART_SIZE};

/// Error messages kept for the caller to log; older ones are counted, not kept.
const KEPT_ERRORS: usize = 16;

/// A snapshot of a writer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub submitted: u64,
    pub stored: u64,
    pub failed: u64,
    pub dropped: u64,
    pub pending: u64,
}

#[derive(Default)]
struct Shared {
    submitted: AtomicU64,
    stored: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    pending: Mutex<u64>,
    idle: Condvar,
    errors: Mutex<VecDeque<String>>,
}

impl Shared {
    fn done(&self, result: Result<()>) {
        match result {
            Ok(()) => self.stored.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
                if errors.len() == KEPT_ERRORS {
                    errors.pop_front();
                }
                errors.push_back(err.to_string());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.idle.notify_all();
        }
    }
}

/// A bounded queue of dumps in front of one store.
pub struct Writer {
    store: Store,
    capacity: u64,
    shared: Arc<Shared>,
}

impl Writer {
    /// A writer for `store` holding at most `capacity` dumps not yet stored.
    pub fn new(store: Store, capacity: usize) -> Result<Writer> {
        if capacity == 0 {
            return Err(Error::State(
                "the writer's capacity must be at least 1".into(),
            ));
        }
        Ok(Writer {
            store,
            capacity: capacity as u64,
            shared: Arc::default(),
        })
    }

    /// The store this writer writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queue a gzipped dump and its metadata record for storing. Returns
    /// `Err(QueueFull)` (and counts a drop) instead of waiting when full.
    pub fn try_submit(
        &self,
        key: String,
        gzip: Vec<u8>,
        meta_key: String,
        meta: String,
    ) -> Result<()> {
        self.reserve()?;
        let store = self.store.clone();
        self.spawn(
            async move { store_dump(&store, &key, Bytes::from(gzip), &meta_key, meta).await },
        );
        Ok(())
    }

    /// Queue one object (a census batch) for storing under `key`, with the
    /// same bound, counters and error keeping as dumps. Returns
    /// `Err(QueueFull)` (and counts a drop) instead of waiting when full.
    pub fn try_put(&self, key: String, bytes: Vec<u8>) -> Result<()> {
        self.reserve()?;
        let store = self.store.clone();
        self.spawn(async move { store.put(&key, Bytes::from(bytes)).await });
        Ok(())
    }

    /// Count one more pending write, or a drop (`Err(QueueFull)`) when full.
    fn reserve(&self) -> Result<()> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *pending >= self.capacity {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::QueueFull {
                capacity: self.capacity as usize,
            });
        }
        *pending += 1;
        drop(pending);
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Run a reserved write on this process's runtime; its outcome is
    /// counted when it ends (or at once, if there is no runtime).
    fn spawn<F>(&self, write: F)
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let runtime = match runtime::handle() {
            Ok(runtime) => runtime,
            Err(err) => return self.shared.done(Err(err)),
        };
        let shared = self.shared.clone();
        runtime.spawn(async move { shared.done(write.await) });
    }

    /// Wait until nothing is pending or `timeout` has passed. True when idle.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *pending > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            pending = self
                .shared
                .idle
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            submitted: s.submitted.load(Ordering::Relaxed),
            stored: s.stored.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            pending: *s.pending.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Error messages since the last call (at most the last 16).
    pub fn take_errors(&self) -> Vec<String> {
        let mut errors = self.shared.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.drain(..).collect()
    }
}

/// Store a dump (one PUT, or a multipart upload of `PART_SIZE` parts), then its metadata.
async fn store_dump(
    store: &Store,
    key: &str,
    gzip: Bytes,
    meta_key: &str,
    meta: String,
) -> Result<()> {
    if gzip.len() < PART_SIZE {
        store.put(key, gzip).await?;
    } else {
        let mut writer = store.writer(key);
        let mut rest = gzip;
        while !rest.is_empty() {
            let part = rest.split_to(rest.len().min(PART_SIZE));
            writer.put(part).await.map_err(|e| Error::store(key, e))?;
        }
        writer.shutdown().await.map_err(|e| Error::store(key, e))?;
    }
    store.put(meta_key, Bytes::from(meta)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queue a two-byte dump `h/1/a` and its metadata.
    fn submit_small(writer: &Writer) {
        writer
            .try_submit(
                "h/1/a.jsonl.gz".into(),
                b"gz".to_vec(),
                "h/1/a.meta.json".into(),
                "{}".into(),
            )
            .unwrap();
    }

    fn memory_store(name: &str) -> Store {
        Store::open(&format!("memory://writer-test-{name}")).unwrap()
    }

    #[test]
    fn stores_dump_and_meta() {
        let store = memory_store("stores");
        let writer = Writer::new(store.clone(), 4).unwrap();
        submit_small(&writer);
        assert!(writer.flush(Duration::from_secs(10)));
        assert_eq!(
            writer.stats(),
            Stats {
                submitted: 1,
                stored: 1,
                ..Stats::default()
            }
        );
        let got = runtime::block_on(store.get("h/1/a.jsonl.gz"))
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"gz");
        let keys = runtime::block_on(store.list("h")).unwrap().unwrap();
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn single_objects_are_stored_and_bounded() {
        let store = memory_store("put");
        let writer = Writer::new(store.clone(), 1).unwrap();
        let mut dropped = 0;
        for i in 0..20 {
            if writer
                .try_put(format!("h/1/census-{i:06}.jsonl.gz"), vec![1; 1 << 16])
                .is_err()
            {
                dropped += 1;
            }
        }
        assert!(writer.flush(Duration::from_secs(10)));
        let stats = writer.stats();
        assert_eq!((stats.dropped, stats.stored + stats.dropped), (dropped, 20));
        let keys = runtime::block_on(store.list("h")).unwrap().unwrap();
        assert_eq!(keys.len() as u64, stats.stored);
    }

    #[test]
    fn large_dumps_go_up_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        let writer = Writer::new(store.clone(), 1).unwrap();
        let big: Vec<u8> = (0..PART_SIZE * 2 + 123).map(|i| (i % 251) as u8).collect();
        writer
            .try_submit(
                "h/1/big.jsonl.gz".into(),
                big.clone(),
                "h/1/big.meta.json".into(),
                "{}".into(),
            )
            .unwrap();
        assert!(writer.flush(Duration::from_secs(30)));
        assert_eq!(writer.stats().stored, 1, "{:?}", writer.take_errors());
        assert_eq!(
            std::fs::read(dir.path().join("h/1/big.jsonl.gz")).unwrap(),
            big
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // Capacity 1 and a tight loop: whatever is not queued must be counted as dropped.
        let store = memory_store("full");
        let writer = Writer::new(store, 1).unwrap();
        let mut dropped = 0;
        for i in 0..50 {
            let r = writer.try_submit(
                format!("h/1/{i}.jsonl.gz"),
                vec![0; 1 << 16],
                format!("h/1/{i}.meta.json"),
                "{}".into(),
            );
            if matches!(r, Err(Error::QueueFull { .. })) {
                dropped += 1;
            }
        }
        assert!(writer.flush(Duration::from_secs(10)));
        let stats = writer.stats();
        assert_eq!(stats.dropped, dropped);
        assert_eq!(stats.stored + stats.dropped, 50);
        assert_eq!(stats.pending, 0);
    }

    #[test]
    fn failures_are_counted_with_their_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        // A plain file where the host folder must go: every write under it fails.
        std::fs::write(dir.path().join("h"), b"not a folder").unwrap();
        let writer = Writer::new(store, 4).unwrap();
        submit_small(&writer);
        assert!(writer.flush(Duration::from_secs(10)));
        assert_eq!(writer.stats().failed, 1);
        let errors = writer.take_errors();
        assert!(errors[0].contains("h/1/a.jsonl.gz"), "{errors:?}");
        assert!(writer.take_errors().is_empty());
    }
}
