//! Echo: every message comes back as it went out, on every path. Used for
//! conformance runs (Autobahn) and benchmarks.

use crate::net::{App, CloseReason, ConnId, Ctx, Route, Stats};
use crate::protocol::MessageKind;
use crate::protocol::handshake::head::Request;
use std::net::SocketAddr;

#[derive(Debug, Default)]
pub struct Echo;

impl App for Echo {
    type State = ();

    fn route(&mut self, _req: &Request, _peer: SocketAddr, _stats: &Stats, _draining: bool) -> Route<()> {
        Route::Upgrade(())
    }

    fn on_open(&mut self, _ctx: &mut Ctx<'_, ()>, _id: ConnId) {}

    fn on_message(&mut self, ctx: &mut Ctx<'_, ()>, id: ConnId, kind: MessageKind, data: Vec<u8>) {
        ctx.send(id, kind, &data);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, ()>, _id: ConnId, _state: (), _reason: CloseReason) {}
}
