//! Blob counters as Prometheus metrics: bytes received from and served to
//! peers, and the size of the local store. Owned by the [`BlobStore`]
//! (every clone shares them); whoever runs the `/metrics` endpoint
//! registers them once with [`BlobMetrics::register`].
//!
//! [`BlobStore`]: super::BlobStore

use prometheus::{IntCounter, IntGauge, Registry};

/// The blob store's metrics. Cheap to clone: the counters are shared.
#[derive(Debug, Clone)]
pub struct BlobMetrics {
    /// `agora_blob_bytes_in_total`: blob bytes fetched from peers.
    bytes_in: IntCounter,
    /// `agora_blob_bytes_out_total`: blob bytes served to peers.
    bytes_out: IntCounter,
    /// `agora_blob_store_bytes`: bytes of complete blobs in the store.
    stored_bytes: IntGauge,
}

impl BlobMetrics {
    /// Unregistered metrics at zero.
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            bytes_in: IntCounter::new(
                "agora_blob_bytes_in_total",
                "Blob bytes received from peers (chunks of the expected size, before the hash check)",
            )?,
            bytes_out: IntCounter::new("agora_blob_bytes_out_total", "Blob bytes served to peers")?,
            stored_bytes: IntGauge::new(
                "agora_blob_store_bytes",
                "Bytes of complete blobs in the local store",
            )?,
        })
    }

    /// Registers the metrics in `registry`. Fails if they are registered
    /// there already (one blob store per registry).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.bytes_in.clone()))?;
        registry.register(Box::new(self.bytes_out.clone()))?;
        registry.register(Box::new(self.stored_bytes.clone()))?;
        Ok(())
    }

    /// Blob bytes received from peers so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.get()
    }

    /// Blob bytes served to peers so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.get()
    }

    /// Bytes of complete blobs in the store, as last set.
    pub fn stored_bytes(&self) -> u64 {
        u64::try_from(self.stored_bytes.get()).unwrap_or(0)
    }

    /// Counts `n` bytes received from a peer.
    pub(crate) fn add_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    /// Counts `n` bytes served to a peer.
    pub(crate) fn add_out(&self, n: usize) {
        self.bytes_out.inc_by(n as u64);
    }

    /// Sets the stored-bytes gauge.
    pub(crate) fn set_stored(&self, bytes: u64) {
        self.stored_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_register_once() {
        let m = BlobMetrics::new().unwrap();
        m.add_in(10);
        m.add_out(3);
        m.add_out(4);
        m.set_stored(99);
        assert_eq!((m.bytes_in(), m.bytes_out(), m.stored_bytes()), (10, 7, 99));

        let registry = Registry::new();
        m.register(&registry).unwrap();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(
            names.contains(&"agora_blob_bytes_in_total".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"agora_blob_bytes_out_total".to_owned()));
        assert!(
            m.register(&registry).is_err(),
            "second registration refused"
        );
    }
}
