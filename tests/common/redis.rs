//! A real `redis-server` for a test: on a free loopback port, without
//! persistence (`--save '' --appendonly no`), in a scratch directory;
//! killed when dropped. `bash .ci/test.sh` installs the Debian package
//! when it is missing.

use roomcast::engine::redis::resp::{self, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::with_args(&[])
    }

    /// With extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn with_args(extra: &[&str]) -> RedisServer {
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!("roomcast-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (bash .ci/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: nothing is saved, as it has no persistence anyway).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it and starts a new one on the same port: every key is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs one command (with the password, if any) and returns its reply.
    pub fn cmd(&self, args: &[&str]) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        if let Some(i) = self.extra.iter().position(|a| a == "--requirepass") {
            resp::command(&mut out, &["AUTH", &self.extra[i + 1]]);
        }
        resp::command(&mut out, args);
        s.write_all(&out).unwrap();
        let mut buf = Vec::new();
        let mut replies = Vec::new();
        let wanted = if out.starts_with(b"*2\r\n$4\r\nAUTH") { 2 } else { 1 };
        while replies.len() < wanted {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            while let Some((v, used)) = resp::parse(&buf).unwrap() {
                buf.drain(..used);
                replies.push(v);
            }
        }
        replies.pop().unwrap()
    }

    /// `INFO commandstats` as (command, calls).
    pub fn command_calls(&self) -> Vec<(String, u64)> {
        let info = self.cmd(&["INFO", "commandstats"]);
        info.as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
