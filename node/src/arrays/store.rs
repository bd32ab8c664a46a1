//! The sled trees of job arrays: `arrays` (each [`ArrayRecordDb`] by id)
//! and `array_items` (each [`ItemRecordDb`] by array id and index, big
//! endian, so one array's items are one range in index order). Items are
//! read by range, never all at once, so memory does not grow with the
//! number of items.

use agora_protocol::{codec, ContentId};

use super::record::{ArrayRecordDb, ItemRecordDb};
use crate::jobs::store::{decode, JobDb, StoreError};

/// The two trees, flushed with the job store's group commit.
#[derive(Debug, Clone)]
pub struct ArrayDb {
    jobs: JobDb,
    arrays: sled::Tree,
    items: sled::Tree,
}

fn item_key(array: &ContentId, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(array.as_bytes());
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

impl ArrayDb {
    /// Opens (or creates) the trees in `db`.
    pub fn open(db: &sled::Db, jobs: JobDb) -> Result<Self, StoreError> {
        Ok(Self {
            jobs,
            arrays: db.open_tree("arrays")?,
            items: db.open_tree("array_items")?,
        })
    }

    /// Writes a new array with all its items, then waits until they are on
    /// disk. `items` is consumed in batches so it is never all in memory.
    pub async fn create(
        &self,
        array: &ArrayRecordDb,
        items: impl Iterator<Item = ItemRecordDb>,
    ) -> Result<(), StoreError> {
        const BATCH: usize = 4096;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for (index, item) in (0u32..).zip(items) {
            batch.insert(&item_key(&array.id, index)[..], codec::encode(&item));
            n += 1;
            if n == BATCH {
                self.items.apply_batch(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        self.items.apply_batch(batch)?;
        self.arrays
            .insert(array.id.as_bytes(), codec::encode(array))?;
        self.jobs.flush().await
    }

    /// Writes an array record and waits until it is on disk.
    pub async fn put_array(&self, array: &ArrayRecordDb) -> Result<(), StoreError> {
        self.arrays
            .insert(array.id.as_bytes(), codec::encode(array))?;
        self.jobs.flush().await
    }

    /// Writes one item and its array (whose counts moved with it), and
    /// waits until both are on disk.
    pub async fn put_item(
        &self,
        array: &ArrayRecordDb,
        index: u32,
        item: &ItemRecordDb,
    ) -> Result<(), StoreError> {
        self.set_item(&array.id, index, item)?;
        self.put_array(array).await
    }

    /// Writes one item without waiting for the disk: the next
    /// [`ArrayDb::put_array`] makes it durable.
    pub fn set_item(
        &self,
        array: &ContentId,
        index: u32,
        item: &ItemRecordDb,
    ) -> Result<(), StoreError> {
        self.items
            .insert(&item_key(array, index)[..], codec::encode(item))?;
        Ok(())
    }

    /// Reads one array.
    pub fn array(&self, id: &ContentId) -> Result<Option<ArrayRecordDb>, StoreError> {
        self.arrays
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    /// Every array id.
    pub fn array_ids(&self) -> Vec<ContentId> {
        self.arrays
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| <[u8; 32]>::try_from(k.as_ref()).ok())
            .map(ContentId::from_digest)
            .collect()
    }

    /// Every array, skipping (and returning) unreadable ones.
    pub fn arrays(&self) -> (Vec<ArrayRecordDb>, Vec<StoreError>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for r in self.arrays.iter() {
            match r
                .map_err(StoreError::from)
                .and_then(|(k, v)| decode(&k, &v))
            {
                Ok(a) => ok.push(a),
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    /// Reads one item.
    pub fn item(&self, array: &ContentId, index: u32) -> Result<Option<ItemRecordDb>, StoreError> {
        let key = item_key(array, index);
        self.items
            .get(&key[..])?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    /// The items of `array` from index `from` on, in index order, read
    /// lazily.
    pub fn items_from(
        &self,
        array: &ContentId,
        from: u32,
    ) -> impl Iterator<Item = Result<(u32, ItemRecordDb), StoreError>> {
        let start = item_key(array, from);
        let end = {
            let mut e = [0u8; 33];
            e[..32].copy_from_slice(array.as_bytes());
            e[32] = 0xff;
            e
        };
        // Every key of this array is 36 bytes and sorts below `end`.
        self.items.range(start.to_vec()..end.to_vec()).map(|r| {
            let (k, v) = r?;
            let index = k
                .get(32..36)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    key: hex::encode(&k),
                    reason: "array item key is not 36 bytes".into(),
                })?;
            Ok((index, decode(&k, &v)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{ArrayCounts, ArrayState, SubmitExecutor, SubmitJob};
    use crate::arrays::record::ItemInput;

    fn array(id: &[u8], total: u32) -> ArrayRecordDb {
        ArrayRecordDb {
            id: ContentId::of(id),
            template: SubmitJob::new(SubmitExecutor::Wasm { module: "m".into() }),
            reduce: None,
            total,
            parallel: 1,
            state: ArrayState::Running,
            counts: ArrayCounts {
                pending: total,
                ..ArrayCounts::default()
            },
            reduce_job: None,
            submitted_at_ms: 0,
            finished_at_ms: None,
            reason: None,
        }
    }

    #[tokio::test]
    async fn items_read_back_by_range_in_index_order_and_arrays_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = ArrayDb::open(&db, JobDb::open(&db).unwrap()).unwrap();
        let (a, b) = (array(b"a", 5000), array(b"b", 3));
        store
            .create(&a, (0..5000).map(|i| ItemRecordDb::new(ItemInput::Int(i))))
            .await
            .unwrap();
        store
            .create(&b, (0..3).map(|i| ItemRecordDb::new(ItemInput::Int(-i))))
            .await
            .unwrap();
        let got: Vec<u32> = store
            .items_from(&a.id, 4990)
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(got, (4990..5000).collect::<Vec<_>>());
        let b_items: Vec<_> = store.items_from(&b.id, 0).map(|r| r.unwrap()).collect();
        assert_eq!(b_items.len(), 3);
        assert_eq!(b_items[2].1.input, ItemInput::Int(-2));
        assert_eq!(
            store.item(&a.id, 256).unwrap().unwrap().input,
            ItemInput::Int(256)
        );
        assert!(store.item(&a.id, 5000).unwrap().is_none());
        assert_eq!(store.array(&b.id).unwrap().unwrap(), b);
        assert_eq!(store.array_ids().len(), 2);
    }
}
