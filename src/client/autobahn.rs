//! The Autobahn TestSuite client flow, against its fuzzingserver (here
//! `kosoku -m fuzzingserver`): ask `/getCaseCount`, then for each case
//! connect to `/runCase?case=N&agent=A` and echo every message back
//! unchanged until the server closes, then `/updateReports?agent=A` so the
//! server writes its report.
//!
//! One workaround: on a permessage-deflate connection (12.x, 13.x) the echo
//! compresses every message, see [`AlwaysDeflate`].

use super::blocking::Client;
use super::error::ClientError;
use super::url::{WsUrl, encode_query_value};
use super::{ClientConfig, Message};
use crate::protocol::deflate::{Compression, DeflateConfig, DeflateParams};
use crate::protocol::{MessageKind, Role};
use std::io;

/// What a run did; the verdicts are in the server's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub cases: u32,
    /// Cases whose connection could not even be opened.
    pub not_connected: u32,
}

/// Runs every case the server offers, in order, one at a time.
pub fn run(base: &WsUrl, agent: &str, config: &ClientConfig) -> Result<Summary, ClientError> {
    let agent = encode_query_value(agent);
    let cases = case_count(base, config)?;
    log::info!("autobahn: {cases} cases");
    let mut summary = Summary {
        cases,
        not_connected: 0,
    };
    for case in 1..=cases {
        let url = endpoint(base, &format!("runCase?case={case}&agent={agent}"));
        match Client::connect_to(&url, config) {
            Ok(mut client) => echo(&mut client, case),
            Err(e) => {
                log::warn!("case {case}: {e}");
                summary.not_connected += 1;
            }
        }
        if case % 50 == 0 {
            log::info!("autobahn: {case}/{cases} cases run");
        }
    }
    let mut client = Client::connect_to(&endpoint(base, &format!("updateReports?agent={agent}")), config)?;
    read_to_close(&mut client);
    Ok(summary)
}

/// `/getCaseCount` answers with the count as a text message, then closes.
fn case_count(base: &WsUrl, config: &ClientConfig) -> Result<u32, ClientError> {
    let mut client = Client::connect_to(&endpoint(base, "getCaseCount"), config)?;
    let count = loop {
        match client.read_message()? {
            Message::Text(text) => break text,
            Message::Binary(_) => {}
            Message::Close(_) => return Err(ClientError::Closed),
        }
    };
    read_to_close(&mut client);
    count.trim().parse().map_err(|_| {
        ClientError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("case count {count:?} is not a number"),
        ))
    })
}

/// Echoes until the server closes. Protocol errors are part of what the
/// cases test: the core has already answered them with the right close.
fn echo(client: &mut Client, case: u32) {
    let mut deflate = client
        .deflate()
        .map(|(params, config)| AlwaysDeflate::new(params, config));
    let mut send = |client: &mut Client, kind: MessageKind, payload: &[u8]| match deflate.as_mut() {
        Some(d) => match d.compress(payload) {
            Some(deflated) => client.send_deflated(kind, &deflated),
            None => client.send(kind, payload),
        },
        None => client.send(kind, payload),
    };
    loop {
        let sent = match client.read_message() {
            Ok(Message::Text(text)) => send(client, MessageKind::Text, text.as_bytes()),
            Ok(Message::Binary(data)) => send(client, MessageKind::Binary, &data),
            Ok(Message::Close(_)) => return,
            Err(e) => {
                log::debug!("case {case}: {e}");
                return;
            }
        };
        if let Err(e) = sent {
            log::debug!("case {case}: {e}");
            return;
        }
    }
}

/// Compresses every outgoing message, even where compressing does not pay.
///
/// kosoku 0.1.0's fuzzingserver hands a message that arrives uncompressed
/// on a permessage-deflate connection to the case as a `str` (its
/// `bridge_message`; compressed ones arrive as `bytes`), and the 12.x/13.x
/// cases hash what they receive: Python raises "Strings must be encoded
/// before hashing" and the case ends as ERROR. RFC 7692 (section 6) allows
/// uncompressed messages on such a connection, and the core sends one
/// whenever deflate does not make a message smaller (short or random data
/// with no context takeover), so the echo compresses on its own here,
/// through the deflate module's own compressor:
/// - with context takeover, one compressor for the connection, which never
///   falls back to an uncompressed message;
/// - without (`client_no_context_takeover`), a new such compressor per
///   message: a fresh LZ77 context each time, as negotiated.
struct AlwaysDeflate {
    /// The negotiated parameters with our context takeover on.
    takeover: DeflateParams,
    config: DeflateConfig,
    /// The connection's compressor, when context takeover was negotiated.
    kept: Option<Compression>,
}

impl AlwaysDeflate {
    fn new(params: DeflateParams, config: DeflateConfig) -> Self {
        let config = DeflateConfig { threshold: 0, ..config };
        let takeover = DeflateParams {
            client_no_context_takeover: false,
            ..params
        };
        let kept = (!params.client_no_context_takeover).then(|| Compression::new(&takeover, Role::Client, &config));
        AlwaysDeflate { takeover, config, kept }
    }

    fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        match &mut self.kept {
            Some(c) => c.compress(payload),
            None => Compression::new(&self.takeover, Role::Client, &self.config).compress(payload),
        }
    }
}

fn read_to_close(client: &mut Client) {
    while let Ok(message) = client.read_message() {
        if let Message::Close(_) = message {
            return;
        }
    }
}

/// `name` under the base URL's path.
fn endpoint(base: &WsUrl, name: &str) -> WsUrl {
    base.with_target(&format!("{}/{name}", base.path.trim_end_matches('/')))
}
