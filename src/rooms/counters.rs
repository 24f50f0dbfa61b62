//! The room layer's counters: one set per worker (single-writer atomics,
//! see `net::Counter`), summed for `/stats` and `/metrics`.

use crate::net::Counter;
use crate::net::metrics::{ENQUEUE_NS, FANOUT, Histogram, HistogramTotals};

/// Defines the counters once, live and summed.
macro_rules! room_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One worker's room counters.
        #[derive(Debug)]
        pub struct RoomCounters {
            $($(#[$doc])* pub $name: Counter,)*
            /// From a message being numbered to its being queued for this
            /// worker's members (ns).
            pub enqueue: Histogram,
            /// Members one message reached on this worker.
            pub fanout: Histogram,
        }

        impl Default for RoomCounters {
            fn default() -> Self {
                RoomCounters {
                    $($name: Counter::default(),)*
                    enqueue: Histogram::new(ENQUEUE_NS),
                    fanout: Histogram::new(FANOUT),
                }
            }
        }

        /// Room counters read at one moment, of one or more workers.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct RoomTotals {
            $($(#[$doc])* pub $name: u64,)*
            pub enqueue: HistogramTotals,
            pub fanout: HistogramTotals,
        }

        impl RoomCounters {
            pub fn totals(&self) -> RoomTotals {
                RoomTotals {
                    $($name: self.$name.get(),)*
                    enqueue: self.enqueue.totals(),
                    fanout: self.fanout.totals(),
                }
            }
        }

        impl RoomTotals {
            pub fn add(&mut self, other: &RoomTotals) {
                $(self.$name += other.$name;)*
                self.enqueue.add(&other.enqueue);
                self.fanout.add(&other.fanout);
            }
        }
    };
}

room_counters! {
    /// Messages refused by the per-connection rate limit.
    rate_limited,
    /// Connections closed for exceeding the rate limit while limited (1008).
    rate_limit_closes,
    /// Joins refused at the rooms-per-connection limit.
    too_many_rooms,
    /// Commands refused by the credential's grants (`not_authorized`).
    not_authorized,
    /// Connections closed because their token expired (1008).
    token_expired_closes,
    /// Tokens renewed with `refresh`.
    refreshes,
    /// Commands refused because shared state could not be reached (`unavailable`).
    unavailable,
    /// Room memberships of this worker's connections (a gauge).
    members,
    /// Rooms with members among those this worker owns (a gauge).
    rooms,
    /// Rooms this worker owns that are held in memory: with members, or
    /// waiting for the store (a gauge).
    rooms_loaded,
    /// Commands held back to keep a connection's replies in order.
    deferred,
    /// Messages refused by the embedding program's hooks.
    rejected,
}
