//! The `Sec-WebSocket-Extensions` grammar (RFC 6455 section 9.1):
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! A quoted value must be a token once unescaped (9.1). Empty list
//! elements are skipped (RFC 7230 section 7). A malformed element is
//! reported as `Err` and parsing resumes after the next top-level comma, so
//! one bad offer does not hide the offers after it.

use std::borrow::Cow;

/// One extension element: its name and its parameters, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extension<'a> {
    pub name: &'a str,
    pub params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

/// A syntax error in one element of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Splits a header value into its extension elements.
pub(crate) fn parse(value: &str) -> Vec<Result<Extension<'_>, Malformed>> {
    let mut c = Cursor { s: value, i: 0 };
    let mut out = Vec::new();
    loop {
        c.ows();
        match c.peek() {
            None => return out,
            Some(b',') => c.i += 1,
            Some(_) => {
                let element = c.element();
                c.ows();
                match (element, c.peek()) {
                    (Ok(ext), None | Some(b',')) => out.push(Ok(ext)),
                    _ => {
                        c.skip_element();
                        out.push(Err(Malformed));
                    }
                }
            }
        }
    }
}

/// RFC 7230 section 3.2.6 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Result<&'a str, Malformed> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(Malformed);
        }
        Ok(&self.s[start..self.i])
    }

    /// A quoted-string (RFC 7230 section 3.2.6), unescaped.
    fn quoted(&mut self) -> Result<Cow<'a, str>, Malformed> {
        self.i += 1; // opening quote
        let start = self.i;
        let mut owned: Option<String> = None;
        loop {
            match self.peek() {
                None => return Err(Malformed),
                Some(b'"') => break,
                Some(b'\\') => {
                    let s = owned.get_or_insert_with(|| self.s[start..self.i].to_owned());
                    let escaped = self.s[self.i + 1..].chars().next().ok_or(Malformed)?;
                    s.push(escaped);
                    self.i += 1 + escaped.len_utf8();
                }
                Some(_) => {
                    let ch = self.s[self.i..].chars().next().ok_or(Malformed)?;
                    if let Some(s) = &mut owned {
                        s.push(ch);
                    }
                    self.i += ch.len_utf8();
                }
            }
        }
        let value = owned.map_or(Cow::Borrowed(&self.s[start..self.i]), Cow::Owned);
        self.i += 1; // closing quote
        Ok(value)
    }

    fn element(&mut self) -> Result<Extension<'a>, Malformed> {
        let name = self.token()?;
        let mut params = Vec::new();
        loop {
            self.ows();
            if self.peek() != Some(b';') {
                return Ok(Extension { name, params });
            }
            self.i += 1;
            self.ows();
            let key = self.token()?;
            self.ows();
            let mut value = None;
            if self.peek() == Some(b'=') {
                self.i += 1;
                self.ows();
                let v = if self.peek() == Some(b'"') {
                    self.quoted()?
                } else {
                    Cow::Borrowed(self.token()?)
                };
                // Section 9.1: a quoted value must still be a token.
                if v.is_empty() || !v.bytes().all(is_tchar) {
                    return Err(Malformed);
                }
                value = Some(v);
            }
            params.push((key, value));
        }
    }

    /// Moves past the next comma outside a quoted-string (or to the end).
    fn skip_element(&mut self) {
        let mut quoted = false;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'\\' if quoted => self.i = (self.i + 1).min(self.s.len()),
                b'"' => quoted = !quoted,
                b',' if !quoted => return,
                _ => {}
            }
        }
        // A backslash may have stepped into a multi-byte char; `peek` works
        // on bytes, so only the end index needs to stay in bounds.
        self.i = self.i.min(self.s.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned<'a> = (&'a str, Vec<(&'a str, Option<String>)>);

    fn names(v: &str) -> Vec<Result<Owned<'_>, Malformed>> {
        parse(v)
            .into_iter()
            .map(|e| {
                e.map(|e| {
                    let params = e.params.into_iter().map(|(k, v)| (k, v.map(|v| v.into_owned())));
                    (e.name, params.collect())
                })
            })
            .collect()
    }

    #[test]
    fn plain_and_params() {
        assert_eq!(names("permessage-deflate"), vec![Ok(("permessage-deflate", vec![]))]);
        assert_eq!(
            names(" a ; x = 1 ;y;z=\"10\"\t, b"),
            vec![
                Ok((
                    "a",
                    vec![("x", Some("1".into())), ("y", None), ("z", Some("10".into()))]
                )),
                Ok(("b", vec![])),
            ]
        );
    }

    #[test]
    fn quoted_pairs_and_commas() {
        // "1\0" unescapes to the token 10 (RFC 7230 quoted-pair).
        assert_eq!(names(r#"a; w="1\0""#), vec![Ok(("a", vec![("w", Some("10".into()))]))]);
        // A comma inside quotes does not split; the value is not a token.
        assert_eq!(names(r#"a; w="1,2", b"#), vec![Err(Malformed), Ok(("b", vec![]))]);
    }

    #[test]
    fn empty_elements_are_skipped() {
        assert_eq!(names(" , a,, ,b ,"), vec![Ok(("a", vec![])), Ok(("b", vec![]))]);
        assert!(names("").is_empty());
    }

    #[test]
    fn malformed_elements_resync_at_comma() {
        for bad in [
            "a;",
            "a; =1",
            "a; w=",
            "a; w=\"\"",
            "a; w=\"1",
            "a b",
            "a; w=1 2",
            "(a)",
            "a; w=\"x y\"",
        ] {
            let value = format!("{bad}, ok");
            let got = names(&value);
            assert_eq!(got.first(), Some(&Err(Malformed)), "{bad}");
            assert!(
                got.contains(&Ok(("ok", vec![]))) || bad.ends_with("\"1"),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "\"",
            "a;w=\"\\",
            "a;w=\"\\é\"",
            "é",
            "a;é=1",
            ",,,;",
            "a;w=\"é\\",
            "\\,a",
        ] {
            let _ = parse(s);
        }
    }
}
