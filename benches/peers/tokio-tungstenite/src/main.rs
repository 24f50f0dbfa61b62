//! tokio-tungstenite peer for roomcast's benchmark (benches/compare.sh).
//!
//! Echo on every path except `/pubsub/{topic}` (each message back, same
//! opcode); `/pubsub/{topic}` (and `/pubsub`) relays every message to every
//! subscriber of the topic, the sender included. One thread: a
//! current-thread runtime with a `LocalSet`. tungstenite's defaults are kept
//! (notably its eagerly allocated 128 KiB read buffer per connection) except
//! the message limit, set to roomcast's 64 KiB.
//!
//! Usage: `peer-tokio-tungstenite [port]` (default 9001).

use futures_util::{SinkExt, StreamExt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Subscribers per topic: (connection number, that connection's outbox).
type Topics = Rc<RefCell<HashMap<String, Vec<(u64, UnboundedSender<Message>)>>>>;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).map_or(9001, |p| p.parse().expect("port"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("tokio-tungstenite listening on 127.0.0.1:{port}");
        let topics: Topics = Rc::default();
        let mut next_id = 0u64;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            next_id += 1;
            tokio::task::spawn_local(serve(stream, next_id, topics.clone()));
        }
    })
}

async fn serve(stream: TcpStream, id: u64, topics: Topics) {
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    if path != "/pubsub" && !path.starts_with("/pubsub/") {
        // Echo: `forward` feeds the sink and flushes whenever the stream has
        // nothing more ready, so pipelined messages share a write.
        let data = stream.filter_map(|m| async move {
            match m {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(Ok(m)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        });
        let _ = data.forward(sink).await;
        return;
    }
    let (tx, mut rx) = unbounded_channel::<Message>();
    topics.borrow_mut().entry(path.clone()).or_default().push((id, tx));
    // The writer drains the outbox, flushing once it is empty.
    let writer = tokio::task::spawn_local(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if !(message.is_text() || message.is_binary()) {
            continue;
        }
        // Text and Binary hold reference-counted bytes: cloning is cheap.
        if let Some(subscribers) = topics.borrow().get(&path) {
            for (_, outbox) in subscribers {
                let _ = outbox.send(message.clone());
            }
        }
    }
    let mut map = topics.borrow_mut();
    if let Some(subscribers) = map.get_mut(&path) {
        subscribers.retain(|(other, _)| *other != id);
        if subscribers.is_empty() {
            map.remove(&path);
        }
    }
    drop(map);
    writer.abort();
}
