//! fastwebsockets peer for roomcast's benchmark (benches/compare.sh).
//!
//! Echo on every path except `/pubsub/{topic}` (each message back, same
//! opcode); `/pubsub/{topic}` (and `/pubsub`) relays every message to every
//! subscriber of the topic, the sender included. One thread: a
//! current-thread runtime with a `LocalSet`; the upgrade goes through hyper
//! as in fastwebsockets' own examples.
//!
//! Usage: `peer-fastwebsockets [port]` (default 9001).

use fastwebsockets::{FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tokio::io::BufWriter;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// An outgoing frame: opcode and shared payload.
type Out = (OpCode, Bytes);
/// Subscribers per topic: (connection number, that connection's outbox).
type Topics = Rc<RefCell<HashMap<String, Vec<(u64, UnboundedSender<Out>)>>>>;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).map_or(9001, |p| p.parse().expect("port"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("fastwebsockets listening on 127.0.0.1:{port}");
        let topics: Topics = Rc::default();
        let mut next_id = 0u64;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            next_id += 1;
            let (id, topics) = (next_id, topics.clone());
            tokio::task::spawn_local(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = service_fn(move |req| upgrade_request(req, id, topics.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    id: u64,
    topics: Topics,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let path = req.uri().path().to_owned();
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn_local(async move {
        let _ = if path == "/pubsub" || path.starts_with("/pubsub/") {
            pubsub(fut, id, path, topics).await
        } else {
            echo(fut).await
        };
    });
    Ok(response)
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn pubsub(fut: upgrade::UpgradeFut, id: u64, topic: String, topics: Topics) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (rx, mut tx) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        // Buffered: the writer flushes once its outbox is empty.
        (r, BufWriter::new(w))
    });
    let mut rx = FragmentCollectorRead::new(rx);
    let (outbox, mut queue) = unbounded_channel::<Out>();
    topics
        .borrow_mut()
        .entry(topic.clone())
        .or_default()
        .push((id, outbox.clone()));
    let writer = tokio::task::spawn_local(async move {
        while let Some((opcode, payload)) = queue.recv().await {
            let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
            if tx.write_frame(frame).await.is_err() {
                return;
            }
            while let Ok((opcode, payload)) = queue.try_recv() {
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
                if tx.write_frame(frame).await.is_err() {
                    return;
                }
            }
            if tx.flush().await.is_err() {
                return;
            }
        }
    });
    // Pongs and the close reply go through the same outbox, in order.
    let obligated = outbox;
    let mut send_fn = move |frame: Frame<'_>| {
        let _ = obligated.send((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
        std::future::ready(Ok::<(), WebSocketError>(()))
    };
    let result = loop {
        let frame = match rx.read_frame(&mut send_fn).await {
            Ok(frame) => frame,
            Err(e) => break Err(e),
        };
        match frame.opcode {
            OpCode::Close => break Ok(()),
            OpCode::Text | OpCode::Binary => {
                // One copy, then shared by every subscriber.
                let payload = Bytes::copy_from_slice(&frame.payload);
                if let Some(subscribers) = topics.borrow().get(&topic) {
                    for (_, outbox) in subscribers {
                        let _ = outbox.send((frame.opcode, payload.clone()));
                    }
                }
            }
            _ => {}
        }
    };
    let mut map = topics.borrow_mut();
    if let Some(subscribers) = map.get_mut(&topic) {
        subscribers.retain(|(other, _)| *other != id);
        if subscribers.is_empty() {
            map.remove(&topic);
        }
    }
    drop(map);
    writer.abort();
    result
}
