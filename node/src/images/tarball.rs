//! The `docker save` tar format, both ways, without holding an image in
//! memory: [`store_saved`] files an exported tar's config and layers into
//! the blob store as they stream past; [`write_loadable`] writes a tar
//! that `docker load` accepts from a manifest's blobs.
//!
//! Only the parts `docker load` reads are kept: `manifest.json`, the
//! config and each layer's tar (Docker 20.10 writes `<hex>.json` and
//! `<dir>/layer.tar`; newer engines `blobs/sha256/<hex>`; both are read).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use agora_protocol::limits::MAX_IMAGE_CONFIG_BYTES;
use agora_protocol::{ContentId, ImageBlob, ImageManifest};
use serde::Deserialize;

use crate::blobs::{BlobError, BlobStore};

/// Largest `manifest.json` read from an export.
const MAX_SAVE_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Why an exported image could not be filed as blobs.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Reading the tar stream failed.
    #[error("reading the exported image: {0}")]
    Read(#[from] io::Error),
    /// The blob store refused a part.
    #[error("storing a part of the image: {0}")]
    Store(#[from] BlobError),
    /// The export is not what `docker save` writes.
    #[error("the exported image is malformed: {0}")]
    Malformed(String),
}

/// One entry of `manifest.json` as `docker save` writes it.
#[derive(Debug, Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What an image config says about its layers.
#[derive(Debug, Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The layer diff ids (`sha256:<hex>`) an image config lists.
pub fn diff_ids(config: &[u8]) -> Result<Vec<String>, String> {
    serde_json::from_slice::<Config>(config)
        .map(|c| c.rootfs.diff_ids)
        .map_err(|e| format!("image config: {e}"))
}

/// Whether an entry of a saved tar may be a config or a layer.
fn is_part(path: &str) -> bool {
    let top = !path.contains('/');
    (top && path.ends_with(".json") && path != "manifest.json" && path != "index.json")
        || path.ends_with("/layer.tar")
        || path.starts_with("blobs/sha256/")
}

/// Reads a `docker save` tar from `r`, storing the config and layers of
/// its (single) image as blobs of at most `max_blob` bytes each, and
/// returns the image's manifest. Layers must be uncompressed tars (a
/// layer's blob id is then its diff id, which is checked later).
pub fn store_saved(
    r: impl Read,
    blobs: &BlobStore,
    max_blob: u64,
) -> Result<ImageManifest, TarError> {
    let mut archive = tar::Archive::new(r);
    let mut parts: HashMap<String, ImageBlob> = HashMap::new();
    let mut manifest_json = None;
    for entry in archive.entries()? {
        let entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        if path == "manifest.json" {
            let mut buf = Vec::new();
            entry
                .take(MAX_SAVE_MANIFEST_BYTES + 1)
                .read_to_end(&mut buf)?;
            if buf.len() as u64 > MAX_SAVE_MANIFEST_BYTES {
                return Err(TarError::Malformed("manifest.json is too large".into()));
            }
            manifest_json = Some(buf);
        } else if is_part(&path) {
            let (id, size) = blobs.put_reader(entry, max_blob)?;
            parts.insert(path, ImageBlob { id, size });
        }
    }
    let json = manifest_json.ok_or_else(|| TarError::Malformed("no manifest.json".into()))?;
    let entries: Vec<SaveEntry> = serde_json::from_slice(&json)
        .map_err(|e| TarError::Malformed(format!("manifest.json: {e}")))?;
    let [entry] = entries.as_slice() else {
        return Err(TarError::Malformed(format!(
            "manifest.json names {} images, not one",
            entries.len()
        )));
    };
    let part = |p: &str| {
        parts
            .get(p)
            .copied()
            .ok_or_else(|| TarError::Malformed(format!("{p} is named but not in the tar")))
    };
    let config = part(&entry.config)?;
    if config.size > MAX_IMAGE_CONFIG_BYTES {
        return Err(TarError::Malformed("the image config is too large".into()));
    }
    let layers = entry
        .layers
        .iter()
        .map(|p| part(p))
        .collect::<Result<_, _>>()?;
    Ok(ImageManifest { config, layers })
}

/// The `manifest.json` of a loadable tar: untagged, so loading never moves
/// a tag the operator's own images carry.
fn load_manifest_json(m: &ImageManifest) -> Vec<u8> {
    let entry = serde_json::json!([{
        "Config": config_path(&m.config.id),
        "RepoTags": null,
        "Layers": m.layers.iter().map(|l| layer_path(&l.id)).collect::<Vec<_>>(),
    }]);
    entry.to_string().into_bytes()
}

fn config_path(id: &ContentId) -> String {
    format!("{}.json", id.to_hex())
}

fn layer_path(id: &ContentId) -> String {
    format!("{}/layer.tar", id.to_hex())
}

/// Writes a tar `docker load` accepts for the image of `m` to `out`,
/// streaming each blob from the store. Layers marked in `in_engine` (by
/// index) are named in `manifest.json` but not written: the engine holds
/// them and `docker load` does not open the file of a layer it holds. A
/// layer named twice is written once.
pub fn write_loadable(
    m: &ImageManifest,
    in_engine: &[bool],
    blobs: &BlobStore,
    out: impl Write,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let file = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data)
    };
    let json = load_manifest_json(m);
    file(
        &mut tar,
        "manifest.json",
        json.len() as u64,
        &mut json.as_slice(),
    )?;
    let needed = m
        .layers
        .iter()
        .enumerate()
        .filter(|(i, _)| !in_engine.get(*i).copied().unwrap_or(false))
        .map(|(_, l)| (layer_path(&l.id), l.id));
    let mut written = std::collections::HashSet::new();
    for (path, id) in std::iter::once((config_path(&m.config.id), m.config.id)).chain(needed) {
        if !written.insert(id) {
            continue;
        }
        let (f, size) = blobs.open_blob(&id).map_err(io::Error::other)?;
        // The store's size, not the manifest's: the tar header must match
        // the bytes that follow (the ids were checked against the blobs).
        file(&mut tar, &path, size, &mut f.take(size))?;
    }
    tar.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let s = BlobStore::open(&dir.path().join("blobs"), &db, 1 << 30).unwrap();
        (dir, s)
    }

    /// A tar as `docker save` (20.10) writes it, with extra files agora
    /// does not keep.
    fn saved(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, p: &str, d: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, d).unwrap();
        };
        let cfg = format!("{}.json", ContentId::of(config).to_hex());
        let mut names = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let dir = format!("dir{i}");
            add(&mut b, &format!("{dir}/VERSION"), b"1.0");
            add(&mut b, &format!("{dir}/json"), b"{}");
            add(&mut b, &format!("{dir}/layer.tar"), l);
            names.push(format!("{dir}/layer.tar"));
        }
        add(&mut b, &cfg, config);
        add(&mut b, "repositories", b"{}");
        let m = serde_json::json!([{"Config": cfg, "RepoTags": ["x:latest"], "Layers": names}]);
        add(&mut b, "manifest.json", m.to_string().as_bytes());
        b.into_inner().unwrap()
    }

    #[test]
    fn a_saved_image_becomes_blobs_and_a_loadable_tar_again() {
        let (_d, s) = store();
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let tar = saved(config, &[b"base layer", b"top layer"]);
        let m = store_saved(tar.as_slice(), &s, 1 << 20).unwrap();
        assert_eq!(m.config.id, ContentId::of(config));
        assert_eq!(m.layers[0].id, ContentId::of(b"base layer"));
        assert_eq!(m.layers[1].size, 9);
        assert_eq!(diff_ids(config).unwrap(), vec!["sha256:aa"]);

        let mut out = Vec::new();
        write_loadable(&m, &[], &s, &mut out).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let mut seen = HashMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            seen.insert(p, d);
        }
        assert_eq!(seen.len(), 4, "{:?}", seen.keys());
        assert_eq!(seen[&config_path(&m.config.id)], config);
        assert_eq!(seen[&layer_path(&m.layers[1].id)], b"top layer");
        let json: serde_json::Value = serde_json::from_slice(&seen["manifest.json"]).unwrap();
        assert_eq!(json[0]["RepoTags"], serde_json::Value::Null);
        assert_eq!(json[0]["Layers"][0], layer_path(&m.layers[0].id).as_str());

        // A layer the engine holds is named but not sent.
        let mut out = Vec::new();
        write_loadable(&m, &[true, false], &s, &mut out).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let paths: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(!paths.contains(&layer_path(&m.layers[0].id)), "{paths:?}");
    }

    #[test]
    fn malformed_exports_are_refused_with_the_reason() {
        let (_d, s) = store();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        b.append_data(&mut h, "x.json", &b"{}"[..]).unwrap();
        let no_manifest = b.into_inner().unwrap();
        let e = store_saved(no_manifest.as_slice(), &s, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("no manifest.json"), "{e}");
        let e = store_saved(&b"not a tar at all"[..], &s, 1 << 20).unwrap_err();
        assert!(
            matches!(e, TarError::Read(_) | TarError::Malformed(_)),
            "{e}"
        );
        assert!(diff_ids(b"{}").is_err());
    }
}
