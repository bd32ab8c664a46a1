//! A Docker image as blobs: the manifest that names an image's config and
//! layers, so an executor that lacks the image can fetch it piece by piece
//! from peers and a layer shared by several images moves once.
//!
//! Everything is content-addressed the way Docker itself addresses it: the
//! image id is the sha256 of its config, and each layer's blob id is the
//! sha256 of its uncompressed tar, which the config lists as its
//! `rootfs.diff_ids`. So a manifest cannot smuggle in other bytes: its
//! config must hash to the pinned id ([`ImageManifest::check_pinned`]) and
//! its layers must be the config's diff ids ([`ImageManifest::check_layers`]).

use serde::{Deserialize, Serialize};

use crate::limits::{self, check, check_u64, Bounded, LimitError};
use crate::ContentId;

/// One blob of an image and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBlob {
    /// The blob's content id.
    pub id: ContentId,
    /// Its size in bytes.
    pub size: u64,
}

/// An image's config and layers as blobs, itself stored as a blob whose
/// id a Docker job's spec names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// The image config (JSON); its sha256 is the image id.
    pub config: ImageBlob,
    /// The layers (uncompressed tars), base first, as the config's
    /// `rootfs.diff_ids` lists them.
    pub layers: Vec<ImageBlob>,
}

/// Why a manifest does not describe the image a job pins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The config does not hash to the pinned image id.
    #[error("the manifest's config hashes to sha256:{found}, but the job pins {pinned}")]
    ConfigMismatch {
        /// The pinned image id.
        pinned: String,
        /// The config's blob id (hex).
        found: String,
    },
    /// The layers differ from the config's `rootfs.diff_ids`.
    #[error("the manifest's layers differ from the image config's diff ids at layer {index}")]
    LayerMismatch {
        /// The first layer that differs (or the length, if counts differ).
        index: usize,
    },
}

impl ImageManifest {
    /// Bytes of the config and every layer.
    pub fn total_bytes(&self) -> u64 {
        self.blobs().map(|b| b.size).fold(0, u64::saturating_add)
    }

    /// The config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &ImageBlob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// The image id the manifest describes: `sha256:` and the config's id.
    pub fn image_id(&self) -> String {
        format!("sha256:{}", self.config.id.to_hex())
    }

    /// Checks that the config is the image `pinned` (`sha256:<hex>`).
    pub fn check_pinned(&self, pinned: &str) -> Result<(), ImageError> {
        if self.image_id() == pinned {
            Ok(())
        } else {
            Err(ImageError::ConfigMismatch {
                pinned: pinned.to_string(),
                found: self.config.id.to_hex(),
            })
        }
    }

    /// Checks that the layers are exactly `diff_ids` (`sha256:<hex>`, as
    /// the config lists them), in order.
    pub fn check_layers(&self, diff_ids: &[String]) -> Result<(), ImageError> {
        for (index, layer) in self.layers.iter().enumerate() {
            match diff_ids.get(index) {
                Some(d) if d.strip_prefix("sha256:") == Some(layer.id.to_hex().as_str()) => {}
                _ => return Err(ImageError::LayerMismatch { index }),
            }
        }
        if diff_ids.len() != self.layers.len() {
            return Err(ImageError::LayerMismatch {
                index: self.layers.len(),
            });
        }
        Ok(())
    }
}

/// Docker's chain ids of a layer stack given its diff ids (`sha256:<hex>`,
/// base first): the first layer's is its diff id, each next one is the
/// sha256 of `"<parent chain id> <diff id>"`. A layer is present in an
/// engine only with the same layers under it, which is what its chain id
/// names; `docker load` skips a layer whose chain id the engine holds.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => {
                let hash = ContentId::of(format!("{parent} {d}").as_bytes());
                format!("sha256:{}", hash.to_hex())
            }
        };
        out.push(next);
    }
    out
}

impl Bounded for ImageManifest {
    fn check_bounds(&self) -> Result<(), LimitError> {
        check("image.layers", self.layers.len(), limits::MAX_IMAGE_LAYERS)?;
        check_u64(
            "image.config.size",
            self.config.size,
            limits::MAX_IMAGE_CONFIG_BYTES,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn manifest() -> ImageManifest {
        ImageManifest {
            config: ImageBlob {
                id: ContentId::of(b"config"),
                size: 6,
            },
            layers: vec![
                ImageBlob {
                    id: ContentId::of(b"base"),
                    size: 4,
                },
                ImageBlob {
                    id: ContentId::of(b"top"),
                    size: 3,
                },
            ],
        }
    }

    fn diff(b: &[u8]) -> String {
        format!("sha256:{}", ContentId::of(b).to_hex())
    }

    #[test]
    fn the_config_must_hash_to_the_pinned_id() {
        let m = manifest();
        assert_eq!(m.check_pinned(&diff(b"config")), Ok(()));
        let e = m.check_pinned(&diff(b"other")).unwrap_err();
        assert!(e.to_string().contains("but the job pins sha256:"), "{e}");
        assert_eq!(m.total_bytes(), 13);
    }

    #[test]
    fn layers_must_be_the_configs_diff_ids_in_order() {
        let m = manifest();
        assert_eq!(m.check_layers(&[diff(b"base"), diff(b"top")]), Ok(()));
        let swapped = m.check_layers(&[diff(b"top"), diff(b"base")]);
        assert_eq!(swapped, Err(ImageError::LayerMismatch { index: 0 }));
        let short = m.check_layers(&[diff(b"base")]);
        assert_eq!(short, Err(ImageError::LayerMismatch { index: 1 }));
        let long = m.check_layers(&[diff(b"base"), diff(b"top"), diff(b"x")]);
        assert_eq!(long, Err(ImageError::LayerMismatch { index: 2 }));
        let bare = m.check_layers(&[ContentId::of(b"base").to_hex(), diff(b"top")]);
        assert_eq!(bare, Err(ImageError::LayerMismatch { index: 0 }));
    }

    #[test]
    fn chain_ids_are_dockers() {
        // RootFS.Layers of agora-layers-a and the layerdb directories
        // Docker 20.10 made for them (/var/lib/docker/image/*/layerdb).
        let diffs: Vec<String> = [
            "80bc5ae8577d171b66608a46af71c61c0f604639a2fe7c866c4da2d45b706fb8",
            "172c8856c0da7a9f4490c11aa1be9370d50b917a6589c93877bee94ba5f537d6",
            "e3093b44b72343443e650127c35cf7f369146a3cd281cd3ea11392e2a583906b",
        ]
        .iter()
        .map(|h| format!("sha256:{h}"))
        .collect();
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], diffs[0]);
        assert_eq!(
            chains[1],
            "sha256:277b20028e432c2121dd6034965eb37e096aea106a332574fc12ddd830997224"
        );
        assert_eq!(
            chains[2],
            "sha256:6e1606dbac601d5a3a2d53ae79628711e0a795499277cd01314ccdaa3cc7ac15"
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn decoding_refuses_too_many_layers() {
        let mut m = manifest();
        let bytes = codec::encode(&m);
        assert_eq!(codec::decode::<ImageManifest>(&bytes, 1 << 20).unwrap(), m);
        m.layers = vec![m.layers[0]; limits::MAX_IMAGE_LAYERS + 1];
        let bytes = codec::encode(&m);
        assert!(codec::decode::<ImageManifest>(&bytes, 1 << 20).is_err());
    }
}
