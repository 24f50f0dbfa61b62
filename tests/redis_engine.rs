//! The engine contract (`roomcast::engine::contract`), the one suite the
//! in-process engine passes too, against Redis engine handles: several
//! nodes (each with its own Redis thread and workers) on a real
//! redis-server, and on three of them sharded.

mod common;

use common::redis::RedisServer;
use roomcast::engine::Engine;
use roomcast::engine::contract::{self, Cluster};
use roomcast::engine::memory::Hub;
use roomcast::engine::redis::{RedisConfig, RedisEngine, RedisNode};
use roomcast::runtime::Workers;
use std::sync::Arc;
use std::time::Duration;

/// `nodes` nodes of `per_node` workers; worker `w` of the cluster is
/// worker `w % per_node` of node `w / per_node`. Nothing runs the loops:
/// `settle` drives the handles, the wakers ring polls nobody waits on.
struct RedisCluster {
    _polls: Vec<mio::Poll>,
    engines: Vec<RedisEngine>,
    nodes: Vec<RedisNode>,
}

impl RedisCluster {
    fn new(servers: &[&RedisServer], nodes: usize, per_node: usize) -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let mut polls = Vec::new();
        let mut engines = Vec::new();
        let mut started = Vec::new();
        for _ in 0..nodes {
            let node_polls: Vec<mio::Poll> = (0..per_node).map(|_| mio::Poll::new().unwrap()).collect();
            let wakers = node_polls
                .iter()
                .map(|p| Arc::new(mio::Waker::new(p.registry(), mio::Token(0)).unwrap()))
                .collect();
            let hub = Hub::new(&Workers::new(wakers));
            let urls = servers.iter().map(|s| s.url().parse().unwrap()).collect();
            let node = RedisNode::start(RedisConfig::new(urls), hub).expect("connect");
            engines.extend((0..per_node).map(|w| node.engine(w)));
            started.push(node);
            polls.extend(node_polls);
        }
        RedisCluster {
            _polls: polls,
            engines,
            nodes: started,
        }
    }
}

impl Cluster for RedisCluster {
    fn workers(&self) -> usize {
        self.engines.len()
    }

    fn engine(&mut self, worker: usize) -> &mut dyn Engine {
        &mut self.engines[worker]
    }

    fn busy(&mut self) -> bool {
        self.engines.iter().any(RedisEngine::busy)
    }

    fn quiet(&self) -> Duration {
        Duration::from_millis(15)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.engines.clear();
        for node in self.nodes.drain(..) {
            node.join();
        }
    }
}

#[test]
fn the_contract_holds_on_two_nodes_of_two_workers() {
    let redis = RedisServer::start();
    contract::all(&mut RedisCluster::new(&[&redis], 2, 2));
}

#[test]
fn the_contract_holds_on_three_single_worker_nodes() {
    let redis = RedisServer::start();
    contract::all(&mut RedisCluster::new(&[&redis], 3, 1));
}

#[test]
fn the_contract_holds_with_rooms_sharded_over_three_servers() {
    let servers = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    let refs: Vec<&RedisServer> = servers.iter().collect();
    contract::all(&mut RedisCluster::new(&refs, 2, 2));
    // The rooms the checks used are spread: every server holds some.
    for s in &servers {
        let keys = s.cmd(&["KEYS", "rc:{contract-*}"]);
        let rooms = keys.as_array().map_or(0, |k| k.len());
        assert!(rooms > 0, "server {} holds no room", s.port);
    }
}

#[test]
fn one_worker_alone_passes_too() {
    let redis = RedisServer::start();
    let mut c = RedisCluster::new(&[&redis], 1, 1);
    contract::one_order_per_room(&mut c, "r");
    contract::recovery_on_any_worker(&mut c, "r2");
    contract::replies_in_lane_order(&mut c, "r3");
    contract::direct_across_workers(&mut c, "bob");
    contract::join_position_under_traffic(&mut c, "r4");
}
