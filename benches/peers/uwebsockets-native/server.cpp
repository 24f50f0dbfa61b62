// Native uWebSockets (C++) peer for roomcast's benchmark (benches/compare.sh):
// the same core uWebSockets.js wraps, without the JavaScript callback. It
// serves what benches/peers/uwebsockets-js/server.js serves: echo on every
// path except /pubsub/{topic} (each message back, same opcode); /pubsub/{topic}
// (and /pubsub) relays every message to every subscriber of the topic, the
// sender included (app.publish, not ws->publish, which would skip the sender).
// One thread, one loop.
//
// Usage: peer-uwebsockets-native [port]   (default 9001)
#include "App.h"

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

struct PerSocketData {
    std::string topic;
};

template <class Behavior>
static Behavior settings(Behavior b) {
    // Same bounds as roomcast's defaults and the uWebSockets.js peer: 64 KiB
    // messages, 1 MiB queue per connection, no idle timeout, no dropping of
    // slow receivers, no compression.
    b.compression = uWS::DISABLED;
    b.maxPayloadLength = 64 * 1024;
    b.maxBackpressure = 1024 * 1024;
    b.closeOnBackpressureLimit = false;
    b.idleTimeout = 0;
    return b;
}

int main(int argc, char **argv) {
    // As Node.js and Rust programs do: a peer that closes first must not kill
    // the server with SIGPIPE on the next write.
    std::signal(SIGPIPE, SIG_IGN);
    int port = argc > 1 ? std::atoi(argv[1]) : 9001;
    uWS::App app;
    using Behavior = uWS::App::WebSocketBehavior<PerSocketData>;

    Behavior topics;
    topics.upgrade = [](auto *res, auto *req, auto *context) {
        res->template upgrade<PerSocketData>({std::string(req->getUrl())}, req->getHeader("sec-websocket-key"),
                                             req->getHeader("sec-websocket-protocol"),
                                             req->getHeader("sec-websocket-extensions"), context);
    };
    topics.open = [](auto *ws) { ws->subscribe(ws->getUserData()->topic); };
    topics.message = [&app](auto *ws, std::string_view message, uWS::OpCode op) {
        app.publish(ws->getUserData()->topic, message, op);
    };
    app.ws<PerSocketData>("/pubsub/*", settings(std::move(topics)));

    Behavior one_topic;
    one_topic.open = [](auto *ws) { ws->subscribe("/pubsub"); };
    one_topic.message = [&app](auto *, std::string_view message, uWS::OpCode op) {
        app.publish("/pubsub", message, op);
    };
    app.ws<PerSocketData>("/pubsub", settings(std::move(one_topic)));

    Behavior echo;
    echo.message = [](auto *ws, std::string_view message, uWS::OpCode op) { ws->send(message, op); };
    app.ws<PerSocketData>("/*", settings(std::move(echo)));

    app.listen("127.0.0.1", port, [port](auto *token) {
        if (!token) {
            std::cerr << "uWebSockets: cannot listen on 127.0.0.1:" << port << std::endl;
            std::exit(1);
        }
        std::cout << "native uWebSockets listening on 127.0.0.1:" << port << std::endl;
    });
    app.run();
    return 1;
}
