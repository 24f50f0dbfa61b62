//! JSON Web Token verification (RFC 7519) with configured keys.
//!
//! The key is chosen by the token's `alg` among the algorithms configured,
//! and each key is only ever used with its own algorithm, so a token cannot
//! pick its verification (no `none`, no RS256 public key used as an HS256
//! secret). Signature checking and claim decoding are `jsonwebtoken`'s.

use super::AuthError;
use super::grants::{Grants, Patterns};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::fmt;

/// Verification keys and the claims every token must satisfy.
#[derive(Default)]
pub struct JwtConfig {
    pub hs256_secret: Option<Vec<u8>>,
    /// PEM: an RSA public key (SPKI or PKCS#1) or a certificate's key.
    pub rs256_public_key_pem: Option<Vec<u8>>,
    /// PEM: a P-256 public key.
    pub es256_public_key_pem: Option<Vec<u8>>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway: u64,
}

/// The claims roomcast reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    // Optional here so that a missing one is reported as missing (the
    // validation requires both) rather than as malformed.
    sub: Option<String>,
    exp: Option<u64>,
    /// Rooms the user may join and publish to.
    #[serde(default)]
    rooms: Patterns,
    /// Rooms the user may join but not publish to.
    #[serde(default)]
    rooms_read: Patterns,
}

/// A verified token.
#[derive(Debug)]
pub struct VerifiedToken {
    pub sub: String,
    pub exp: u64,
    pub grants: Grants,
}

pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
    leeway: u64,
}

impl fmt::Debug for JwtVerifier {
    // Keys stay out of logs and debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algs: Vec<Algorithm> = self.keys.iter().map(|(alg, _, _)| *alg).collect();
        f.debug_struct("JwtVerifier").field("algorithms", &algs).finish()
    }
}

impl JwtVerifier {
    /// `None` when no key is configured. Errors name the bad key, never its contents.
    pub fn new(config: &JwtConfig) -> Result<Option<Self>, String> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            if secret.len() < 32 {
                return Err("the HS256 secret must be at least 32 bytes (RFC 7518 section 3.2)".into());
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        }
        if let Some(pem) = &config.rs256_public_key_pem {
            let key = DecodingKey::from_rsa_pem(pem).map_err(|e| format!("RS256 public key: {e}"))?;
            keys.push((Algorithm::RS256, key));
        }
        if let Some(pem) = &config.es256_public_key_pem {
            let key = DecodingKey::from_ec_pem(pem).map_err(|e| format!("ES256 public key: {e}"))?;
            keys.push((Algorithm::ES256, key));
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let keys = keys
            .into_iter()
            .map(|(alg, key)| (alg, key, validation(alg, config)))
            .collect();
        Ok(Some(JwtVerifier {
            keys,
            leeway: config.leeway,
        }))
    }

    /// Seconds of clock skew allowed on `exp` (and so after it, before a session is closed).
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError("malformed token"))?;
        let Some((_, key, validation)) = self.keys.iter().find(|(alg, _, _)| *alg == header.alg) else {
            return Err(AuthError("token algorithm not accepted"));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| AuthError(reason(e.kind())))?;
        let claims = data.claims;
        let (Some(sub), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(AuthError("token lacks a required claim"));
        };
        Ok(VerifiedToken {
            sub,
            exp,
            grants: Grants {
                rooms: claims.rooms,
                read_only: claims.rooms_read,
            },
        })
    }
}

fn validation(alg: Algorithm, config: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "sub"]);
    match &config.audience {
        Some(aud) => v.set_audience(&[aud]),
        // Without a configured audience, a token's `aud` is not checked.
        None => v.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
    }
    v
}

/// The reason logged and counted for a rejected token.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "invalid token signature",
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidAudience => "wrong token audience",
        ErrorKind::InvalidIssuer => "wrong token issuer",
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "malformed token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_are_refused_without_echoing_the_key() {
        let short = JwtConfig {
            hs256_secret: Some(b"too-short".to_vec()),
            ..JwtConfig::default()
        };
        let err = JwtVerifier::new(&short).unwrap_err();
        assert!(err.contains("at least 32 bytes") && !err.contains("too-short"), "{err}");
        let bad_pem = JwtConfig {
            es256_public_key_pem: Some(b"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n".to_vec()),
            ..JwtConfig::default()
        };
        assert!(JwtVerifier::new(&bad_pem).unwrap_err().starts_with("ES256 public key"));
        assert!(
            JwtVerifier::new(&JwtConfig::default()).unwrap().is_none(),
            "no key: auth off"
        );
    }
}
