//! The access assertion every upstream call carries: the VIHF attributes (docs/domain.md §2) as
//! a JWS (RFC 7515 compact form, `alg` `EdDSA`, RFC 8037) signed with the gateway's
//! assertion key, sent as `Authorization: Bearer <jws>`.
//!
//! Claim ↔ VIHF attribute (SAML assertion of the production transport):
//!
//! | claim | VIHF attribute |
//! |---|---|
//! | `purpose_of_use` | `urn:oasis:names:tc:xspa:1.0:subject:purposeofuse` (`centre_15`, `bris_de_glace`; TRE_R248 `1.2.250.1.213.1.1.4.248`) |
//! | `subject_id` | `urn:oasis:names:tc:xspa:1.0:subject:subject-id` (the professional's name) |
//! | `subject_nameid` | Subject `NameID` (idNat_PS, `urn:oid:1.2.250.1.71.4.2.1`) |
//! | `role` | `urn:oasis:names:tc:xacml:2.0:subject:role`, profession (`1.2.250.1.71.1.2.7`) |
//! | `specialty` | `urn:oasis:names:tc:xacml:2.0:subject:role`, specialty (`1.2.250.1.71.4.2.5`) |
//! | `structure_id` | `Identifiant_Structure` |
//! | `activity_sector` | `Secteur_Activite` |
//! | `resource_id` | `urn:oasis:names:tc:xacml:2.0:resource:resource-id` (`{INS}^^^&{OID}&ISO^NH`; absent for a search by traits) |
//! | `lps_name`, `lps_version` | `LPS_Nom`, `LPS_Version` |
//! | `auth_mode` | `Authentification_Mode`: `INDIRECTE_RENFORCEE` (signed by the gateway's key for a professional its card authenticated at the desk; `DIRECTE` is for an assertion the card itself signs) |
//! | `iss`, `aud`, `iat`, `exp`, `jti` | the assertion's issuer, audience, validity (60 s) and id (SAML `Issuer`, `Audience`, `Conditions`, `ID`) |

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::AccessMode;

/// How long an assertion is valid.
pub const LIFETIME_SECS: u64 = 60;
/// Tolerated clock difference between the gateway and the record service.
pub const CLOCK_SKEW_SECS: u64 = 30;

/// The claims of an access assertion.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: `samu-gateway/{structure_id}`.
    pub iss: String,
    /// Audience: the record service's base URL.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Unique id.
    pub jti: String,
    /// Purpose of use.
    pub purpose_of_use: AccessMode,
    /// The professional's name.
    pub subject_id: String,
    /// The professional's idNat.
    pub subject_nameid: String,
    /// Profession.
    pub role: Option<String>,
    /// Specialty.
    pub specialty: Option<String>,
    /// The centre's structure id.
    pub structure_id: String,
    /// The centre's activity sector.
    pub activity_sector: String,
    /// The patient, when the call is about one.
    pub resource_id: Option<String>,
    /// Software name.
    pub lps_name: String,
    /// Software version.
    pub lps_version: String,
    /// `DIRECTE` (card login).
    pub auth_mode: String,
}

// Holds patient data (INS, names, clinical or free text): never printed.
redacted_debug!(Claims);

/// Why an assertion is refused (by the record service; the dev upstream uses these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed assertion: {0}")]
    Malformed(String),
    /// The signature does not verify with any trusted key.
    #[error("assertion signature does not verify with a trusted key")]
    Signature,
    /// Expired or issued in the future.
    #[error("assertion outside its validity")]
    Expired,
    /// Valid for longer than an assertion may be: a long-lived token is a credential
    /// anyone who copies it may use.
    #[error("assertion valid for longer than {LIFETIME_SECS} s")]
    TooLong,
    /// A required attribute is missing or empty.
    #[error("assertion lacks the required attribute '{0}'")]
    Missing(&'static str),
    /// Made for another service (`aud`).
    #[error("assertion made for another audience")]
    Audience,
}

/// The gateway's assertion key.
pub struct AssertionSigner {
    key: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionSigner({})", self.key_id)
    }
}

impl AssertionSigner {
    /// Loads a PKCS#8 PEM Ed25519 key (as `samu-gateway audit keygen` writes one).
    pub fn load(path: &std::path::Path) -> Result<Self, crate::secret::SecretError> {
        let key = crate::secret::load_ed25519(path)?;
        let key_id = crate::encoding::hex(&crate::encoding::sha256(key.public_key().as_ref())[..8]);
        Ok(Self { key, key_id })
    }

    /// The public key, hex (what the record service must trust).
    pub fn public_key_hex(&self) -> String {
        crate::encoding::hex(self.key.public_key().as_ref())
    }

    /// The compact JWS of `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, serde_json::Error> {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.key_id});
        let signing_input = format!("{}.{}", encode(&header)?, encode(claims)?);
        let signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// A value as base64url JSON.
fn encode(value: &impl Serialize) -> Result<String, serde_json::Error> {
    serde_json::to_vec(value).map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh random assertion id (no assertion leaves without one).
pub fn new_jti() -> Result<String, crate::random::RandomUnavailable> {
    crate::random::hex_id::<16>()
}

/// Checks `token`'s signature against `trusted` public keys (raw 32-byte Ed25519), its
/// audience (`aud` must be a URL of `authority`, the `host:port` the receiver answers
/// as: an assertion made for another service is not a credential here), its validity at
/// `now` (Unix seconds) and its required attributes; returns its claims.
pub fn verify(
    token: &str,
    trusted: &[Vec<u8>],
    authority: &str,
    now: u64,
) -> Result<Claims, AssertionError> {
    let malformed = |why: &str| AssertionError::Malformed(why.into());
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected header.payload.signature"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| malformed("not base64url"))
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| malformed("header is not JSON"))?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("EdDSA") {
        return Err(malformed("alg must be EdDSA"));
    }
    let signature = decode(signature)?;
    let signing_input = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
    let verified = trusted.iter().any(|key| {
        UnparsedPublicKey::new(&ED25519, key)
            .verify(signing_input.as_bytes(), &signature)
            .is_ok()
    });
    if !verified {
        return Err(AssertionError::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(payload)?)
        // By position: serde's message would quote a claim's value (the resource id
        // carries the INS).
        .map_err(|e| {
            AssertionError::Malformed(format!(
                "claims: {}",
                crate::encoding::json_error_position(&e)
            ))
        })?;
    if !addressed_to(&claims.aud, authority) {
        return Err(AssertionError::Audience);
    }
    if claims.exp < now || claims.iat > now + CLOCK_SKEW_SECS || claims.exp <= claims.iat {
        return Err(AssertionError::Expired);
    }
    if claims.exp - claims.iat > LIFETIME_SECS + CLOCK_SKEW_SECS {
        return Err(AssertionError::TooLong);
    }
    let required = [
        ("subject_id", &claims.subject_id),
        ("subject_nameid", &claims.subject_nameid),
        ("structure_id", &claims.structure_id),
        ("activity_sector", &claims.activity_sector),
        ("lps_name", &claims.lps_name),
        ("lps_version", &claims.lps_version),
        ("auth_mode", &claims.auth_mode),
    ];
    if let Some((name, _)) = required.iter().find(|(_, v)| v.trim().is_empty()) {
        return Err(AssertionError::Missing(name));
    }
    if claims.role.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(AssertionError::Missing("role"));
    }
    Ok(claims)
}

/// Whether URL `aud` names `authority` (`host[:port]`, compared without case).
fn addressed_to(aud: &str, authority: &str) -> bool {
    let Some((scheme, rest)) = aud.split_once("://") else {
        return false;
    };
    let named = rest.split(['/', '?', '#']).next().unwrap_or_default();
    matches!(scheme, "https" | "http")
        && !authority.is_empty()
        && !named.contains('@')
        && named.eq_ignore_ascii_case(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Signer;

    fn signer() -> (tempfile::TempDir, AssertionSigner) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assertion.key");
        Signer::generate(&path).unwrap();
        let signer = AssertionSigner::load(&path).unwrap();
        (dir, signer)
    }

    fn claims(now: u64) -> Claims {
        Claims {
            iss: "samu-gateway/1750000000".into(),
            aud: "https://record.example".into(),
            iat: now,
            exp: now + LIFETIME_SECS,
            jti: new_jti().unwrap(),
            purpose_of_use: AccessMode::Centre15,
            subject_id: "Jeanne URGENTISTE".into(),
            subject_nameid: "810002813839".into(),
            role: Some("10".into()),
            specialty: None,
            structure_id: "1750000000".into(),
            activity_sector: "SA01".into(),
            resource_id: Some("x^^^&1.2.250.1.213.1.4.8&ISO^NH".into()),
            lps_name: "samu-gateway".into(),
            lps_version: "0.1.0".into(),
            auth_mode: "DIRECTE".into(),
        }
    }

    #[test]
    fn a_signed_assertion_verifies_and_any_change_breaks_it() {
        let (_dir, signer) = self::signer();
        let key = crate::encoding::decode_hex(&signer.public_key_hex()).unwrap();
        let token = signer.sign(&claims(1000)).unwrap();
        assert_eq!(
            verify(&token, std::slice::from_ref(&key), AUD, 1010).unwrap(),
            claims_with_jti(&token)
        );
        // Tampered payload (purpose of use changed), wrong key, expired, garbage.
        let mut forged = claims_with_jti(&token);
        forged.purpose_of_use = AccessMode::BrisDeGlace;
        let parts: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(
            verify(&tampered, std::slice::from_ref(&key), AUD, 1010),
            Err(AssertionError::Signature)
        );
        let (_other_dir, other) = self::signer();
        let other_key = crate::encoding::decode_hex(&other.public_key_hex()).unwrap();
        assert_eq!(
            verify(&token, &[other_key], AUD, 1010),
            Err(AssertionError::Signature)
        );
        assert_eq!(
            verify(&token, std::slice::from_ref(&key), AUD, 2000),
            Err(AssertionError::Expired)
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(matches!(
                verify(garbage, std::slice::from_ref(&key), AUD, 1010),
                Err(AssertionError::Malformed(_))
            ));
        }
        // Signed, current, and valid for a day: refused (before, any lifetime passed).
        let mut long = claims(1000);
        long.exp = long.iat + 86_400;
        assert_eq!(
            verify(
                &signer.sign(&long).unwrap(),
                std::slice::from_ref(&key),
                AUD,
                1010
            ),
            Err(AssertionError::TooLong)
        );
        let mut missing = claims(1000);
        missing.role = None;
        let token = signer.sign(&missing).unwrap();
        assert_eq!(
            verify(&token, &[key], AUD, 1010),
            Err(AssertionError::Missing("role"))
        );
    }

    /// Made for another service: refused, however well signed.
    #[test]
    fn an_assertion_for_another_audience_is_refused() {
        let (_dir, signer) = self::signer();
        let key = crate::encoding::decode_hex(&signer.public_key_hex()).unwrap();
        let token = signer.sign(&claims(1000)).unwrap();
        assert!(verify(&token, std::slice::from_ref(&key), "RECORD.example", 1010).is_ok());
        for other in ["other.example", "record.example:8443", ""] {
            assert_eq!(
                verify(&token, std::slice::from_ref(&key), other, 1010),
                Err(AssertionError::Audience),
                "{other}"
            );
        }
        for aud in [
            "https://record.example.evil/fhir",
            "https://x@record.example/fhir",
            "record.example",
            "ftp://record.example/",
        ] {
            let mut claims = claims(1000);
            claims.aud = aud.into();
            let token = signer.sign(&claims).unwrap();
            assert_eq!(
                verify(&token, std::slice::from_ref(&key), AUD, 1010),
                Err(AssertionError::Audience),
                "{aud}"
            );
        }
        let mut claims = claims(1000);
        claims.aud = "https://record.example/fhir?x=1".into();
        let token = signer.sign(&claims).unwrap();
        assert!(verify(&token, &[key], AUD, 1010).is_ok());
    }

    const AUD: &str = "record.example";

    fn claims_with_jti(token: &str) -> Claims {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(token in ".{0,300}") {
            let _ = verify(&token, &[vec![0u8; 32]], AUD, 0);
        }
    }
}
