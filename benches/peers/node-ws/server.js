// node `ws` peer for roomcast's benchmark (benches/compare.sh).
// Echo on every path except /pubsub/{topic} (each message back, same
// opcode); /pubsub/{topic} (and /pubsub) relays every message to every
// subscriber of the topic, the sender included. One Node.js process.
//
// Usage: node server.js [port]   (default 9001)
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

// ws uses bufferutil for masking when it loads; say whether it did.
let bufferutil = 'no';
try { require('bufferutil'); bufferutil = 'yes'; } catch (_) { /* optional */ }

const port = Number(process.argv[2] || 9001);
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  maxPayload: 64 * 1024,
  clientTracking: false,
});
const topics = new Map();

function pubsub(ws, topic) {
  let subscribers = topics.get(topic);
  if (!subscribers) {
    subscribers = new Set();
    topics.set(topic, subscribers);
  }
  subscribers.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const sub of subscribers) {
      sub.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    subscribers.delete(ws);
    if (subscribers.size === 0) topics.delete(topic);
  });
}

function echo(ws) {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

const server = http.createServer((req, res) => {
  res.writeHead(426, { 'Content-Type': 'text/plain' });
  res.end('WebSocket only\n');
});
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const path = req.url.split('?')[0];
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    if (path === '/pubsub' || path.startsWith('/pubsub/')) {
      pubsub(ws, path);
    } else {
      echo(ws);
    }
  });
});
server.maxConnections = 100000;
server.listen(port, '127.0.0.1', 4096, () => {
  console.log(`node ws ${require('ws/package.json').version} (bufferutil: ${bufferutil}) listening on 127.0.0.1:${port}`);
});
