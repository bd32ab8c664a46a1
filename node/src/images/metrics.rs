//! Image transfer as Prometheus metrics.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Counters of image fetches, loads and removals.
#[derive(Debug, Clone)]
pub struct ImageMetrics {
    /// `agora_image_loads_total{outcome}`: images fetched and loaded, by
    /// outcome (`ok` or an [`super::ImageFetchError::kind`]).
    pub loads: IntCounterVec,
    /// `agora_image_layer_bytes_fetched_total`: bytes of layers and
    /// configs fetched from peers (a layer already here is not counted).
    pub bytes_fetched: IntCounter,
    /// `agora_image_layers_reused_total`: layers a fetch found here already.
    pub layers_reused: IntCounter,
    /// `agora_image_evictions_total`: agora-loaded images removed to stay
    /// within the image budget.
    pub evictions: IntCounter,
}

impl ImageMetrics {
    /// Unregistered counters at zero.
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            loads: IntCounterVec::new(
                Opts::new(
                    "agora_image_loads_total",
                    "Docker images fetched from peers and loaded, by outcome",
                ),
                &["outcome"],
            )?,
            bytes_fetched: IntCounter::new(
                "agora_image_layer_bytes_fetched_total",
                "Bytes of image layers and configs fetched from peers",
            )?,
            layers_reused: IntCounter::new(
                "agora_image_layers_reused_total",
                "Image layers an image fetch found already stored",
            )?,
            evictions: IntCounter::new(
                "agora_image_evictions_total",
                "Images agora loaded and removed to stay within --image-cache",
            )?,
        })
    }

    /// Registers the counters in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.loads.clone()))?;
        registry.register(Box::new(self.bytes_fetched.clone()))?;
        registry.register(Box::new(self.layers_reused.clone()))?;
        registry.register(Box::new(self.evictions.clone()))?;
        Ok(())
    }
}
