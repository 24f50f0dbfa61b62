// uWebSockets.js peer for roomcast's benchmark (benches/compare.sh).
// Echo on every path except /pubsub/{topic} (each message back, same
// opcode); /pubsub/{topic} (and /pubsub) relays every message to every
// subscriber of the topic, the sender included (app.publish, not ws.publish,
// which would skip the sender). Single-threaded, as uWS.js always is.
//
// Usage: node server.js [port]   (default 9001)
'use strict';

// Load the native addon directly: the package silently falls back to a
// pure-JS implementation when the addon does not load, which would make
// this peer measure the wrong thing.
const native = '@trufflesuite/uws-js-unofficial/binaries/uws_' +
  process.platform + '_' + process.arch + '_' + process.versions.modules + '.node';
let uWS;
try {
  uWS = require(native);
} catch (e) {
  console.error(`uWebSockets.js native addon did not load (${native}): ${e.message}`);
  process.exit(1);
}

const port = Number(process.argv[2] || 9001);
const settings = {
  // Same bounds as roomcast's defaults: 64 KiB messages, 1 MiB queue per
  // connection, no idle timeout, and no dropping of slow receivers.
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 1024 * 1024,
  closeOnBackpressureLimit: false,
  idleTimeout: 0,
  compression: uWS.DISABLED,
};

const app = uWS.App();
app.ws('/pubsub/*', {
  ...settings,
  upgrade: (res, req, context) => {
    res.upgrade(
      { topic: req.getUrl() },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => { ws.subscribe(ws.getUserData().topic); },
  message: (ws, message, isBinary) => { app.publish(ws.getUserData().topic, message, isBinary); },
});
app.ws('/pubsub', {
  ...settings,
  open: (ws) => { ws.subscribe('/pubsub'); },
  message: (ws, message, isBinary) => { app.publish('/pubsub', message, isBinary); },
});
app.ws('/*', {
  ...settings,
  message: (ws, message, isBinary) => { ws.send(message, isBinary); },
});
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uWebSockets.js: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.log(`uWebSockets.js ${process.versions.modules} listening on 127.0.0.1:${port}`);
});
