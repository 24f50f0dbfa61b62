//! RESP3, the Redis wire protocol (and the RESP2 subset it contains): an
//! incremental parser for what a server sends and an encoder for commands.
//!
//! Sans-IO: [`parse`] is handed the bytes read so far and either returns
//! the first complete value and how many bytes it took, says it needs more,
//! or refuses the bytes with a [`ProtocolError`]. Nothing a server sends can
//! make it panic, allocate beyond its input's claims by more than the
//! limits below, or recurse without bound (`fuzz/fuzz_targets/resp.rs`).

use std::fmt;

/// One RESP value. Types that carry the same information for a client are
/// folded together: a set is an `Array`, a verbatim string a `Bulk`, a
/// double or big number its text in `Simple`, a blob error an `Error`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Bool(bool),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    /// Out-of-band data (pub/sub messages, subscription confirmations).
    Push(Vec<Value>),
}

impl Value {
    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer, or a string that spells one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            other => other.as_str()?.parse().ok(),
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) | Value::Push(items) => Some(items),
            _ => None,
        }
    }
}

/// Bytes that are not RESP, or claim more than the limits allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RESP protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Nesting deeper than this is refused (our replies nest three levels).
pub const MAX_DEPTH: usize = 32;
/// The largest string accepted, in bytes.
pub const MAX_BULK: usize = 64 * 1024 * 1024;
/// The most elements an aggregate may announce.
pub const MAX_ELEMENTS: usize = 16 * 1024 * 1024;
/// A header line (type byte, length or simple string) longer than this
/// without its CRLF is refused.
pub const MAX_LINE: usize = 64 * 1024;

/// The first complete value in `buf` and the bytes it took; `None` while
/// it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    let mut at = 0;
    match value(buf, &mut at, 0)? {
        Some(v) => Ok(Some((v, at))),
        None => Ok(None),
    }
}

/// The line starting at `*at` (without its CRLF); moves past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*at..];
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            *at += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if window.len() > MAX_LINE => Err(ProtocolError("line too long")),
        None => Ok(None),
    }
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(ProtocolError("bad integer"))
}

/// A length field: `None` for -1 (a RESP2 null), an error beyond `max`.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match number(text)? {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError("negative length")),
        n if n as u64 > max as u64 => Err(ProtocolError("length over the limit")),
        n => Ok(Some(n as usize)),
    }
}

/// `len` bytes and their CRLF at `*at`.
fn blob(buf: &[u8], at: &mut usize, len: usize) -> Result<Option<Vec<u8>>, ProtocolError> {
    let end = *at + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError("string without its CRLF"));
    }
    let bytes = buf[*at..end].to_vec();
    *at = end + 2;
    Ok(Some(bytes))
}

/// `n` values (or pairs of values) at `*at`.
fn items(buf: &[u8], at: &mut usize, n: usize, depth: usize) -> Result<Option<Vec<Value>>, ProtocolError> {
    // Each element takes at least 3 bytes: never reserve more than the
    // input could hold, whatever the header claims.
    let mut out = Vec::with_capacity(n.min((buf.len() - *at) / 3 + 1));
    for _ in 0..n {
        match value(buf, at, depth + 1)? {
            Some(v) => out.push(v),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn value(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Value>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deep"));
    }
    let Some(&kind) = buf.get(*at) else { return Ok(None) };
    *at += 1;
    let Some(head) = line(buf, at)? else { return Ok(None) };
    let text = || String::from_utf8_lossy(head).into_owned();
    let v = match kind {
        b'+' => Value::Simple(head.to_vec()),
        b'-' => Value::Error(text()),
        b':' => Value::Int(number(head)?),
        // A double or a big number: its text.
        b',' | b'(' => Value::Simple(head.to_vec()),
        b'_' if head.is_empty() => Value::Nil,
        b'#' => match head {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => return Err(ProtocolError("bad boolean")),
        },
        b'$' | b'!' | b'=' => {
            let Some(len) = length(head, MAX_BULK)? else {
                return Ok(Some(Value::Nil));
            };
            let Some(bytes) = blob(buf, at, len)? else {
                return Ok(None);
            };
            match kind {
                b'!' => Value::Error(String::from_utf8_lossy(&bytes).into_owned()),
                // Verbatim: "txt:" or "mkd:" then the text.
                b'=' if bytes.len() >= 4 && bytes[3] == b':' => Value::Bulk(bytes[4..].to_vec()),
                b'=' => return Err(ProtocolError("verbatim string without its format")),
                _ => Value::Bulk(bytes),
            }
        }
        b'*' | b'~' | b'>' => {
            let Some(n) = length(head, MAX_ELEMENTS)? else {
                return Ok(Some(Value::Nil));
            };
            let Some(list) = items(buf, at, n, depth)? else {
                return Ok(None);
            };
            if kind == b'>' {
                Value::Push(list)
            } else {
                Value::Array(list)
            }
        }
        b'%' | b'|' => {
            let Some(n) = length(head, MAX_ELEMENTS / 2)? else {
                return Err(ProtocolError("null map"));
            };
            let Some(list) = items(buf, at, n * 2, depth)? else {
                return Ok(None);
            };
            if kind == b'|' {
                // Attributes describe the value that follows: skip them.
                return value(buf, at, depth + 1);
            }
            let mut pairs = Vec::with_capacity(n);
            let mut it = list.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
        _ => return Err(ProtocolError("unknown type byte")),
    };
    Ok(Some(v))
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, arg.as_ref());
    }
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Encodes any value as a server would (for tests and the fuzz target's
/// round trip). Strings that cannot be simple (CR or LF inside) go as bulk.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Simple(s) if !s.contains(&b'\r') && !s.contains(&b'\n') => {
            out.push(b'+');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Value::Simple(s) | Value::Bulk(s) => bulk(out, s),
        Value::Error(e) => {
            header(out, b'!', e.len());
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::Int(n) => {
            out.push(b':');
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::Nil => out.extend_from_slice(b"_\r\n"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Value::Array(items) | Value::Push(items) => {
            header(
                out,
                if matches!(value, Value::Push(_)) { b'>' } else { b'*' },
                items.len(),
            );
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some((v, used)) = parse(buf).unwrap() {
            out.push(v);
            buf = &buf[used..];
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn parses_every_type_a_server_sends() {
        let wire = b"+OK\r\n-ERR no\r\n:-42\r\n$3\r\nabc\r\n$-1\r\n_\r\n#t\r\n,1.5\r\n(123\r\n\
            *2\r\n:1\r\n$0\r\n\r\n*-1\r\n~1\r\n+x\r\n%1\r\n+k\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n\
            =7\r\ntxt:hey\r\n!3\r\nbad\r\n|1\r\n+ttl\r\n:9\r\n:7\r\n";
        assert_eq!(
            all(wire),
            vec![
                Value::Simple(b"OK".to_vec()),
                Value::Error("ERR no".into()),
                Value::Int(-42),
                Value::Bulk(b"abc".to_vec()),
                Value::Nil,
                Value::Nil,
                Value::Bool(true),
                Value::Simple(b"1.5".to_vec()),
                Value::Simple(b"123".to_vec()),
                Value::Array(vec![Value::Int(1), Value::Bulk(vec![])]),
                Value::Nil,
                Value::Array(vec![Value::Simple(b"x".to_vec())]),
                Value::Map(vec![(Value::Simple(b"k".to_vec()), Value::Int(2))]),
                Value::Push(vec![
                    Value::Bulk(b"message".to_vec()),
                    Value::Bulk(b"c".to_vec()),
                    Value::Bulk(b"p".to_vec())
                ]),
                Value::Bulk(b"hey".to_vec()),
                Value::Error("bad".into()),
                Value::Int(7),
            ]
        );
    }

    #[test]
    fn every_prefix_of_a_value_is_incomplete_not_an_error() {
        let wire = b"*3\r\n$5\r\nhello\r\n%1\r\n+k\r\n*1\r\n:1\r\n>1\r\n_\r\n";
        for end in 0..wire.len() {
            assert_eq!(parse(&wire[..end]), Ok(None), "prefix of {end} bytes");
        }
        assert_eq!(parse(wire).unwrap().unwrap().1, wire.len());
    }

    #[test]
    fn refuses_what_is_not_resp_or_over_the_limits() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"$99999999999\r\n",
            b"*99999999999\r\n",
            b"#x\r\n",
            b"=2\r\nab\r\n",
            b"%-1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(parse(deep.as_bytes()), Err(ProtocolError("nested too deep")));
        let long = vec![b'+'; MAX_LINE + 10];
        assert_eq!(parse(&long), Err(ProtocolError("line too long")));
    }

    #[test]
    fn a_huge_announced_array_does_not_reserve_memory_up_front() {
        // Claims 16M elements, carries one: incomplete, and cheap.
        assert_eq!(parse(b"*16000000\r\n:1\r\n"), Ok(None));
    }

    #[test]
    fn commands_and_values_round_trip() {
        let mut out = Vec::new();
        command(&mut out, &["SET", "k", "a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        let v = Value::Map(vec![(
            Value::Bulk(b"users".to_vec()),
            Value::Push(vec![Value::Simple(b"a\nb".to_vec()), Value::Bool(false), Value::Nil]),
        )]);
        let mut wire = Vec::new();
        encode(&v, &mut wire);
        let (back, used) = parse(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        // A simple string with a newline travels as bulk.
        assert_eq!(
            back,
            Value::Map(vec![(
                Value::Bulk(b"users".to_vec()),
                Value::Push(vec![Value::Bulk(b"a\nb".to_vec()), Value::Bool(false), Value::Nil]),
            )])
        );
    }
}
