//! The engine contract as executable checks, run against every
//! implementation (the in-process one in this crate's tests, others in
//! `tests/`): one suite, so a behaviour only one implementation has shows
//! up as a failure of the seam.
//!
//! A [`Cluster`] is a set of engine handles, one per worker, wired to each
//! other as the implementation wires them; the checks drive them with
//! requests, let the work settle, and look at what each worker was given.

use super::{Delivery, Engine, EventKind, Key, Member, Name, Refused, Request, Since, Ticket};
use crate::net::{ConnId, Outgoing};
use serde_json::json;
use std::sync::Arc;

/// Engine handles of one cluster, by worker index.
pub trait Cluster {
    fn workers(&self) -> usize;
    fn engine(&mut self, worker: usize) -> &mut dyn Engine;

    /// Whether some handle still waits for an answer to what it sent
    /// (implementations that talk to a server): `settle` waits for it.
    fn busy(&mut self) -> bool {
        false
    }

    /// How long nothing may move before the work counts as settled.
    fn quiet(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2)
    }
}

/// What each worker has been given, in order.
pub struct Log {
    pub per_worker: Vec<Vec<Delivery>>,
}

fn conn(n: u32) -> ConnId {
    ConnId {
        index: n,
        generation: 1,
    }
}

fn member(n: u32, user: &str) -> Member {
    Member {
        conn: conn(n),
        user: user.into(),
        present: true,
        roster: false,
    }
}

fn ticket(n: u32, id: u64) -> Ticket {
    Ticket {
        conn: conn(n),
        id: Some(json!(id)),
    }
}

/// Sends a request from `worker`, recording what comes back at once.
fn send(cluster: &mut dyn Cluster, log: &mut Log, worker: usize, request: Request) {
    let mut out = Vec::new();
    cluster.engine(worker).request(request, &mut out);
    log.per_worker[worker].extend(out);
}

/// Lets every hand-off happen until nothing moves for a while.
pub fn settle(cluster: &mut dyn Cluster, log: &mut Log) {
    let mut quiet_rounds = 0;
    let started = std::time::Instant::now();
    while quiet_rounds < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the cluster never settled"
        );
        let mut moved = false;
        for w in 0..cluster.workers() {
            let engine = cluster.engine(w);
            engine.flush();
            let mut out = Vec::new();
            engine.poll(&mut out);
            moved |= !out.is_empty();
            assert!(
                !out.iter().any(|d| matches!(d, Delivery::Reset { .. })),
                "worker {w} was told to reset a room: {out:?}"
            );
            log.per_worker[w].extend(out);
        }
        if moved || cluster.busy() {
            quiet_rounds = 0;
            if !moved {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        } else {
            quiet_rounds += 1;
            // Implementations with threads of their own need a moment.
            std::thread::sleep(cluster.quiet());
        }
    }
}

fn new_log(cluster: &dyn Cluster) -> Log {
    Log {
        per_worker: (0..cluster.workers()).map(|_| Vec::new()).collect(),
    }
}

/// The `seq`s of the messages worker `w` was given for `room`.
fn message_seqs(log: &Log, w: usize, room: &str) -> Vec<u64> {
    log.per_worker[w]
        .iter()
        .filter_map(|d| match d {
            Delivery::Room(e) if &*e.room == room => match &e.kind {
                EventKind::Message(s) => Some(s.message.seq),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn joined_seq(log: &Log, w: usize, conn_n: u32) -> (u64, Name) {
    log.per_worker[w]
        .iter()
        .find_map(|d| match d {
            Delivery::Joined {
                ticket, result: Ok(j), ..
            } if ticket.conn == conn(conn_n) => Some((j.position.seq, j.position.epoch.clone())),
            _ => None,
        })
        .expect("a joined reply")
}

/// Guarantees 1, 2 and 5: members on every worker, publishers on every
/// worker; each worker gets each message once, all in one order, `seq`
/// without gaps, each publisher in its own order.
pub fn one_order_per_room(cluster: &mut dyn Cluster, room: &str) {
    let n = cluster.workers();
    let mut log = new_log(cluster);
    let room: Name = room.into();
    // Three members per worker.
    for w in 0..n {
        for m in 0..3 {
            let c = (w * 10 + m) as u32;
            let join = Request::Join {
                room: room.clone(),
                member: member(c, &format!("u{c}")),
                since: None,
                again: false,
                ticket: ticket(c, 0),
            };
            send(cluster, &mut log, w, join);
        }
    }
    settle(cluster, &mut log);
    const EACH: u64 = 20;
    for k in 0..EACH {
        for w in 0..n {
            let publish = Request::Publish {
                room: room.clone(),
                user: format!("p{w}").into(),
                content: json!({"w": w, "k": k}),
                ticket: Some(ticket((w * 10) as u32, k)),
            };
            send(cluster, &mut log, w, publish);
        }
        if k % 7 == 0 {
            settle(cluster, &mut log);
        }
    }
    settle(cluster, &mut log);
    let total = EACH * n as u64;
    let reference: Vec<(u64, String)> = log.per_worker[0]
        .iter()
        .filter_map(|d| match d {
            Delivery::Room(e) if e.room == room => match &e.kind {
                EventKind::Message(s) => Some((s.message.seq, s.message.content.to_string())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let seqs: Vec<u64> = reference.iter().map(|r| r.0).collect();
    let start = seqs.first().copied().unwrap_or(1);
    assert_eq!(
        seqs,
        (start..start + total).collect::<Vec<_>>(),
        "one message per delivery, no gap"
    );
    for w in 0..n as u64 {
        let ks: Vec<String> = reference
            .iter()
            .filter(|r| r.1.contains(&format!("\"w\":{w}")))
            .map(|r| r.1.clone())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|k| json!({"w": w, "k": k}).to_string()).collect();
        assert_eq!(ks, expected, "publisher {w} in its own order");
    }
    for w in 1..n {
        assert_eq!(
            message_seqs(&log, w, &room),
            seqs,
            "worker {w} got the same order, each once"
        );
    }
    // Every publish was acknowledged with its seq, on its own worker.
    for w in 0..n {
        let acks = log.per_worker[w]
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Delivery::Done {
                        result: Ok(Some(_)),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(acks as u64, EACH, "worker {w}'s publishes were answered");
    }
}

/// Guarantee 4: a user's connections on several workers count once.
pub fn presence_across_workers(cluster: &mut dyn Cluster, room: &str) {
    let n = cluster.workers();
    assert!(n >= 2, "needs two workers");
    let mut log = new_log(cluster);
    let room: Name = room.into();
    let join = |c: u32, user: &str| Request::Join {
        room: room.clone(),
        member: member(c, user),
        since: None,
        again: false,
        ticket: ticket(c, 1),
    };
    send(cluster, &mut log, 0, join(1, "watcher"));
    settle(cluster, &mut log);
    send(cluster, &mut log, 0, join(2, "alice"));
    send(cluster, &mut log, 1, join(3, "alice"));
    settle(cluster, &mut log);
    let joins_seen = |log: &Log, user: &str, left: bool| {
        log.per_worker[0]
            .iter()
            .filter(|d| match d {
                Delivery::Room(e) => match &e.kind {
                    EventKind::UserJoined(u) if !left => &**u == user,
                    EventKind::UserLeft(u) if left => &**u == user,
                    _ => false,
                },
                _ => false,
            })
            .count()
    };
    assert_eq!(
        joins_seen(&log, "alice", false),
        1,
        "user_joined once for two connections"
    );
    send(
        cluster,
        &mut log,
        1,
        Request::Presence {
            room: room.clone(),
            ticket: ticket(3, 2),
        },
    );
    settle(cluster, &mut log);
    let users = log.per_worker[1].iter().find_map(|d| match d {
        Delivery::Presence { result: Ok(users), .. } => Some(users.clone()),
        _ => None,
    });
    assert_eq!(users, Some(vec![Name::from("alice"), Name::from("watcher")]));
    let leave = |c: u32| Request::Leave {
        room: room.clone(),
        member: member(c, "alice"),
        ticket: None,
    };
    send(cluster, &mut log, 0, leave(2));
    settle(cluster, &mut log);
    assert_eq!(joins_seen(&log, "alice", true), 0, "still present on worker 1");
    send(cluster, &mut log, 1, leave(3));
    settle(cluster, &mut log);
    assert_eq!(joins_seen(&log, "alice", true), 1, "user_left at the last connection");
}

/// Guarantee 6: direct messages reach a user's workers, and only while the
/// user is online.
pub fn direct_across_workers(cluster: &mut dyn Cluster, user: &str) {
    let n = cluster.workers();
    let mut log = new_log(cluster);
    let user: Name = user.into();
    for w in 0..n.min(2) {
        send(cluster, &mut log, w, Request::UserOnline { user: user.clone() });
    }
    settle(cluster, &mut log);
    let event = Arc::new(Outgoing::text(b"{\"type\":\"direct\"}".to_vec()));
    let direct = |id| Request::Direct {
        to: user.clone(),
        event: event.clone(),
        ticket: Some(ticket(9, id)),
    };
    let from = n - 1;
    send(cluster, &mut log, from, direct(1));
    settle(cluster, &mut log);
    for w in 0..n.min(2) {
        let got = log.per_worker[w]
            .iter()
            .filter(|d| matches!(d, Delivery::Direct { to, .. } if *to == user))
            .count();
        assert_eq!(got, 1, "worker {w} got the direct message once");
    }
    for w in 0..n.min(2) {
        send(cluster, &mut log, w, Request::UserOffline { user: user.clone() });
    }
    settle(cluster, &mut log);
    send(cluster, &mut log, from, direct(2));
    settle(cluster, &mut log);
    let results: Vec<_> = log.per_worker[from]
        .iter()
        .filter_map(|d| match d {
            Delivery::Done { ticket, result } if ticket.conn == conn(9) => Some(*result),
            _ => None,
        })
        .collect();
    assert_eq!(results, [Ok(None), Err(Refused::UserOffline)]);
}

/// Guarantee 2 with recovery: a member joining on another worker with
/// `since` and the epoch gets exactly what it missed, proven complete; a
/// wrong epoch proves nothing.
pub fn recovery_on_any_worker(cluster: &mut dyn Cluster, room: &str) {
    let n = cluster.workers();
    let mut log = new_log(cluster);
    let room: Name = room.into();
    let join = |c: u32, since: Option<Since>| Request::Join {
        room: room.clone(),
        member: member(c, "reader"),
        since,
        again: false,
        ticket: ticket(c, 1),
    };
    send(cluster, &mut log, 0, join(1, None));
    settle(cluster, &mut log);
    let (start, epoch) = joined_seq(&log, 0, 1);
    for k in 0..5 {
        let publish = Request::Publish {
            room: room.clone(),
            user: "writer".into(),
            content: json!(k),
            ticket: None,
        };
        send(cluster, &mut log, 0, publish);
    }
    settle(cluster, &mut log);
    let late = n - 1;
    let since = Since {
        seq: start + 2,
        epoch: Some(epoch.to_string()),
    };
    send(cluster, &mut log, late, join(2, Some(since)));
    let wrong = Since {
        seq: start + 2,
        epoch: Some("not-this-epoch".into()),
    };
    send(cluster, &mut log, late, join(3, Some(wrong)));
    settle(cluster, &mut log);
    let answers: Vec<(ConnId, Option<bool>, Vec<u64>)> = log.per_worker[late]
        .iter()
        .filter_map(|d| match d {
            Delivery::Joined {
                ticket, result: Ok(j), ..
            } => Some((
                ticket.conn,
                j.recovered,
                j.missed.iter().map(|s| s.message.seq).collect(),
            )),
            _ => None,
        })
        .collect();
    assert!(
        answers.contains(&(conn(2), Some(true), vec![start + 3, start + 4, start + 5])),
        "{answers:?}"
    );
    assert!(answers.contains(&(conn(3), Some(false), vec![])), "{answers:?}");
}

/// Guarantee 3: requests in one lane are answered in the order sent.
pub fn replies_in_lane_order(cluster: &mut dyn Cluster, room: &str) {
    let n = cluster.workers();
    let mut log = new_log(cluster);
    let room: Name = room.into();
    let from = n - 1;
    let lane = cluster.engine(from).lane(Key::Room(&room));
    assert_eq!(
        lane,
        cluster.engine(0).lane(Key::Room(&room)),
        "every worker agrees on the lane"
    );
    let c = 5;
    send(
        cluster,
        &mut log,
        from,
        Request::Join {
            room: room.clone(),
            member: member(c, "x"),
            since: None,
            again: false,
            ticket: ticket(c, 0),
        },
    );
    for id in 1..=10 {
        let request = if id % 2 == 0 {
            Request::Presence {
                room: room.clone(),
                ticket: ticket(c, id),
            }
        } else {
            Request::Publish {
                room: room.clone(),
                user: "x".into(),
                content: json!(id),
                ticket: Some(ticket(c, id)),
            }
        };
        send(cluster, &mut log, from, request);
    }
    settle(cluster, &mut log);
    let ids: Vec<u64> = log.per_worker[from]
        .iter()
        .filter_map(|d| match d {
            Delivery::Joined { ticket, .. } | Delivery::Presence { ticket, .. } | Delivery::Done { ticket, .. } => {
                ticket.id.as_ref().and_then(|v| v.as_u64())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ids, (0..=10).collect::<Vec<_>>());
}

/// Guarantees 2 and 3 under traffic: members join on every worker while
/// a publisher keeps publishing. After its `Joined`, a joiner's worker is
/// given exactly the messages after the joined position, each once, none
/// at or before it; and the publisher's worker gets each `ack` (a `Done`
/// with its `seq`) after its own copy of that message.
pub fn join_position_under_traffic(cluster: &mut dyn Cluster, room: &str) {
    let n = cluster.workers();
    let mut log = new_log(cluster);
    let room: Name = room.into();
    let join = |c: u32| Request::Join {
        room: room.clone(),
        member: member(c, &format!("j{c}")),
        since: None,
        again: false,
        ticket: ticket(c, 0),
    };
    send(cluster, &mut log, 0, join(1));
    settle(cluster, &mut log);
    const TOTAL: u64 = 40;
    for k in 0..TOTAL {
        let publish = Request::Publish {
            room: room.clone(),
            user: "pub".into(),
            content: json!(k),
            ticket: Some(ticket(2, k)),
        };
        send(cluster, &mut log, 0, publish);
        // Joins land in the middle of the stream, on every worker.
        if k % 10 == 5 {
            let w = (k / 10) as usize % n;
            send(cluster, &mut log, w, join(100 + k as u32));
        }
        if k % 4 == 0 {
            for w in 0..n {
                let engine = cluster.engine(w);
                engine.flush();
                let mut out = Vec::new();
                engine.poll(&mut out);
                log.per_worker[w].extend(out);
            }
        }
    }
    settle(cluster, &mut log);
    let last = message_seqs(&log, 0, &room).last().copied().expect("messages");
    for k in (0..TOTAL).filter(|k| k % 10 == 5) {
        let (w, c) = ((k / 10) as usize % n, 100 + k as u32);
        let at = log.per_worker[w]
            .iter()
            .position(|d| matches!(d, Delivery::Joined { ticket, result: Ok(_), .. } if ticket.conn == conn(c)))
            .expect("a joined reply");
        let (position, _) = joined_seq(&log, w, c);
        let after: Vec<u64> = log.per_worker[w][at..]
            .iter()
            .filter_map(|d| match d {
                Delivery::Room(e) if e.room == room => match &e.kind {
                    EventKind::Message(s) => Some(s.message.seq),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(
            after,
            (position + 1..=last).collect::<Vec<_>>(),
            "worker {w}, joined at {position}: exactly the messages after it"
        );
        // Its own arrival is a room event after its position too (chat
        // members are shown their own `user_joined`).
        let user = format!("j{c}");
        let own = log.per_worker[w].iter().position(
            |d| matches!(d, Delivery::Room(e) if matches!(&e.kind, EventKind::UserJoined(u) if **u == *user)),
        );
        assert!(
            own.is_some_and(|i| i > at),
            "worker {w}: the user_joined of {user} at {own:?}, its joined at {at}"
        );
    }
    // On the publisher's worker: each ack after its own copy.
    let mut seen = std::collections::HashSet::new();
    let mut acks = 0;
    for d in &log.per_worker[0] {
        match d {
            Delivery::Room(e) if e.room == room => {
                if let EventKind::Message(s) = &e.kind {
                    seen.insert(s.message.seq);
                }
            }
            Delivery::Done {
                ticket,
                result: Ok(Some(seq)),
            } if ticket.conn == conn(2) => {
                assert!(seen.contains(seq), "the ack of {seq} came before its message");
                acks += 1;
            }
            _ => {}
        }
    }
    assert_eq!(acks, TOTAL, "every publish was acknowledged");
}

/// Guarantee 8: a `Disconnect` reaches every worker once (the requester's
/// before its `Done`), and a `Rooms` listing counts the rooms with members
/// of every owner, members and present users across workers.
pub fn disconnect_and_rooms_cover_every_worker(cluster: &mut dyn Cluster, prefix: &str) {
    let n = cluster.workers();
    let mut log = new_log(cluster);
    let rooms: Vec<Name> = (0..3).map(|i| format!("{prefix}{i}").into()).collect();
    // Room i gets a member on every worker from i on; room 0 a second
    // connection of the same user and a pub/sub subscriber on worker 0.
    let mut c = 100;
    for (i, room) in rooms.iter().enumerate() {
        for w in (0..n).skip(i.min(n - 1)) {
            c += 1;
            let join = Request::Join {
                room: room.clone(),
                member: member(c, &format!("u{w}")),
                since: None,
                again: false,
                ticket: ticket(c, 0),
            };
            send(cluster, &mut log, w, join);
        }
    }
    for (user, present) in [("u0", true), ("", false)] {
        c += 1;
        let member = Member {
            present,
            ..member(c, user)
        };
        let join = Request::Join {
            room: rooms[0].clone(),
            member,
            since: None,
            again: false,
            ticket: ticket(c, 0),
        };
        send(cluster, &mut log, 0, join);
    }
    settle(cluster, &mut log);
    let from = n - 1;
    send(cluster, &mut log, from, Request::Rooms { ticket: ticket(1, 77) });
    settle(cluster, &mut log);
    let listed: Vec<(String, u64, u64)> = log.per_worker[from]
        .iter()
        .find_map(|d| match d {
            Delivery::Rooms {
                ticket,
                result: Ok(rooms),
            } if ticket.id == Some(json!(77)) => Some(
                rooms
                    .iter()
                    .filter(|r| r.room.starts_with(prefix))
                    .map(|r| (r.room.to_string(), r.members, r.users))
                    .collect(),
            ),
            _ => None,
        })
        .expect("one Rooms reply");
    let expected: Vec<(String, u64, u64)> = rooms
        .iter()
        .enumerate()
        .map(|(i, room)| {
            let on = (n - i.min(n - 1)) as u64;
            let extra = if i == 0 { 2 } else { 0 };
            (room.to_string(), on + extra, on)
        })
        .collect();
    assert_eq!(listed, expected, "sorted, counted across workers");

    send(
        cluster,
        &mut log,
        0,
        Request::Disconnect {
            user: "u1".into(),
            code: 4000,
            ticket: Some(ticket(2, 88)),
        },
    );
    settle(cluster, &mut log);
    for w in 0..n {
        let got = log.per_worker[w]
            .iter()
            .filter(|d| matches!(d, Delivery::Disconnect { user, code: 4000 } if &**user == "u1"))
            .count();
        assert_eq!(got, 1, "worker {w} was told once");
    }
    let order: Vec<&str> = log.per_worker[0]
        .iter()
        .filter_map(|d| match d {
            Delivery::Disconnect { .. } => Some("disconnect"),
            Delivery::Done {
                ticket,
                result: Ok(None),
            } if ticket.id == Some(json!(88)) => Some("done"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["disconnect", "done"]);
}

/// Every check, each on rooms of its own; no check may lead to a reset.
pub fn all(cluster: &mut dyn Cluster) {
    one_order_per_room(cluster, "contract-order");
    presence_across_workers(cluster, "contract-presence");
    direct_across_workers(cluster, "contract-user");
    recovery_on_any_worker(cluster, "contract-recovery");
    replies_in_lane_order(cluster, "contract-lane");
    join_position_under_traffic(cluster, "contract-join-traffic");
    disconnect_and_rooms_cover_every_worker(cluster, "contract-list");
}
