#!/usr/bin/env bash
# Builds the native uWebSockets peer (benches/peers/uwebsockets-native) into
# target/peer-uwebsockets-native. The sources come from the libuwebsockets-sys
# crate (pinned in Cargo.lock), fetched by cargo; they are compiled the way
# upstream's build.c and uSockets/Makefile do it: -O3 -march=native -flto, no
# TLS, epoll, zlib linked.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cargo fetch --locked --manifest-path "$here/Cargo.toml" >/dev/null
src=$(cargo metadata --locked --format-version 1 --manifest-path "$here/Cargo.toml" \
  | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="libuwebsockets-sys"))')
uws="$src/uWebSockets"
out="$here/target"
mkdir -p "$out/obj"
cd "$out/obj"
cc -std=c11 -O3 -march=native -flto=auto -DLIBUS_NO_SSL -I"$uws/uSockets/src" \
  -c "$uws"/uSockets/src/*.c "$uws"/uSockets/src/eventing/*.c "$uws"/uSockets/src/crypto/*.c
g++ -std=c++20 -O3 -march=native -flto=auto -DLIBUS_NO_SSL -I"$uws/src" -I"$uws/uSockets/src" \
  "$here/server.cpp" "$out"/obj/*.o -lz -o "$out/peer-uwebsockets-native"
echo "$out/peer-uwebsockets-native"
