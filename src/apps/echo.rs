//! Echo: every message comes back as it went out, on every path. Used for
//! conformance runs (Autobahn) and benchmarks. A plain (non-upgrade) GET
//! gets the server's counters as JSON, so benchmarks can read connection
//! counts and live heap bytes.

use crate::net::{App, CloseReason, ConnId, Ctx, Route, Shared};
use crate::protocol::MessageKind;
use crate::protocol::handshake::head::Request;
use crate::protocol::handshake::server::http_response;
use std::net::SocketAddr;

#[derive(Debug, Default)]
pub struct Echo;

impl App for Echo {
    type State = ();

    fn route(&mut self, req: &Request, _peer: SocketAddr, net: &Shared, _draining: bool) -> Route<()> {
        if req.wants_upgrade() {
            return Route::Upgrade(());
        }
        let heap = crate::heap::live_bytes().map_or("null".to_owned(), |b| b.to_string());
        let t = net.totals();
        let workers: Vec<String> = net
            .per_worker()
            .map(|w| {
                format!(
                    "{{\"connections_active\":{},\"connections_total\":{}}}",
                    w.connections_active.get(),
                    w.connections_total.get()
                )
            })
            .collect();
        let body = format!(
            "{{\"connections_active\":{},\"connections_total\":{},\"messages_in\":{},\"messages_out\":{},\"heap_bytes\":{heap},\"workers\":[{}]}}",
            t.connections_active,
            t.connections_total,
            t.messages_in,
            t.messages_out,
            workers.join(",")
        );
        Route::Respond(http_response(200, "", "application/json", body.as_bytes()))
    }

    fn on_open(&mut self, _ctx: &mut Ctx<'_, ()>, _id: ConnId) {}

    fn on_message(&mut self, ctx: &mut Ctx<'_, ()>, id: ConnId, kind: MessageKind, data: &[u8]) {
        ctx.send(id, kind, data);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, ()>, _id: ConnId, _state: (), _reason: CloseReason) {}

    /// An echo has nothing to finish at the end of a turn.
    fn replies_early(&self) -> bool {
        true
    }
}
