//! Calls of `room.lua`: one script holds every operation, loaded once per
//! connection (`SCRIPT LOAD`) and run by its SHA-1, with the arguments every
//! operation shares first (see the top of `room.lua`).

use super::resp;
use sha1::{Digest, Sha1};
use std::sync::OnceLock;

pub const SOURCE: &str = include_str!("room.lua");

/// The script's SHA-1 in hex, as `SCRIPT LOAD` answers it.
pub fn sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| {
        Sha1::digest(SOURCE.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// The arguments every call of this node sends first.
#[derive(Clone, Debug)]
pub struct Caller {
    pub node: String,
    /// `--history-size`.
    pub history_count: String,
    /// `--history-ttl` in ms, 0 for none (also the idle room expiry).
    pub history_ttl: String,
    /// How long a node's registration lives without a heartbeat, in ms.
    pub node_ttl: String,
}

/// Where a call goes: the shard's channel prefix and its server's run id.
#[derive(Clone, Debug, Default)]
pub struct Target<'a> {
    pub channels: &'a str,
    pub run: &'a str,
}

impl Caller {
    /// Appends `EVALSHA sha 0 op <shared> args...` to `out`. `epoch` is a
    /// fresh candidate, used only if the call starts a room's history.
    pub fn call(&self, out: &mut Vec<u8>, target: &Target, epoch: &str, op: &str, args: &[&[u8]]) {
        let mut all: Vec<&[u8]> = Vec::with_capacity(11 + args.len());
        all.extend_from_slice(&[
            b"EVALSHA".as_slice(),
            sha().as_bytes(),
            b"0",
            op.as_bytes(),
            target.channels.as_bytes(),
            self.node.as_bytes(),
            target.run.as_bytes(),
            epoch.as_bytes(),
            self.history_count.as_bytes(),
            self.history_ttl.as_bytes(),
            self.node_ttl.as_bytes(),
        ]);
        all.extend_from_slice(args);
        resp::command(out, &all);
    }
}

/// Fresh epoch candidates: 16 hex digits from a generator seeded with 8
/// random bytes, so epochs differ across nodes, calls and restarts
/// without a system call per call.
#[derive(Debug)]
pub struct Epochs(u64);

impl Epochs {
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed = nanos.to_le_bytes();
        }
        Epochs(u64::from_le_bytes(seed))
    }

    /// splitmix64.
    pub fn fresh(&mut self) -> String {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}", z ^ (z >> 31))
    }
}

impl Default for Epochs {
    fn default() -> Self {
        Self::new()
    }
}

/// The shard of a room or user name among `shards` Redis servers: jump
/// consistent hashing (Lamping and Veach) of the name's FNV-1a hash, so
/// adding a server moves only the names that must move, and every node
/// given the same `--redis` list in the same order agrees.
pub fn shard_of(name: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut key = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let (mut b, mut j) = (-1i64, 0i64);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_spread_stable_and_move_little_when_one_is_added() {
        let names: Vec<String> = (0..3000).map(|i| format!("room{i}")).collect();
        let three: Vec<usize> = names.iter().map(|n| shard_of(n, 3)).collect();
        for s in 0..3 {
            let share = three.iter().filter(|x| **x == s).count();
            assert!((850..=1150).contains(&share), "shard {s}: {share}");
        }
        let four: Vec<usize> = names.iter().map(|n| shard_of(n, 4)).collect();
        let moved = three.iter().zip(&four).filter(|(a, b)| a != b).count();
        assert!(moved < 1000, "{moved} of 3000 moved; about a quarter should");
        assert!(
            three.iter().zip(&four).all(|(a, b)| a == b || *b == 3),
            "moves only to the new one"
        );
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    fn calls_carry_the_shared_arguments_first() {
        let caller = Caller {
            node: "n1".into(),
            history_count: "100".into(),
            history_ttl: "0".into(),
            node_ttl: "10000".into(),
        };
        let mut out = Vec::new();
        let target = Target {
            channels: "rc:0:",
            run: "abc",
        };
        caller.call(&mut out, &target, "e1", "presence", &[b"lobby"]);
        let (v, _) = resp::parse(&out).unwrap().unwrap();
        let args: Vec<&str> = v.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "EVALSHA",
                sha(),
                "0",
                "presence",
                "rc:0:",
                "n1",
                "abc",
                "e1",
                "100",
                "0",
                "10000",
                "lobby"
            ]
        );
        assert_eq!(sha().len(), 40);
        let mut e = Epochs::new();
        assert_ne!(e.fresh(), e.fresh());
    }
}
