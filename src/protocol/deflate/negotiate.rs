//! Extension negotiation for permessage-deflate (RFC 7692 section 7.1).
//!
//! The server answers the first acceptable offer ([`negotiate`]); the
//! client offers ([`client_offer`]) and checks the answer
//! ([`client_accept`]). Both yield [`DeflateParams`], from which
//! [`Compression::new`](super::Compression::new) picks the side that applies
//! to its role.

use std::fmt;

use super::header::{self, Extension};

/// The extension token (section 7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// Our permessage-deflate settings, for either role.
///
/// The default meets the idle-memory budget: no context takeover in either
/// direction, so a connection holds no zlib state between messages and a
/// room broadcast is compressed once for all members
/// ([`SharedCompressor`](super::SharedCompressor)). Turn the two `*_no_context_takeover` flags
/// off to trade ~50 KB (inflate) and ~380 KB (deflate) per connection for
/// a 2-3x better ratio on small messages (see `docs/deflate.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Offer (client) or accept (server) the extension at all.
    pub enabled: bool,
    /// Largest window the server compresses with, 8..=15 (7.1.2.1). A
    /// server announces a value below 15; a client requests it.
    pub server_max_window_bits: u8,
    /// Largest window the client compresses with, 8..=15 (7.1.2.2). A
    /// server can only ask for it when the client offered the parameter.
    pub client_max_window_bits: u8,
    /// Server compresses every message with a fresh context (7.1.1.1). A
    /// server always answers with it (it may, even unoffered): the
    /// "shared compressor" mode. A client requests it.
    pub server_no_context_takeover: bool,
    /// Client compresses every message with a fresh context (7.1.1.2). A
    /// server always answers with it; a client offers it and keeps to it.
    pub client_no_context_takeover: bool,
    /// Messages shorter than this go uncompressed: below ~64 bytes of JSON
    /// deflate saves under 10% (measured in `docs/deflate.md`). Above it, a
    /// message that does not shrink also goes uncompressed. 0 compresses
    /// every message, shrinking or not (as uWebSockets does; the Autobahn
    /// runner needs it, see `docs/deflate.md`).
    pub threshold: usize,
    /// zlib level 0..=9; 5 is where zlib-rs's ratio/speed curve bends.
    pub level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            threshold: 64,
            level: 5,
        }
    }
}

/// The negotiated parameters, as they appear in the server's response.
/// `None` window bits mean the parameter was absent (15 applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` response value for these parameters.
    pub fn to_header(&self) -> String {
        let client_bits = self.client_max_window_bits.map(Some);
        write_header(self, client_bits)
    }
}

/// `client_bits`: `Some(None)` writes `client_max_window_bits` without a value.
fn write_header(p: &DeflateParams, client_bits: Option<Option<u8>>) -> String {
    let mut s = String::from(EXTENSION_NAME);
    if p.server_no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if p.client_no_context_takeover {
        s.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = p.server_max_window_bits {
        s.push_str(&format!("; server_max_window_bits={bits}"));
    }
    match client_bits {
        Some(Some(bits)) => s.push_str(&format!("; client_max_window_bits={bits}")),
        Some(None) => s.push_str("; client_max_window_bits"),
        None => {}
    }
    s
}

/// Why a server's response cannot be accepted (the client must fail the
/// connection, RFC 6455 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// Not exactly one well-formed extension element.
    Malformed,
    /// An extension other than permessage-deflate.
    UnknownExtension,
    /// A parameter RFC 7692 does not define.
    UnknownParameter,
    /// A parameter given twice (7.1).
    DuplicateParameter,
    /// A value where none is allowed, none where one is required, or out of
    /// range (8..=15, or above what we offered).
    InvalidValue(&'static str),
    /// The server did not accept a parameter we offered (7.1.1.1, 7.1.2.1).
    Missing(&'static str),
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::Malformed => f.write_str("malformed extension response"),
            NegotiationError::UnknownExtension => f.write_str("unrequested extension"),
            NegotiationError::UnknownParameter => f.write_str("unknown permessage-deflate parameter"),
            NegotiationError::DuplicateParameter => f.write_str("duplicate permessage-deflate parameter"),
            NegotiationError::InvalidValue(p) => write!(f, "invalid value for {p}"),
            NegotiationError::Missing(p) => write!(f, "server did not accept {p}"),
        }
    }
}

impl std::error::Error for NegotiationError {}

/// The parameters of one offer or response, checked for syntax (7.1).
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in offers, 7.1.2.2).
    client_max_window_bits: Option<Option<u8>>,
}

/// A window-bits value: a decimal 8..=15 without leading zeros (7.1.2).
fn window_bits(v: Option<&str>, name: &'static str) -> Result<u8, NegotiationError> {
    match v {
        Some(v) if !v.starts_with('0') => match v.parse() {
            Ok(n @ 8..=15) => Ok(n),
            _ => Err(NegotiationError::InvalidValue(name)),
        },
        _ => Err(NegotiationError::InvalidValue(name)),
    }
}

fn parse_params(ext: &Extension<'_>) -> Result<Params, NegotiationError> {
    use NegotiationError::{DuplicateParameter, InvalidValue, UnknownParameter};
    let mut p = Params::default();
    let mut seen = [false; 4];
    for (name, value) in &ext.params {
        let value = value.as_deref();
        let names = [
            SERVER_NO_CONTEXT_TAKEOVER,
            CLIENT_NO_CONTEXT_TAKEOVER,
            SERVER_MAX_WINDOW_BITS,
            CLIENT_MAX_WINDOW_BITS,
        ];
        let i = names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .ok_or(UnknownParameter)?;
        if std::mem::replace(&mut seen[i], true) {
            return Err(DuplicateParameter);
        }
        match i {
            // 7.1.1.1, 7.1.1.2: these parameters have no value.
            0 | 1 if value.is_some() => return Err(InvalidValue(names[i])),
            0 => p.server_no_context_takeover = true,
            1 => p.client_no_context_takeover = true,
            2 => p.server_max_window_bits = Some(window_bits(value, names[i])?),
            _ => {
                let bits = value.map(|v| window_bits(Some(v), names[i])).transpose()?;
                p.client_max_window_bits = Some(bits);
            }
        }
    }
    Ok(p)
}

/// Server side: picks the first acceptable permessage-deflate offer among
/// the raw `Sec-WebSocket-Extensions` header values and returns the
/// parameters with the response value. Offers with unknown or duplicated
/// parameters or invalid values are declined (section 7, 7.1); `None`
/// means the handshake goes on without compression.
pub fn negotiate(offers: &[String], config: &DeflateConfig) -> Option<(DeflateParams, String)> {
    if !config.enabled {
        return None;
    }
    let params = offers
        .iter()
        .flat_map(|value| header::parse(value))
        .filter_map(Result::ok)
        .filter(|ext| ext.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|ext| parse_params(&ext).ok())
        .map(|offer| accept(&offer, config))?;
    Some((params, params.to_header()))
}

/// The response to a well-formed offer. Every such offer can be accepted:
/// even `server_max_window_bits=8`, honoured with zlib's window 9 (see
/// `codec::zlib_window`).
fn accept(offer: &Params, config: &DeflateConfig) -> DeflateParams {
    let server_max = config.server_max_window_bits.clamp(8, 15);
    let client_max = config.client_max_window_bits.clamp(8, 15);
    DeflateParams {
        // 7.1.1.1: accepted by echoing it; may be added unoffered.
        server_no_context_takeover: offer.server_no_context_takeover || config.server_no_context_takeover,
        // 7.1.1.2: echoing an offered one spares us the inflate context.
        client_no_context_takeover: offer.client_no_context_takeover || config.client_no_context_takeover,
        // 7.1.2.1: the same or a smaller value; may be added unoffered.
        server_max_window_bits: match offer.server_max_window_bits {
            Some(offered) => Some(offered.min(server_max)),
            None => (server_max < 15).then_some(server_max),
        },
        // 7.1.2.2: only if offered; equal to or smaller than its value.
        client_max_window_bits: match offer.client_max_window_bits {
            Some(Some(offered)) => Some(offered.min(client_max)),
            Some(None) => (client_max < 15).then_some(client_max),
            None => None,
        },
    }
}

/// Client side: the `Sec-WebSocket-Extensions` request value. It always
/// offers `client_max_window_bits`, since we can compress with any window
/// the server picks (7.1.2.2).
pub fn client_offer(config: &DeflateConfig) -> String {
    let server_max = config.server_max_window_bits.clamp(8, 15);
    let client_max = config.client_max_window_bits.clamp(8, 15);
    let p = DeflateParams {
        server_no_context_takeover: config.server_no_context_takeover,
        client_no_context_takeover: config.client_no_context_takeover,
        server_max_window_bits: (server_max < 15).then_some(server_max),
        client_max_window_bits: None,
    };
    write_header(&p, Some((client_max < 15).then_some(client_max)))
}

/// Client side: checks the server's response to [`client_offer`] (7.1):
/// exactly one permessage-deflate element, known parameters at most once,
/// valid values, nothing beyond what we offered.
pub fn client_accept(response: &str, config: &DeflateConfig) -> Result<DeflateParams, NegotiationError> {
    use NegotiationError::{InvalidValue, Malformed, Missing, UnknownExtension};
    let mut elements = header::parse(response).into_iter();
    let ext = match (elements.next(), elements.next()) {
        (Some(Ok(ext)), None) => ext,
        _ => return Err(Malformed),
    };
    if !ext.name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return Err(UnknownExtension);
    }
    let p = parse_params(&ext)?;
    let server_max = config.server_max_window_bits.clamp(8, 15);
    let client_max = config.client_max_window_bits.clamp(8, 15);
    if config.server_no_context_takeover && !p.server_no_context_takeover {
        return Err(Missing(SERVER_NO_CONTEXT_TAKEOVER));
    }
    match p.server_max_window_bits {
        None if server_max < 15 => return Err(Missing(SERVER_MAX_WINDOW_BITS)),
        Some(bits) if bits > server_max => return Err(InvalidValue(SERVER_MAX_WINDOW_BITS)),
        _ => {}
    }
    let client_bits = match p.client_max_window_bits {
        // 7.1.2.2: the response must carry a value, at most ours.
        Some(None) => return Err(InvalidValue(CLIENT_MAX_WINDOW_BITS)),
        Some(Some(bits)) if bits > client_max => return Err(InvalidValue(CLIENT_MAX_WINDOW_BITS)),
        Some(Some(bits)) => bits,
        None => client_max,
    };
    Ok(DeflateParams {
        server_no_context_takeover: p.server_no_context_takeover,
        // We keep to our own offer even when the server does not echo it.
        client_no_context_takeover: p.client_no_context_takeover || config.client_no_context_takeover,
        server_max_window_bits: p.server_max_window_bits,
        client_max_window_bits: (client_bits < 15).then_some(client_bits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server config that adds nothing to what the client offers.
    fn plain() -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        }
    }

    fn server(offers: &[&str], config: &DeflateConfig) -> Option<String> {
        let offers: Vec<String> = offers.iter().map(|s| s.to_string()).collect();
        negotiate(&offers, config).map(|(p, h)| {
            assert_eq!(p.to_header(), h);
            h
        })
    }

    fn one(offer: &str) -> Option<String> {
        server(&[offer], &plain())
    }

    #[test]
    fn accepts_plain_offer() {
        assert_eq!(one("permessage-deflate").as_deref(), Some("permessage-deflate"));
        assert_eq!(one("Permessage-Deflate").as_deref(), Some("permessage-deflate"));
    }

    #[test]
    fn accepts_each_parameter() {
        let cases = [
            (
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover",
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                "permessage-deflate; client_no_context_takeover",
            ),
            (
                "permessage-deflate; server_max_window_bits=10",
                "permessage-deflate; server_max_window_bits=10",
            ),
            (
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=8",
            ),
            ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
            (
                "permessage-deflate; client_max_window_bits=9",
                "permessage-deflate; client_max_window_bits=9",
            ),
            (
                "permessage-deflate; client_max_window_bits=15",
                "permessage-deflate; client_max_window_bits=15",
            ),
        ];
        for (offer, response) in cases {
            assert_eq!(one(offer).as_deref(), Some(response), "{offer}");
        }
    }

    #[test]
    fn accepts_quoted_values_and_whitespace() {
        assert_eq!(
            one("permessage-deflate ;\tclient_max_window_bits=\"10\" ; server_max_window_bits = \"12\" ").as_deref(),
            Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=10")
        );
    }

    #[test]
    fn takes_first_acceptable_offer() {
        // In one header value, after an unacceptable offer.
        assert_eq!(
            one("permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits=10")
                .as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        // Across header values, skipping other extensions and bad syntax.
        let offers = [
            "x-webkit-deflate-frame, permessage-deflate; a=\"",
            "foo; bar",
            "permessage-deflate; server_no_context_takeover",
        ];
        assert_eq!(
            server(&offers, &plain()).as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        // The first acceptable one wins even if a later one is "better".
        assert_eq!(
            one("permessage-deflate; server_max_window_bits=9, permessage-deflate").as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
    }

    #[test]
    fn declines_bad_offers() {
        for offer in [
            "permessage-deflate; foo",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; SERVER_MAX_WINDOW_BITS=11",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=\"\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=\"abc\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"true\"",
            "permessage-deflate;",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(one(offer), None, "{offer}");
        }
        assert_eq!(server(&[], &plain()), None);
    }

    #[test]
    fn disabled_config_declines() {
        let config = DeflateConfig {
            enabled: false,
            ..plain()
        };
        assert_eq!(server(&["permessage-deflate"], &config), None);
    }

    #[test]
    fn config_limits_apply() {
        // Default: no context takeover both ways, added unoffered.
        assert_eq!(
            server(
                &["permessage-deflate; client_max_window_bits"],
                &DeflateConfig::default()
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        let config = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..plain()
        };
        let cases = [
            ("permessage-deflate", "permessage-deflate; server_max_window_bits=10"),
            (
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11",
            ),
            (
                "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
                "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
            ),
        ];
        for (offer, response) in cases {
            assert_eq!(server(&[offer], &config).as_deref(), Some(response), "{offer}");
        }
    }

    #[test]
    fn client_offer_reflects_config() {
        assert_eq!(
            client_offer(&DeflateConfig::default()),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
        );
        let config = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 9,
            ..plain()
        };
        assert_eq!(
            client_offer(&config),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"
        );
        // Our own offer is acceptable to our own server.
        let offer = client_offer(&config);
        let (_, response) = negotiate(&[offer], &plain()).unwrap();
        assert!(client_accept(&response, &config).is_ok());
    }

    #[test]
    fn client_accepts_valid_responses() {
        let config = plain();
        assert_eq!(
            client_accept("permessage-deflate", &config),
            Ok(DeflateParams::default())
        );
        assert_eq!(
            client_accept(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=\"9\"; client_max_window_bits=8",
                &config
            ),
            Ok(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(9),
                client_max_window_bits: Some(8),
            })
        );
        // We asked for 10: the server may answer the same or less.
        let config = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 12,
            ..plain()
        };
        let p = client_accept("permessage-deflate; server_max_window_bits=8", &config).unwrap();
        assert_eq!(p.server_max_window_bits, Some(8));
        assert_eq!(p.client_max_window_bits, Some(12), "we keep to the window we offered");
        // Our client_no_context_takeover holds even when not echoed.
        let config = DeflateConfig {
            client_no_context_takeover: true,
            ..plain()
        };
        assert!(
            client_accept("permessage-deflate", &config)
                .unwrap()
                .client_no_context_takeover
        );
    }

    #[test]
    fn client_rejects_invalid_responses() {
        use NegotiationError::*;
        let config = plain();
        let cases = [
            ("", Malformed),
            ("permessage-deflate, permessage-deflate", Malformed),
            ("permessage-deflate; a=\"", Malformed),
            ("x-webkit-deflate-frame", UnknownExtension),
            ("permessage-deflate; foo", UnknownParameter),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                DuplicateParameter,
            ),
            (
                "permessage-deflate; server_no_context_takeover=1",
                InvalidValue(SERVER_NO_CONTEXT_TAKEOVER),
            ),
            (
                "permessage-deflate; server_max_window_bits=16",
                InvalidValue(SERVER_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; server_max_window_bits",
                InvalidValue(SERVER_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; client_max_window_bits",
                InvalidValue(CLIENT_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; client_max_window_bits=7",
                InvalidValue(CLIENT_MAX_WINDOW_BITS),
            ),
        ];
        for (response, err) in cases {
            assert_eq!(client_accept(response, &config), Err(err), "{response}");
        }
        let config = DeflateConfig {
            server_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 10,
            ..plain()
        };
        let cases = [
            (
                "permessage-deflate; server_max_window_bits=10",
                Missing(SERVER_NO_CONTEXT_TAKEOVER),
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                Missing(SERVER_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
                InvalidValue(SERVER_MAX_WINDOW_BITS),
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11",
                InvalidValue(CLIENT_MAX_WINDOW_BITS),
            ),
        ];
        for (response, err) in cases {
            assert_eq!(client_accept(response, &config), Err(err), "{response}");
        }
    }
}
