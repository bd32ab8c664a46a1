//! Network counters as Prometheus metrics. Written by the network task,
//! read by anyone holding the [`NetworkMetrics`] (the control API's
//! `/metrics`, tests).
//!
//! Topic labels only ever take the values of topics this node subscribed
//! to, since gossipsub delivers nothing else, so label cardinality is
//! bounded by configuration, not by peers.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Direction label for gossip received from peers.
pub const DIRECTION_IN: &str = "in";
/// Direction label for gossip this node published.
pub const DIRECTION_OUT: &str = "out";

/// The network's metrics. Cheap to clone: the counters are shared.
#[derive(Debug, Clone)]
pub struct NetworkMetrics {
    /// `agora_gossip_messages_total{topic,direction}`.
    messages: IntCounterVec,
    /// `agora_gossip_rejected_total{topic}`: failed validation, sender
    /// penalised.
    rejected: IntCounterVec,
    /// `agora_gossip_ignored_total{topic}`: dropped without penalty (rate
    /// limited, no validator).
    ignored: IntCounterVec,
    /// `agora_rpc_rate_limited_total`: inbound requests refused for rate.
    rpc_rate_limited: prometheus::IntCounter,
    /// `agora_connected_peers`.
    connected_peers: IntGauge,
    /// `agora_routing_table_peers`.
    routing_table_peers: IntGauge,
    /// `agora_known_nodes`: nodes in the peer book.
    known_nodes: IntGauge,
    /// `agora_online_nodes`: nodes in the peer book that are online.
    online_nodes: IntGauge,
    /// `agora_rpc_request_duration_seconds`: our requests, send to answer.
    rpc_latency: Histogram,
}

impl NetworkMetrics {
    /// Creates the metrics and registers them in `registry` when given.
    /// Fails if they are already registered there (one network per
    /// registry).
    pub fn new(registry: Option<&Registry>) -> Result<Self, prometheus::Error> {
        let m = Self {
            messages: IntCounterVec::new(
                Opts::new(
                    "agora_gossip_messages_total",
                    "Gossip messages by topic and direction (in: received from peers, out: published)",
                ),
                &["topic", "direction"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "agora_gossip_rejected_total",
                    "Gossip messages that failed validation; the sender was penalised",
                ),
                &["topic"],
            )?,
            ignored: IntCounterVec::new(
                Opts::new(
                    "agora_gossip_ignored_total",
                    "Gossip messages dropped without penalty (rate limit, no validator)",
                ),
                &["topic"],
            )?,
            rpc_rate_limited: prometheus::IntCounter::new(
                "agora_rpc_rate_limited_total",
                "Inbound requests refused because the peer exceeded its rate",
            )?,
            connected_peers: IntGauge::new("agora_connected_peers", "Peers with an open connection")?,
            routing_table_peers: IntGauge::new(
                "agora_routing_table_peers",
                "Peers in the Kademlia routing table",
            )?,
            known_nodes: IntGauge::new("agora_known_nodes", "Nodes in the peer book")?,
            online_nodes: IntGauge::new(
                "agora_online_nodes",
                "Nodes in the peer book that advertised within the offline window",
            )?,
            rpc_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "agora_rpc_request_duration_seconds",
                    "Time from sending a request to a peer to its answer",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
        };
        if let Some(r) = registry {
            r.register(Box::new(m.known_nodes.clone()))?;
            r.register(Box::new(m.online_nodes.clone()))?;
            r.register(Box::new(m.rpc_latency.clone()))?;
            r.register(Box::new(m.messages.clone()))?;
            r.register(Box::new(m.rejected.clone()))?;
            r.register(Box::new(m.ignored.clone()))?;
            r.register(Box::new(m.rpc_rate_limited.clone()))?;
            r.register(Box::new(m.connected_peers.clone()))?;
            r.register(Box::new(m.routing_table_peers.clone()))?;
        }
        Ok(m)
    }

    pub(crate) fn gossip_in(&self, topic: &str) {
        self.messages
            .with_label_values(&[topic, DIRECTION_IN])
            .inc();
    }

    pub(crate) fn gossip_out(&self, topic: &str) {
        self.messages
            .with_label_values(&[topic, DIRECTION_OUT])
            .inc();
    }

    pub(crate) fn gossip_rejected(&self, topic: &str) {
        self.rejected.with_label_values(&[topic]).inc();
    }

    pub(crate) fn gossip_ignored(&self, topic: &str) {
        self.ignored.with_label_values(&[topic]).inc();
    }

    pub(crate) fn rpc_rate_limited(&self) {
        self.rpc_rate_limited.inc();
    }

    pub(crate) fn set_connected_peers(&self, n: usize) {
        self.connected_peers
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_routing_table_peers(&self, n: usize) {
        self.routing_table_peers
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_nodes(&self, known: usize, online: usize) {
        self.known_nodes
            .set(i64::try_from(known).unwrap_or(i64::MAX));
        self.online_nodes
            .set(i64::try_from(online).unwrap_or(i64::MAX));
    }

    pub(crate) fn rpc_latency(&self, d: Duration) {
        self.rpc_latency.observe(d.as_secs_f64());
    }

    /// Requests answered so far (count of the latency histogram).
    pub fn rpc_answered(&self) -> u64 {
        self.rpc_latency.get_sample_count()
    }

    /// Gossip messages received on `topic` (before validation).
    pub fn received(&self, topic: &str) -> u64 {
        self.messages
            .with_label_values(&[topic, DIRECTION_IN])
            .get()
    }

    /// Gossip messages this node published on `topic`.
    pub fn published(&self, topic: &str) -> u64 {
        self.messages
            .with_label_values(&[topic, DIRECTION_OUT])
            .get()
    }

    /// Gossip messages on `topic` rejected by validation.
    pub fn rejected(&self, topic: &str) -> u64 {
        self.rejected.with_label_values(&[topic]).get()
    }

    /// Gossip messages on `topic` ignored without penalty.
    pub fn ignored(&self, topic: &str) -> u64 {
        self.ignored.with_label_values(&[topic]).get()
    }

    /// Inbound requests refused for rate.
    pub fn rpc_rate_limited_total(&self) -> u64 {
        self.rpc_rate_limited.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    #[test]
    fn counters_show_up_in_the_registry_text_and_register_once() {
        let registry = Registry::new();
        let m = NetworkMetrics::new(Some(&registry)).unwrap();
        m.gossip_in("agora/adverts/1");
        m.gossip_in("agora/adverts/1");
        m.gossip_out("agora/adverts/1");
        m.gossip_rejected("agora/adverts/1");
        m.set_connected_peers(3);
        m.set_nodes(5, 4);
        m.rpc_latency(Duration::from_millis(3));
        assert_eq!(m.received("agora/adverts/1"), 2);
        assert_eq!(m.published("agora/adverts/1"), 1);
        assert_eq!(m.rejected("agora/adverts/1"), 1);
        assert_eq!(m.rejected("agora/jobs/1"), 0);

        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text
            .contains(r#"agora_gossip_messages_total{direction="in",topic="agora/adverts/1"} 2"#));
        assert!(text.contains(r#"agora_gossip_rejected_total{topic="agora/adverts/1"} 1"#));
        assert!(text.contains("agora_connected_peers 3"));
        assert!(text.contains("agora_known_nodes 5"));
        assert!(text.contains("agora_online_nodes 4"));
        assert!(text.contains("agora_rpc_request_duration_seconds_count 1"));
        assert_eq!(m.rpc_answered(), 1);

        assert!(
            NetworkMetrics::new(Some(&registry)).is_err(),
            "a second network cannot register the same names"
        );
    }
}
