//! Store URLs, opened natively with object_store.
//!
//! `file://DIR` (relative DIR is taken from the current directory, and created),
//! `memory://NAME` (one in-process store per URL, shared by every writer and
//! reader in this process), `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix` (endpoint and credentials from the usual `AWS_*`,
//! `GOOGLE_*`, `AZURE_*` variables).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// The URL schemes `open` accepts, for messages.
pub const SCHEMES: &str =
    "file://DIR, memory://NAME, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX";

/// Multipart part size: S3 parts must be at least 5 MiB; below this a dump is one PUT.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Multipart parts uploading at once, per dump.
pub const PARTS_IN_FLIGHT: usize = 2;

/// An opened store: the object_store client and the prefix every key goes under.
#[derive(Clone, Debug)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    process_local: bool,
}

static MEMORY_STORES: Mutex<Option<HashMap<String, Arc<InMemory>>>> = Mutex::new(None);

fn invalid(url: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn cloud_retry() -> RetryConfig {
    // object_store's default retries for up to 3 minutes; a profiler must give up
    // sooner so that flush at exit and fork children finish.
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    }
}

fn cloud_client(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60))
        .with_allow_http(allow_http)
}

fn env_is_http(names: &[&str]) -> bool {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .any(|v| v.starts_with("http://"))
}

impl Store {
    /// Open a store URL. Fails with `Error::InvalidUrl` for anything unusable, so
    /// that a bad `store:` option is reported at boot.
    pub fn open(url: &str) -> Result<Store> {
        if let Some(rest) = url.strip_prefix("file://") {
            return Self::open_file(url, rest);
        }
        if let Some(name) = url.strip_prefix("memory://") {
            let mut stores = MEMORY_STORES
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let memory = stores
                .get_or_insert_with(HashMap::new)
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(InMemory::new()))
                .clone();
            return Ok(Store {
                url: url.to_string(),
                inner: memory,
                prefix: String::new(),
                process_local: true,
            });
        }
        let parsed =
            Url::parse(url).map_err(|e| invalid(url, format!("{e}; expected one of {SCHEMES}")))?;
        let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|_| {
            invalid(
                url,
                format!(
                    "unknown scheme {:?}; expected one of {SCHEMES}",
                    parsed.scheme()
                ),
            )
        })?;
        let inner: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let http = env_is_http(&["AWS_ENDPOINT", "AWS_ENDPOINT_URL"]);
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(cloud_retry())
                    .with_client_options(cloud_client(http))
                    .build()
                    .map_err(|e| invalid(url, e.to_string()))?;
                Arc::new(store)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(cloud_retry())
                    .with_client_options(cloud_client(false))
                    .build()
                    .map_err(|e| invalid(url, e.to_string()))?;
                Arc::new(store)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let http = env_is_http(&["AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"]);
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(cloud_retry())
                    .with_client_options(cloud_client(http))
                    .build()
                    .map_err(|e| invalid(url, e.to_string()))?;
                Arc::new(store)
            }
            other => {
                return Err(invalid(
                    url,
                    format!("scheme {other:?} is not supported; expected one of {SCHEMES}"),
                ))
            }
        };
        Ok(Store {
            url: url.to_string(),
            inner,
            prefix: path.as_ref().trim_matches('/').to_string(),
            process_local: false,
        })
    }

    fn open_file(url: &str, rest: &str) -> Result<Store> {
        // file:///abs/dir, file://localhost/abs/dir and file://relative/dir all work;
        // the last is what users write for a folder beside their app.
        let rest = rest.strip_prefix("localhost/").map(|r| format!("/{r}"));
        let rest = rest.as_deref().unwrap_or(&url["file://".len()..]);
        if rest.is_empty() {
            return Err(invalid(
                url,
                "no folder given; write file://DIR, e.g. file://tmp/objectspace",
            ));
        }
        let dir = std::path::Path::new(rest);
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| invalid(url, format!("cannot create folder {}: {e}", dir.display())))?;
        let local = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| invalid(url, format!("cannot open folder {}: {e}", dir.display())))?;
        Ok(Store {
            url: url.to_string(),
            inner: Arc::new(local),
            prefix: String::new(),
            process_local: false,
        })
    }

    /// The URL this store was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True for `memory://`: another process (a fork child) cannot write to it.
    pub fn is_process_local(&self) -> bool {
        self.process_local
    }

    /// The object_store client, for readers that need more than `get`/`list`.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// The full object path of a key (relative to the URL's prefix).
    pub fn path(&self, key: &str) -> Path {
        let key = key.trim_matches('/');
        if self.prefix.is_empty() {
            Path::from(key)
        } else if key.is_empty() {
            Path::from(self.prefix.as_str())
        } else {
            Path::from(format!("{}/{}", self.prefix, key))
        }
    }

    /// The key of an object path, relative to the URL's prefix.
    pub fn key_of(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            return full.to_string();
        }
        full.strip_prefix(self.prefix.as_str())
            .map(|k| k.trim_start_matches('/').to_string())
            .unwrap_or_else(|| full.to_string())
    }

    /// Store `bytes` under `key` in one request.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put(&self.path(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| Error::store(key, e))
    }

    /// A streaming writer for `key`: one PUT below `PART_SIZE`, a multipart upload above,
    /// with at most `PARTS_IN_FLIGHT` parts uploading at once: memory stays bounded
    /// by a few parts however large the dump (the default, 8, let a dump written
    /// faster than it uploads hold 8 parts).
    pub fn writer(&self, key: &str) -> BufWriter {
        BufWriter::with_capacity(self.inner.clone(), self.path(key), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT)
    }

    /// The whole object stored under `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let result = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| Error::store(key, e))?;
        result.bytes().await.map_err(|e| Error::store(key, e))
    }

    /// Every object under `under` (a key prefix, "" for all), as (key, size), sorted by key.
    pub async fn list(&self, under: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.path(under);
        let listed: Vec<_> = self
            .inner
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(self.url.as_str(), e))?;
        let mut keys: Vec<(String, u64)> = listed
            .into_iter()
            .map(|meta| (self.key_of(&meta.location), meta.size))
            .collect();
        keys.sort();
        Ok(keys)
    }
}
