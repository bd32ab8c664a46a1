//! The remote address of each connected peer, kept from network events
//! (the handle only lists PeerIds): the API shows it, and job selection
//! reads the subnet a peer really connects from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use agora_verifier::subnet_of;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::NetworkEvent;

/// Most remote addresses remembered for connected peers; beyond it new
/// peers are listed without an address (and without a subnet).
pub const MAX_PEER_ADDRS: usize = 4096;

/// The remote address of each connected peer.
pub type PeerAddrs = Arc<Mutex<HashMap<PeerId, Multiaddr>>>;

/// The subnet key of `peer`'s connection, if its address is known.
pub fn subnet_of_peer(addrs: &PeerAddrs, peer: &PeerId) -> Option<u64> {
    crate::lock(addrs).get(peer).and_then(observed_subnet)
}

/// The subnet key of a connection's remote address: the IP it came from,
/// which a peer cannot choose the way it chooses what it advertises. None
/// for a relayed connection (the address is the relay's) or one without IP.
fn observed_subnet(addr: &Multiaddr) -> Option<u64> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return None,
            Protocol::Ip4(a) if ip.is_none() => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) if ip.is_none() => ip = Some(IpAddr::V6(a)),
            _ => {}
        }
    }
    ip.map(subnet_of)
}

/// Keeps `addrs` up to date until cancelled. Subscribe `events` before the
/// network task runs, so the first connections are seen.
pub async fn track(
    mut events: Receiver<NetworkEvent>,
    addrs: PeerAddrs,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            ev = events.recv() => ev,
        };
        match ev {
            Ok(NetworkEvent::PeerConnected { peer, addr }) => {
                let mut map = crate::lock(&addrs);
                if map.len() < MAX_PEER_ADDRS || map.contains_key(&peer) {
                    map.insert(peer, addr);
                }
            }
            Ok(NetworkEvent::PeerDisconnected(peer)) => {
                crate::lock(&addrs).remove(&peer);
            }
            Ok(
                NetworkEvent::ListeningOn(_)
                | NetworkEvent::Gossip(_)
                | NetworkEvent::InboundRequest { .. },
            ) => {}
            // Missed events may include disconnects. The API only shows
            // addresses of peers the network lists as connected, selection
            // only looks up peers that just bid, and a stale entry goes at
            // that peer's next connect or disconnect.
            Err(RecvError::Lagged(n)) => debug!(skipped = n, "peer address tracker lagged"),
            Err(RecvError::Closed) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn subnet_comes_from_the_connection_ip_and_not_from_relays() {
        let a = observed_subnet(&addr("/ip4/10.1.2.3/tcp/4001"));
        let b = observed_subnet(&addr("/ip4/10.1.2.200/tcp/4002"));
        let c = observed_subnet(&addr("/ip4/10.1.3.3/tcp/4001"));
        assert!(a.is_some());
        assert_eq!(a, b, "same /24");
        assert_ne!(a, c, "different /24");
        let relayed = "/ip4/10.1.2.3/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
        assert_eq!(observed_subnet(&addr(relayed)), None);
        assert_eq!(observed_subnet(&addr("/memory/7")), None);
        let v6 = observed_subnet(&addr("/ip6/2001:db8:1:2::5/tcp/4001"));
        assert!(v6.is_some() && v6 != a);
    }

    #[tokio::test]
    async fn tracks_connects_and_disconnects() {
        let (tx, rx) = tokio::sync::broadcast::channel(16);
        let addrs = PeerAddrs::default();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(track(rx, addrs.clone(), cancel.clone()));
        let peer = PeerId::random();
        tx.send(NetworkEvent::PeerConnected {
            peer,
            addr: addr("/ip4/192.0.2.7/tcp/1"),
        })
        .expect("send");
        let other = PeerId::random();
        tx.send(NetworkEvent::PeerConnected {
            peer: other,
            addr: addr("/ip4/192.0.2.8/tcp/1"),
        })
        .expect("send");
        tx.send(NetworkEvent::PeerDisconnected(other))
            .expect("send");
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("tracker ends when the channel closes")
            .expect("tracker task");
        assert_eq!(
            subnet_of_peer(&addrs, &peer),
            Some(subnet_of("192.0.2.7".parse().expect("ip")))
        );
        assert_eq!(subnet_of_peer(&addrs, &other), None);
    }
}
