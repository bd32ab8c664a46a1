//! What the node remembers of images, in the sled tree `images`: each
//! image it can serve as blobs (its manifest), whether agora loaded it
//! into the engine, and when it was last used; and, pure, which loaded
//! images to remove when they outgrow their budget.

use agora_protocol::{codec, ContentId};
use serde::{Deserialize, Serialize};

/// Largest stored record accepted when read back.
const MAX_RECORD_BYTES: usize = 4096;

/// One image this node holds as blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Its manifest's blob id.
    pub manifest: ContentId,
    /// Bytes of its config and layers.
    pub size: u64,
    /// Whether agora loaded it into the engine (only such images are ever
    /// removed by agora).
    pub loaded: bool,
    /// Last time a job used it, or it was stored (ms since the epoch).
    pub last_used_ms: u64,
}

/// The sled tree of [`ImageRecord`]s by image id (`sha256:<hex>`).
#[derive(Debug, Clone)]
pub struct ImageDb {
    tree: sled::Tree,
}

impl ImageDb {
    /// Opens (or creates) the tree.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            tree: db.open_tree("images")?,
        })
    }

    /// The record of image `id`, if any (an unreadable one counts as none).
    pub fn get(&self, id: &str) -> Result<Option<ImageRecord>, sled::Error> {
        Ok(self
            .tree
            .get(id.as_bytes())?
            .and_then(|v| codec::decode_unbounded(&v, MAX_RECORD_BYTES).ok()))
    }

    /// Writes the record of image `id` and flushes it.
    pub fn put(&self, id: &str, rec: &ImageRecord) -> Result<(), sled::Error> {
        self.tree.insert(id.as_bytes(), codec::encode(rec))?;
        self.tree.flush()?;
        Ok(())
    }

    /// Forgets image `id`.
    pub fn remove(&self, id: &str) -> Result<(), sled::Error> {
        self.tree.remove(id.as_bytes())?;
        self.tree.flush()?;
        Ok(())
    }

    /// Every record, most recently used first.
    pub fn list(&self) -> Vec<(String, ImageRecord)> {
        let mut all: Vec<(String, ImageRecord)> = self
            .tree
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let id = String::from_utf8(k.to_vec()).ok()?;
                let rec = codec::decode_unbounded(&v, MAX_RECORD_BYTES).ok()?;
                Some((id, rec))
            })
            .collect();
        all.sort_by(|a, b| b.1.last_used_ms.cmp(&a.1.last_used_ms).then(a.0.cmp(&b.0)));
        all
    }
}

/// The images to forget, least recently used first, so that what the
/// node keeps of images (their blobs, and the images it loaded into the
/// engine) fits in `budget` bytes. `keep` (the image a job is about to
/// run, or just stored) is never chosen. Forgetting an image agora loaded
/// also removes it from the engine; one it did not load stays there (only
/// its blobs may go).
pub fn evictions(records: &[(String, ImageRecord)], budget: u64, keep: &str) -> Vec<String> {
    let mut all: Vec<&(String, ImageRecord)> = records.iter().collect();
    let mut total: u64 = all.iter().map(|(_, r)| r.size).fold(0, u64::saturating_add);
    all.sort_by(|a, b| a.1.last_used_ms.cmp(&b.1.last_used_ms).then(a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (id, rec) in all {
        if total <= budget {
            break;
        }
        if id == keep {
            continue;
        }
        total = total.saturating_sub(rec.size);
        out.push(id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(size: u64, loaded: bool, used: u64) -> ImageRecord {
        ImageRecord {
            manifest: ContentId::of(&used.to_le_bytes()),
            size,
            loaded,
            last_used_ms: used,
        }
    }

    #[test]
    fn least_recently_used_images_go_first_until_under_budget() {
        let all = vec![
            ("a".to_string(), rec(40, true, 3)),
            ("b".to_string(), rec(40, true, 1)),
            ("c".to_string(), rec(40, false, 2)),
        ];
        assert_eq!(evictions(&all, 120, "x"), Vec::<String>::new());
        assert_eq!(evictions(&all, 80, "x"), vec!["b"]);
        assert_eq!(evictions(&all, 40, "x"), vec!["b", "c"]);
        // The image about to run stays, even if it is the oldest.
        assert_eq!(evictions(&all, 40, "b"), vec!["c", "a"]);
        assert_eq!(evictions(&all, 0, "x"), vec!["b", "c", "a"]);
    }

    #[test]
    fn the_tree_round_trips_and_lists_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let t = ImageDb::open(&db).unwrap();
        t.put("old", &rec(1, true, 1)).unwrap();
        t.put("new", &rec(2, false, 9)).unwrap();
        assert_eq!(t.get("new").unwrap(), Some(rec(2, false, 9)));
        let ids: Vec<String> = t.list().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec!["new", "old"]);
        t.remove("new").unwrap();
        assert_eq!(t.get("new").unwrap(), None);
    }
}
