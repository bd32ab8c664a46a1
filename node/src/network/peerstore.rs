//! The peer book on disk (sled tree `peerbook`): each node's latest signed
//! advert and when it was last heard from, saved periodically and at
//! shutdown, restored at start. Restored records show as known, not
//! online, until the node is heard from again; their signatures are
//! checked again on load.

use agora_protocol::codec;
use agora_protocol::limits::MAX_GOSSIP_BYTES;
use agora_protocol::{CapabilityAdvert, PeerId, Signed};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::peerbook::PeerBook;

/// One saved record.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The advert as its node signed it.
    signed: Signed<CapabilityAdvert>,
    /// When this node last heard from it (ms since the Unix epoch).
    last_seen_ms: u64,
}

/// Writes every record of `book` into `tree`, replacing what was there.
pub fn save(book: &PeerBook, tree: &sled::Tree, now_ms: u64) -> Result<usize, sled::Error> {
    let mut batch = sled::Batch::default();
    for k in tree.iter().keys() {
        batch.remove(k?);
    }
    let mut n = 0;
    for view in book.list(now_ms) {
        let saved = Saved {
            signed: view.record.signed.clone(),
            last_seen_ms: view.record.last_seen_ms,
        };
        batch.insert(view.peer.to_bytes(), codec::encode(&saved));
        n += 1;
    }
    tree.apply_batch(batch)?;
    Ok(n)
}

/// Restores the records in `tree` into `book`; unreadable or forged ones
/// are skipped. Returns how many were restored.
pub fn load(book: &mut PeerBook, tree: &sled::Tree) -> usize {
    let mut n = 0;
    for item in tree.iter() {
        let Ok((k, v)) = item else { continue };
        let Ok(peer) = PeerId::from_bytes(&k) else {
            continue;
        };
        let Ok(saved) = codec::decode_unbounded::<Saved>(&v, MAX_GOSSIP_BYTES + 64) else {
            debug!(%peer, "unreadable saved advert");
            continue;
        };
        match saved.signed.verify() {
            Ok(v) if v.signer == peer => {
                if book
                    .restore(peer, v.value, saved.signed, saved.last_seen_ms)
                    .is_ok()
                {
                    n += 1;
                }
            }
            _ => debug!(%peer, "saved advert does not verify"),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agora_protocol::NodeKey;

    use super::*;

    fn advert(key: &NodeKey, seq: u64) -> (CapabilityAdvert, Signed<CapabilityAdvert>) {
        let a = CapabilityAdvert {
            seq,
            timestamp_ms: 1,
            agent_version: "agora/test".into(),
            wasm: Some("wasmtime".into()),
            docker_images: None,
            cpu_cores: 2,
            memory_bytes: 1 << 30,
            max_jobs: 2,
            running_jobs: 0,
            labels: BTreeMap::new(),
            listen_addrs: vec![],
            executors: Vec::new(),
            image_fetch: false,
            shared_images: Vec::new(),
        };
        let s = key.sign(&a);
        (a, s)
    }

    #[test]
    fn the_book_survives_a_save_and_load_and_forgeries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("peerbook").unwrap();
        let mut book = PeerBook::default();
        let (k1, k2) = (NodeKey::generate(), NodeKey::generate());
        let (a, s) = advert(&k1, 3);
        book.record(k1.peer_id(), a, s, 1_000).unwrap();
        let (a, s) = advert(&k2, 5);
        book.record(k2.peer_id(), a, s, 2_000).unwrap();
        assert_eq!(save(&book, &tree, 3_000).unwrap(), 2);
        // A record whose advert another key signed is not restored.
        let (_, forged) = advert(&NodeKey::generate(), 9);
        tree.insert(
            PeerId::random().to_bytes(),
            codec::encode(&Saved {
                signed: forged,
                last_seen_ms: 1,
            }),
        )
        .unwrap();
        let mut restored = PeerBook::default();
        assert_eq!(load(&mut restored, &tree), 2);
        assert_eq!(restored.get(&k1.peer_id()).unwrap().last_seen_ms, 1_000);
        assert_eq!(restored.get(&k2.peer_id()).unwrap().advert.seq, 5);
        // An older advert is still refused after the restore.
        let (a, s) = advert(&k2, 4);
        assert!(restored.record(k2.peer_id(), a, s, 4_000).is_err());
    }
}
