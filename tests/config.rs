//! Configuration from env and a TOML file under the flags, over the real
//! binary (README "Configuration"): precedence seen in `--print-config` and
//! in behaviour, the errors for bad files and env, secret redaction, and
//! the example config checked against the flag list.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_roomcast");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/roomcast.example.toml");

/// The binary with an empty environment, so the developer's `ROOMCAST_*`
/// variables cannot leak into a test.
fn roomcast(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(args).envs(env.iter().copied());
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    roomcast(args, env).stdin(Stdio::null()).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// One line of `--print-config`: the value as TOML text (None: not set) and
/// where it came from.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    value: Option<String>,
    source: String,
}

/// Reads `--print-config` output, which must be valid TOML whose values
/// are the ones listed.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, Line> {
    let out = run(args, env);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    let text = stdout(&out);
    let doc: toml_edit::DocumentMut = text.parse().unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"));
    let mut lines = BTreeMap::new();
    for line in text.lines() {
        if let Some(key) = commented_key(line) {
            assert!(line.ends_with("# not set"), "{line}");
            assert!(doc.get(&key).is_none(), "{key} both set and not");
            lines.insert(
                key,
                Line {
                    value: None,
                    source: "not set".into(),
                },
            );
        } else if !line.starts_with('#') {
            let (key, rest) = line.split_once(" = ").unwrap_or_else(|| panic!("odd line {line:?}"));
            let (_, source) = rest
                .rsplit_once("  # ")
                .unwrap_or_else(|| panic!("no source on {line:?}"));
            let mut value = doc[key].as_value().unwrap().clone();
            value.decor_mut().clear();
            let value = value.to_string();
            let old = lines.insert(
                key.to_string(),
                Line {
                    value: Some(value),
                    source: source.to_string(),
                },
            );
            assert!(old.is_none(), "{key} twice");
        }
    }
    assert_eq!(
        lines.len(),
        doc.len() + text.lines().filter(|l| commented_key(l).is_some()).count()
    );
    lines
}

/// `# key = ...`: a setting left out (example file) or not set (`--print-config`).
fn commented_key(line: &str) -> Option<String> {
    let rest = line.strip_prefix("# ")?;
    let (key, _) = rest.split_once(" =")?;
    let ok = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then(|| key.to_string())
}

fn value<'a>(lines: &'a BTreeMap<String, Line>, key: &str) -> &'a str {
    lines[key].value.as_deref().unwrap_or_else(|| panic!("{key} not set"))
}

/// The long flags `--help` lists, less the ones that are no setting.
fn help_flags(command: &str) -> BTreeSet<String> {
    let help = stdout(&run(&[command, "--help"], &[]));
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '=']).next().unwrap().to_string())
        .filter(|f| !matches!(f.as_str(), "help" | "version" | "config" | "print-config"))
        .collect()
}

#[test]
fn print_config_has_every_flag_and_help_names_the_env_variables() {
    for command in ["serve", "echo"] {
        let flags = help_flags(command);
        assert!(flags.len() > 20, "{flags:?}");
        let keys: BTreeSet<String> = print_config(&[command, "--print-config"], &[]).into_keys().collect();
        assert_eq!(keys, flags, "{command}: --print-config keys vs --help flags");
    }
    assert!(help_flags("serve").contains("jwt-leeway"));
    assert!(!help_flags("echo").contains("jwt-leeway"));
    let help = stdout(&run(&["serve", "--help"], &[]));
    for env in [
        "[env: ROOMCAST_MAX_MESSAGE_SIZE]",
        "[env: ROOMCAST_ALLOW_ORIGIN]",
        "[env: ROOMCAST_CONFIG]",
    ] {
        assert!(help.contains(env), "{env} missing from\n{help}");
    }
}

/// The example covers every setting and no other key, and sets each one
/// that has a default to that default; it loads for both commands.
#[test]
fn example_config_matches_the_flags_and_their_defaults() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    let mut example: Vec<String> = doc.iter().map(|(k, _)| k.to_string()).collect();
    example.extend(text.lines().filter_map(commented_key));
    let unique: BTreeSet<String> = example.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        example.len(),
        "a key appears twice in the example: {example:?}"
    );

    let defaults = print_config(&["serve", "--print-config"], &[]);
    let flags: BTreeSet<String> = defaults.keys().cloned().collect();
    let missing: Vec<_> = flags.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&flags).collect();
    assert!(
        missing.is_empty(),
        "settings missing from roomcast.example.toml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "keys in roomcast.example.toml that are no flag: {extra:?}"
    );

    let loaded = print_config(&["serve", "--config", EXAMPLE, "--print-config"], &[]);
    for (key, default) in &defaults {
        assert_eq!(
            loaded[key].value, default.value,
            "{key}: the example's value is not the default"
        );
        match &default.value {
            Some(_) => assert!(
                loaded[key].source.contains("roomcast.example.toml:"),
                "{key}: {loaded:?}"
            ),
            // Settings without a default are commented out in the example.
            None => assert!(text.contains(&format!("\n# {key} = ")), "{key}"),
        }
    }
    // `echo` reads the same file, room and auth settings included.
    let echo = print_config(&["echo", "--config", EXAMPLE, "--print-config"], &[]);
    assert_eq!(echo["listen"].value, defaults["listen"].value);
    assert!(!echo.contains_key("history-size"));
}

#[test]
fn flag_beats_env_beats_file_beats_default_in_print_config() {
    let dir = Scratch::new("precedence");
    let file = dir.file(
        "roomcast.toml",
        "# layers\n\
         backlog = 10\n\
         max-head-size = 20\n\
         max-send-queue = 30\n\
         allow-origin = [\"https://a.example\", \"https://b.example\"]\n\
         no-deflate = true\n\
         deflate-context-takeover = true\n\
         rate = 7\n\
         history-size = 5\n",
    );
    let env = [
        ("ROOMCAST_CONFIG", file.as_str()),
        ("ROOMCAST_MAX_HEAD_SIZE", "21"),
        ("ROOMCAST_MAX_SEND_QUEUE", "31"),
        ("ROOMCAST_ALLOW_ORIGIN", "https://c.example, https://d.example"),
        ("ROOMCAST_NO_DEFLATE", "false"),
        // Empty counts as unset: the file's value stays.
        ("ROOMCAST_HISTORY_SIZE", ""),
    ];
    let lines = print_config(&["serve", "--max-send-queue", "32", "--print-config"], &env);
    let at = |line: usize| format!("{file}:{line}");
    let expect = [
        ("backlog", "10", at(2)),
        ("max-head-size", "21", "ROOMCAST_MAX_HEAD_SIZE".into()),
        ("max-send-queue", "32", "--max-send-queue".into()),
        ("max-connections", "100000", "default".into()),
        (
            "allow-origin",
            r#"["https://c.example", "https://d.example"]"#,
            "ROOMCAST_ALLOW_ORIGIN".into(),
        ),
        ("no-deflate", "false", "ROOMCAST_NO_DEFLATE".into()),
        ("deflate-context-takeover", "true", at(7)),
        ("rate", "7.0", at(8)),
        ("history-size", "5", at(9)),
    ];
    for (key, v, source) in expect {
        assert_eq!(
            lines[key],
            Line {
                value: Some(v.into()),
                source
            },
            "{key}"
        );
    }
    // A repeated flag replaces the env list, and a switch on the command
    // line beats the env's false.
    let lines = print_config(
        &[
            "serve",
            "--allow-origin",
            "https://e.example",
            "--no-deflate",
            "--print-config",
        ],
        &env,
    );
    assert_eq!(value(&lines, "allow-origin"), r#"["https://e.example"]"#);
    assert_eq!(lines["no-deflate"].source, "--no-deflate");
    assert_eq!(value(&lines, "no-deflate"), "true");
    // --config beats ROOMCAST_CONFIG; without either no file is read.
    let other = dir.file("other.toml", "backlog = 11\n");
    let lines = print_config(&["serve", "--config", &other, "--print-config"], &env);
    assert_eq!(value(&lines, "backlog"), "11");
    assert_eq!(value(&lines, "history-size"), "100");
    let lines = print_config(&["serve", "--print-config"], &[]);
    assert_eq!(lines["backlog"].source, "default");
}

/// Waits until the server accepts connections.
fn wait_for(addr: SocketAddr, server: &mut ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(server.0.try_wait().unwrap().is_none(), "server exited");
        assert!(Instant::now() < deadline, "server did not start on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(args: &[&str], env: &[(&str, &str)], addr: SocketAddr) -> ServerProcess {
    let child = roomcast(args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = ServerProcess(child);
    wait_for(addr, &mut server);
    server
}

fn loopback() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A message of `len` bytes is echoed (true) or closed with 1009 (false).
fn echoed(addr: SocketAddr, len: usize) -> bool {
    let mut s = raw_ws(addr, "/");
    let payload = vec![b'x'; len];
    std::io::Write::write_all(&mut s, &client_frame(2, &payload)).unwrap();
    match read_frame(&mut s) {
        (2, echo) => {
            assert_eq!(echo, payload);
            true
        }
        (8, close) => {
            assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
            false
        }
        other => panic!("unexpected frame {other:?}"),
    }
}

#[test]
fn settings_from_file_and_env_take_effect() {
    let dir = Scratch::new("behaviour");
    let (file_addr, env_addr, flag_addr) = (loopback(), loopback(), loopback());
    let file = dir.file(
        "roomcast.toml",
        &format!("listen = \"{file_addr}\"\nmax-message-size = 1000\nping-interval = 0\n"),
    );
    // The file's listen and size limit.
    {
        let _server = start(&["echo", "--config", &file], &[], file_addr);
        assert!(echoed(file_addr, 1000));
        assert!(!echoed(file_addr, 1001));
    }
    // env over file: the env's address, the file's limit.
    {
        let env_listen = env_addr.to_string();
        let _server = start(
            &["echo", "--config", &file],
            &[("ROOMCAST_LISTEN", &env_listen)],
            env_addr,
        );
        assert!(echoed(env_addr, 1000));
        assert!(!echoed(env_addr, 1001));
    }
    // flag over env over file, for both settings.
    {
        let env_listen = env_addr.to_string();
        let flag_listen = flag_addr.to_string();
        let _server = start(
            &[
                "echo",
                "--config",
                &file,
                "--listen",
                &flag_listen,
                "--max-message-size",
                "3000",
            ],
            &[("ROOMCAST_LISTEN", &env_listen), ("ROOMCAST_MAX_MESSAGE_SIZE", "2000")],
            flag_addr,
        );
        assert!(echoed(flag_addr, 3000));
        assert!(!echoed(flag_addr, 3001));
    }
    // Env alone, and the bare command (which is `serve`) reads it too.
    {
        let addr = loopback();
        let listen = addr.to_string();
        let _server = start(
            &[],
            &[
                ("ROOMCAST_LISTEN", &listen),
                ("ROOMCAST_MAX_MESSAGE_SIZE", "1500"),
                // History in memory: no database file where the test runs.
                ("ROOMCAST_STORE", "memory"),
            ],
            addr,
        );
        let (status, _) = http(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        assert!(answered_by_room(addr, 1500));
        assert!(!answered_by_room(addr, 1501));
    }
}

/// On the room server: a text message of `len` bytes (not JSON) gets an
/// error reply (true) or, beyond the size limit, close 1009 (false).
fn answered_by_room(addr: SocketAddr, len: usize) -> bool {
    let mut s = raw_ws(addr, "/ws?username=alice");
    let payload = vec![b'x'; len];
    std::io::Write::write_all(&mut s, &client_frame(1, &payload)).unwrap();
    loop {
        match read_frame(&mut s) {
            (8, close) => {
                assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
                return false;
            }
            (1, text) if String::from_utf8_lossy(&text).contains("\"error\"") => return true,
            _ => continue,
        }
    }
}

fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(args, env);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    stderr(&out)
}

#[test]
fn unknown_keys_are_errors_naming_key_file_and_line() {
    let dir = Scratch::new("unknown");
    let file = dir.file(
        "bad.toml",
        "backlog = 1\nmax_message_size = 10\nnonsense = true\n\n[serve]\nlisten = \"127.0.0.1:1\"\n",
    );
    let err = fails(&["serve", "--config", &file, "--print-config"], &[]);
    assert!(
        err.contains(&format!(
            "{file}:2: unknown key max_message_size (did you mean max-message-size?"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:3: unknown key nonsense")), "{err}");
    assert!(
        err.contains(&format!("{file}:5: unknown key serve (the file is flat")),
        "{err}"
    );
    // Also when the server would start rather than print.
    let err = fails(&["echo", "--config", &file], &[]);
    assert!(err.contains("max_message_size"), "{err}");
    // A missing file is named.
    let missing = format!("{}/none.toml", dir.0.display());
    let err = fails(&["serve"], &[("ROOMCAST_CONFIG", &missing)]);
    assert!(err.contains(&format!("config file {missing}: ")), "{err}");
}

#[test]
fn bad_values_in_the_file_are_errors_naming_key_file_and_line() {
    let dir = Scratch::new("values");
    let cases = [
        (
            "overflow = \"explode\"\n",
            "overflow: invalid value \"explode\": expected one of: close, drop",
        ),
        ("backlog = \"big\"\n", "backlog: expected an integer, found string"),
        (
            "deflate-level = 300\n",
            "deflate-level: invalid value \"300\": 300 is not in 0..=255",
        ),
        (
            "listen = \"nowhere\"\n",
            "listen: invalid value \"nowhere\": invalid socket address syntax",
        ),
        (
            "allow-origin = \"https://a.example\"\n",
            "allow-origin: expected an array of strings, found string",
        ),
        (
            "no-deflate = \"yes\"\n",
            "no-deflate: expected true or false, found string",
        ),
        ("rate = [1]\n", "rate: expected a number, found array"),
        // A room setting is checked under `echo` too: one file serves both.
        ("history-size = -1\n", "history-size: invalid value \"-1\""),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let file = dir.file(&format!("bad{i}.toml"), &format!("# line 1\n{text}"));
        for command in ["serve", "echo"] {
            let err = fails(&[command, "--config", &file], &[]);
            assert!(err.contains(&format!("{file}:2: {expect}")), "{command} {text}: {err}");
        }
    }
    // A TOML syntax error names the file and line.
    let file = dir.file("syntax.toml", "backlog = 1\nrate = [\n");
    let err = fails(&["serve", "--config", &file], &[]);
    assert!(
        err.contains(&format!("config file {file}: TOML parse error at line 2")),
        "{err}"
    );
}

#[test]
fn bad_env_values_name_the_variable() {
    let cases = [
        ("ROOMCAST_MAX_MESSAGE_SIZE", "abc", "invalid digit found in string"),
        ("ROOMCAST_NO_DEFLATE", "yes", "expected one of: true, false"),
        ("ROOMCAST_LISTEN", "nowhere", "invalid socket address syntax"),
        ("ROOMCAST_OVERFLOW", "explode", "expected one of: close, drop"),
        ("ROOMCAST_JWT_LEEWAY", "-5", "invalid value"),
    ];
    for (name, bad, why) in cases {
        let err = fails(&["serve", "--print-config"], &[(name, bad)]);
        assert!(err.contains(&format!("{name}: invalid value {bad:?} for ")), "{err}");
        assert!(err.contains(why), "{err}");
    }
    // A name that is no setting (a typo) is a warning, not an error.
    let out = run(&["serve", "--print-config"], &[("ROOMCAST_MAX_MESAGE_SIZE", "1")]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("ROOMCAST_MAX_MESAGE_SIZE is not a roomcast setting"));
}

#[test]
fn print_config_round_trips() {
    let dir = Scratch::new("roundtrip");
    let file = dir.file(
        "in.toml",
        "jwt-issuer = \"it's \\\"quoted\\\" \\\\ and ü\"\nping-rate = 2.5\nmax-frame-size = 4096\n\
         allow-origin = [\"https://a.example\"]\n",
    );
    let env = [
        ("ROOMCAST_NO_DEFLATE", "true"),
        ("ROOMCAST_DEFLATE_LEVEL", "9"),
        ("ROOMCAST_ALLOW_ORIGIN", "https://b.example,https://c.example"),
    ];
    let args = ["serve", "--config", &file, "--overflow", "drop", "--print-config"];
    let text = stdout(&run(&args, &env));
    let printed = dir.file("printed.toml", &text);
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    assert_eq!(doc["jwt-issuer"].as_str(), Some("it's \"quoted\" \\ and ü"));
    let first = print_config(&args, &env);
    let again = print_config(&["serve", "--config", &printed, "--print-config"], &[]);
    for (key, line) in &first {
        assert_eq!(again[key].value, line.value, "{key} did not round-trip");
        if line.value.is_some() {
            assert!(again[key].source.starts_with(&printed), "{key}: {:?}", again[key]);
        }
    }
    assert_eq!(value(&again, "overflow"), "\"drop\"");
    assert_eq!(value(&again, "no-deflate"), "true");
    assert_eq!(value(&again, "ping-rate"), "2.5");
    assert_eq!(
        value(&again, "allow-origin"),
        r#"["https://b.example", "https://c.example"]"#
    );
}

fn hs256(secret: &[u8]) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
    let claims = serde_json::json!({"sub": "alice", "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

#[test]
fn secrets_come_from_env_or_files_and_are_never_printed() {
    const SECRET: &str = "an-hs256-secret-from-the-environment-0123456789";
    const IN_FILE: &str = "an-hs256-secret-kept-in-a-file-abcdefghijklmnop";
    let dir = Scratch::new("secrets");
    let secret_file = dir.file("secret", &format!("{IN_FILE}\n"));

    // --print-config shows the file's path, never its contents.
    let out = run(&["serve", "--jwt-secret-file", &secret_file, "--print-config"], &[]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("jwt-secret-file = \"{secret_file}\"  # --jwt-secret-file")),
        "{text}"
    );
    assert!(!text.contains(IN_FILE) && !stderr(&out).contains(IN_FILE), "{text}");
    // The env secret is redacted, and said to be set.
    let out = run(&["serve", "--print-config"], &[("ROOMCAST_JWT_SECRET", SECRET)]);
    let text = stdout(&out);
    assert!(
        text.contains("# HS256 secret: [redacted], from ROOMCAST_JWT_SECRET"),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !stderr(&out).contains(SECRET), "{text}");
    // Both forms at once is an error, wherever the file setting came from.
    let err = fails(
        &["serve", "--jwt-secret-file", &secret_file],
        &[("ROOMCAST_JWT_SECRET", SECRET)],
    );
    assert!(
        err.contains("given twice, by ROOMCAST_JWT_SECRET and by jwt-secret-file (--jwt-secret-file)"),
        "{err}"
    );
    let config = dir.file("roomcast.toml", &format!("jwt-secret-file = \"{secret_file}\"\n"));
    let err = fails(
        &["serve", "--config", &config, "--print-config"],
        &[("ROOMCAST_JWT_SECRET", SECRET)],
    );
    assert!(err.contains(&format!("jwt-secret-file ({config}:1)")), "{err}");
    assert!(!err.contains(SECRET) && !err.contains(IN_FILE), "{err}");

    // The env secret is the key: its tokens pass, others get 401, and it never reaches the log.
    let addr = loopback();
    let listen = addr.to_string();
    let child = roomcast(
        &["serve"],
        &[
            ("ROOMCAST_LISTEN", &listen),
            ("ROOMCAST_JWT_SECRET", SECRET),
            ("RUST_LOG", "trace"),
            ("ROOMCAST_STORE", "memory"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut server = ServerProcess(child);
    wait_for(addr, &mut server);
    let upgrade = |token: &str| {
        http(
            addr,
            &upgrade_request("/ws", &format!("Authorization: Bearer {token}\r\n")),
        )
        .0
    };
    assert_eq!(http(addr, &upgrade_request("/ws?username=alice", "")).0, 401);
    assert_eq!(upgrade(&hs256(IN_FILE.as_bytes())), 401);
    assert_eq!(upgrade(&hs256(SECRET.as_bytes())), 101);
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("auth on"), "{log}");
    assert!(!log.contains(SECRET), "the secret was logged:\n{log}");
}
