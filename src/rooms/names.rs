//! Room and user names, and the bits of URL decoding the endpoints need.

/// Room names: 1-128 bytes of `[A-Za-z0-9._:-]`.
pub fn valid_room(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(allowed)
}

/// Usernames: 1-64 bytes of the same set.
pub fn valid_user(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(allowed)
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// Decodes `%XX` escapes (and `+` as space in queries). Invalid escapes are
/// kept literally; the name validation rejects them afterwards.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The decoded value of query parameter `name`, first occurrence.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key, true) == name).then(|| percent_decode(value, true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_room("lobby"));
        assert!(valid_room("team:eng.backend-1_x"));
        assert!(!valid_room(""));
        assert!(!valid_room(&"a".repeat(129)));
        assert!(valid_room(&"a".repeat(128)));
        assert!(!valid_room("with space"));
        assert!(!valid_room("ünïcode"));
        assert!(valid_user("alice"));
        assert!(!valid_user(&"a".repeat(65)));
        assert!(!valid_user("a/b"));
    }

    #[test]
    fn query_decoding() {
        let q = Some("x=1&username=al%69ce&team=a+b&empty");
        assert_eq!(query_param(q, "username").as_deref(), Some("alice"));
        assert_eq!(query_param(q, "team").as_deref(), Some("a b"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "x"), None);
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("a%3Ab", false), "a:b");
    }
}
