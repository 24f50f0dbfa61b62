//! What a program that embeds the room server decides about its traffic
//! (see `examples/chat_filter.rs`).
//!
//! Hooks run on the worker thread that holds the connection, on the event
//! loop: they must be quick and must not block (no I/O; hand slow work to a
//! thread of your own). A hook may be called more than once for one command
//! (a command held back to keep replies in order is checked again), so its
//! answers should depend on its arguments, not on how often it is asked.
//! Every default allows everything, unchanged.

use serde_json::Value;

/// What becomes of a message a client publishes.
#[derive(Clone, Debug, PartialEq)]
pub enum Publish {
    /// Published as sent.
    Keep,
    /// Published with this content instead.
    Replace(Value),
    /// Not published: a `/ws` client gets the error `rejected` with this
    /// reason; the other dialects (no error envelope) lose the message.
    Reject(String),
}

pub trait Hooks: Send + Sync + 'static {
    /// A connection of `user` opened (`conn` is the `welcome` event's).
    fn on_connect(&self, _user: &str, _conn: u64) {}

    /// That connection closed.
    fn on_disconnect(&self, _user: &str, _conn: u64) {}

    /// Whether `user` may join `room`: `Err(reason)` refuses it with
    /// `not_authorized` and the reason (for `/ws/{room}` and
    /// `/pubsub/{topic}`, whose join is the upgrade itself: HTTP 403). Asked
    /// after the credential's own grants, which it cannot widen.
    fn authorize_join(&self, _user: &str, _room: &str) -> Result<(), String> {
        Ok(())
    }

    /// A message `user` publishes to `room`, before it is numbered.
    fn on_publish(&self, _user: &str, _room: &str, _content: &Value) -> Publish {
        Publish::Keep
    }
}
