//! The Autobahn TestSuite client flow, against its fuzzingserver (here
//! `kosoku -m fuzzingserver`): ask `/getCaseCount`, then for each case
//! connect to `/runCase?case=N&agent=A` and echo every message back
//! unchanged until the server closes, then `/updateReports?agent=A` so the
//! server writes its report.
//!
//! The run compresses every message on a permessage-deflate connection
//! (threshold 0): kosoku 0.1.0's fuzzingserver hands a message that arrives
//! uncompressed on such a connection to the case as a `str` (compressed
//! ones as `bytes`), and the 12.x/13.x cases hash what they receive, so they
//! would end as ERROR. RFC 7692 allows uncompressed messages there; this is
//! a test-tool quirk, documented in docs/deflate.md.

use super::blocking::Client;
use super::error::ClientError;
use super::url::{WsUrl, encode_query_value};
use super::{ClientConfig, Message};
use crate::protocol::MessageKind;
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
    let mut config = config.clone();
    config.deflate.threshold = 0;
    let config = &config;
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
    loop {
        let sent = match client.read_message() {
            Ok(Message::Text(text)) => client.send(MessageKind::Text, text.as_bytes()),
            Ok(Message::Binary(data)) => client.send(MessageKind::Binary, &data),
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
