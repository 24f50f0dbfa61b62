//! Who may connect, decided at the handshake: a JWT (from the
//! `Authorization: Bearer` header, the `token` query parameter, or a
//! cookie) or a static API key (`X-API-Key` header). The identity comes
//! from the credential only (`sub`, or the key's name), never from a field
//! the client chooses. README "Security" is the user-facing reference.

pub mod api_keys;
pub mod grants;
pub mod jwt;
pub mod server_keys;

use crate::protocol::handshake::head::Request;
use crate::rooms::names;
pub use api_keys::ApiKeys;
pub use grants::{Grants, Patterns};
pub use jwt::{JwtConfig, JwtVerifier};
pub use server_keys::{ServerKey, ServerKeys};
use std::fmt;

/// Why a credential was refused; static, so it can be counted by reason
/// and logged without echoing anything the client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthError(pub &'static str);

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An authenticated connection's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub grants: Grants,
    /// Unix seconds after which the credential is no longer valid (JWT `exp`).
    pub expires: Option<u64>,
}

/// The configured credentials; `Authenticator::default()` accepts nobody
/// and `enabled()` is false for it (auth off).
#[derive(Debug)]
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    api_keys: Option<ApiKeys>,
    cookie: String,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            jwt: None,
            api_keys: None,
            cookie: DEFAULT_COOKIE.to_owned(),
        }
    }
}

pub const DEFAULT_COOKIE: &str = "roomcast_token";

impl Authenticator {
    pub fn new(jwt: Option<JwtVerifier>, api_keys: Option<ApiKeys>, cookie: &str) -> Self {
        Authenticator {
            jwt,
            api_keys,
            cookie: cookie.to_owned(),
        }
    }

    /// Whether any credential is configured. Off, every client is admitted
    /// with the identity it names and grants to every room.
    pub fn enabled(&self) -> bool {
        self.jwt.is_some() || self.api_keys.is_some()
    }

    /// Seconds of skew allowed on `exp`; 0 without JWTs (API keys do not expire).
    pub fn leeway(&self) -> u64 {
        self.jwt.as_ref().map_or(0, JwtVerifier::leeway)
    }

    /// Authenticates an upgrade request.
    pub fn authenticate(&self, req: &Request) -> Result<Identity, AuthError> {
        if let Some(key) = req.headers.get("x-api-key") {
            let keys = self.api_keys.as_ref().ok_or(AuthError("API keys are not accepted"))?;
            let (user, grants) = keys.lookup(key).ok_or(AuthError("unknown API key"))?;
            return Ok(Identity {
                user: user.clone(),
                grants: grants.clone(),
                expires: None,
            });
        }
        let token = bearer(req)
            .map(str::to_owned)
            .or_else(|| names::query_param(req.query(), "token"))
            .or_else(|| cookie(req, &self.cookie).map(str::to_owned))
            .ok_or(AuthError("missing credentials"))?;
        self.verify_token(&token)
    }

    /// Verifies a JWT (at the handshake, or from a `refresh` command).
    pub fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let jwt = self.jwt.as_ref().ok_or(AuthError("tokens are not accepted"))?;
        let verified = jwt.verify(token)?;
        if !names::valid_user(&verified.sub) {
            return Err(AuthError("token subject is not a valid username"));
        }
        Ok(Identity {
            user: verified.sub,
            grants: verified.grants,
            expires: Some(verified.exp),
        })
    }
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive, RFC 6750).
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers.get_str("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` (RFC 6265 `Cookie` header: `a=1; b=2`).
fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}
