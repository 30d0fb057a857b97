//! Patient identification: the INS (identifiant national de santé) and identity traits.
//!
//! An INS is a NIR or a NIA: 13 characters and a 2-digit key, `97 − (N mod 97)` where N is
//! the 13-character number with Corsica's `2A`/`2B` read as `19`/`18` (docs/domain.md §4). It is
//! qualified by the OID of its kind; the test and demo OIDs are accepted only when the
//! configuration says so. An [`Ins`] is never printed: its `Debug` is redacted and errors
//! name the problem, never the digits.

use serde::{Deserialize, Serialize};

pub use crate::ins_oid::{INS_OIDS, OID_NIA, OID_NIR, OID_NIR_DEMO, OID_NIR_TEST};

/// Why a patient identification is refused. Never carries the identifier itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientError {
    /// Not 15 characters once spaces are removed.
    #[error("an INS has 15 characters (13 and a 2-digit key), this one has {0}")]
    Length(usize),
    /// A character other than a digit (or `2A`/`2B` at the department).
    #[error("an INS has digits only (Corsica: 2A or 2B at positions 6-7); position {0} is not")]
    Character(usize),
    /// The first digit is not a sex code.
    #[error("an INS starts with 1, 2, 3, 4, 7 or 8")]
    FirstDigit,
    /// The key does not match the number: a typing error.
    #[error("the INS key does not match its number (a digit is probably mistyped)")]
    Key,
    /// The OID is not an INS OID.
    #[error("unknown INS OID (expected {OID_NIR} or {OID_NIA})")]
    UnknownOid,
    /// A test or demo OID where the configuration does not accept them.
    #[error("test and demo INS OIDs are not accepted by this gateway")]
    TestOid,
    /// Identity traits incomplete or malformed.
    #[error("identity traits: {0}")]
    Traits(String),
}

impl PatientError {
    /// The message for the physician's screen, in French.
    pub fn message_fr(&self) -> &'static str {
        match self {
            Self::Key => "INS invalide : la clé ne correspond pas au numéro. Vérifiez la saisie.",
            Self::Length(_) => "INS invalide : il faut 15 caractères (13 chiffres et la clé).",
            Self::Character(_) | Self::FirstDigit => {
                "INS invalide : seuls des chiffres sont attendus (2A ou 2B pour la Corse)."
            }
            Self::UnknownOid | Self::TestOid => "Type d'identifiant non accepté par ce centre.",
            Self::Traits(_) => {
                "Traits d'identité incomplets : nom de naissance, prénom(s), date de naissance et sexe sont requis."
            }
        }
    }
}

/// Which identifiers a gateway accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct InsPolicy {
    /// Accept the test and demo OIDs (development and demo only).
    pub accept_test_oids: bool,
}

/// A validated INS with its OID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ins {
    number: String,
    oid: &'static str,
}

impl std::fmt::Debug for Ins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ins(****, {})", self.oid)
    }
}

impl Ins {
    /// Validates `value` (spaces ignored, `2a` read as `2A`) under `oid` and `policy`.
    pub fn parse(value: &str, oid: &str, policy: InsPolicy) -> Result<Self, PatientError> {
        let oid = match oid.trim().trim_start_matches("urn:oid:") {
            OID_NIR => OID_NIR,
            OID_NIA => OID_NIA,
            OID_NIR_TEST if policy.accept_test_oids => OID_NIR_TEST,
            OID_NIR_DEMO if policy.accept_test_oids => OID_NIR_DEMO,
            OID_NIR_TEST | OID_NIR_DEMO => return Err(PatientError::TestOid),
            _ => return Err(PatientError::UnknownOid),
        };
        let number = bare_identifier(value);
        check_nir(&number)?;
        Ok(Self { number, oid })
    }

    /// The 15 characters (for the upstream and the audit record only: never log them).
    pub fn as_str(&self) -> &str {
        &self.number
    }

    /// The OID qualifying it.
    pub fn oid(&self) -> &'static str {
        self.oid
    }

    /// The VIHF `resource-id` form: `{INS}^^^&{OID}&ISO^NH`.
    pub fn resource_id(&self) -> String {
        format!("{}^^^&{}&ISO^NH", self.number, self.oid)
    }

    /// The FHIR token `urn:oid:{OID}|{INS}`.
    pub fn fhir_token(&self) -> String {
        format!("urn:oid:{}|{}", self.oid, self.number)
    }
}

// Characters that print as nothing come along when an INS is copied from a document, a
// web page or a message: ignored as spaces are, rather than refused as a 16th character
// the physician cannot see.
use crate::encoding::bare_identifier;

/// Checks a 15-character NIR/NIA: characters, first digit, key.
fn check_nir(number: &str) -> Result<(), PatientError> {
    let length = number.chars().count();
    if length != 15 {
        return Err(PatientError::Length(length));
    }
    let bytes = number.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let corsica = i == 6 && bytes[5] == b'2' && (*b == b'A' || *b == b'B');
        if !(b.is_ascii_digit() || corsica) {
            return Err(PatientError::Character(i + 1));
        }
    }
    if !matches!(bytes[0], b'1' | b'2' | b'3' | b'4' | b'7' | b'8') {
        return Err(PatientError::FirstDigit);
    }
    let body = match &number[5..7] {
        "2A" => format!("{}19{}", &number[..5], &number[7..13]),
        "2B" => format!("{}18{}", &number[..5], &number[7..13]),
        _ => number[..13].to_owned(),
    };
    let n: u64 = body.parse().map_err(|_| PatientError::Character(1))?;
    let key: u64 = number[13..]
        .parse()
        .map_err(|_| PatientError::Character(14))?;
    if 97 - n % 97 != key {
        return Err(PatientError::Key);
    }
    Ok(())
}

/// Administrative sex as the INS referential records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// Female.
    F,
    /// Male.
    M,
    /// Unknown / other.
    I,
}

impl Sex {
    /// The FHIR administrative gender to search by; none for `I`: an undetermined sex
    /// (a caller who could not say) is no filter, and searching for `other` would leave
    /// out the patient the record holds as female or male.
    pub fn fhir_gender(self) -> Option<&'static str> {
        match self {
            Self::F => Some("female"),
            Self::M => Some("male"),
            Self::I => None,
        }
    }
}

/// Identity traits to search the record service by, when no INS is at hand.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Traits {
    /// Birth name (nom de naissance).
    pub birth_name: String,
    /// First names, as on the identity document.
    pub first_names: String,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Sex.
    pub sex: Sex,
    /// INSEE code of the birthplace (5 characters), if known.
    #[serde(default)]
    pub birthplace: Option<String>,
}

impl std::fmt::Debug for Traits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Traits(****)")
    }
}

impl Traits {
    /// The traits with their names as the record services write them: composed (NFC),
    /// typographic apostrophes and no-break spaces as plain ones. A name pasted from a
    /// document or typed on some systems comes decomposed (an accent as a mark of its
    /// own, which is no letter) or with a curly apostrophe: refused as holding other
    /// characters, or searched as another name, the patient would not be found.
    pub fn composed(mut self) -> Self {
        fn compose(name: &str) -> String {
            icu_normalizer::ComposingNormalizerBorrowed::new_nfc()
                .normalize(name)
                .chars()
                .map(|c| match c {
                    '\u{2018}' | '\u{2019}' | '\u{02BC}' => '\'',
                    '\u{00A0}' | '\u{202F}' => ' ',
                    c => c,
                })
                .collect()
        }
        self.birth_name = compose(&self.birth_name);
        self.first_names = compose(&self.first_names);
        self
    }

    /// Checks the traits are complete and well formed; `today` bounds the birth date.
    pub fn validate(&self, today: time::Date) -> Result<(), PatientError> {
        let bad = |why: &str| Err(PatientError::Traits(why.into()));
        let name_ok = |n: &str| {
            let n = n.trim();
            !n.is_empty()
                && n.chars().count() <= 100
                && n.chars().all(|c| c.is_alphabetic() || " -'".contains(c))
        };
        if !name_ok(&self.birth_name) {
            return bad("birth name missing or with characters other than letters, space, - and '");
        }
        if !name_ok(&self.first_names) {
            return bad(
                "first names missing or with characters other than letters, space, - and '",
            );
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        match time::Date::parse(&self.birth_date, &format) {
            Ok(date) if date <= today && date.year() >= 1880 => {}
            Ok(_) => return bad("birth date in the future or before 1880"),
            Err(_) => return bad("birth date is not YYYY-MM-DD"),
        }
        if let Some(place) = &self.birthplace {
            let b = place.as_bytes();
            let ok = b.len() == 5
                && b.iter().enumerate().all(|(i, c)| {
                    c.is_ascii_digit() || (i == 1 && b[0] == b'2' && (*c == b'A' || *c == b'B'))
                });
            if !ok {
                return bad("birthplace is not a 5-character INSEE code");
            }
        }
        Ok(())
    }
}

/// A patient the record service proposes, for the physician to choose from.
#[derive(Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    /// The record service's id for the patient (what the physician's choice sends back).
    pub id: String,
    /// Names as the record service holds them.
    pub names: Vec<String>,
    /// Birth date.
    pub birth_date: Option<String>,
    /// Administrative gender.
    pub gender: Option<String>,
    /// Birthplace INSEE code, when the service gives it.
    pub birthplace: Option<String>,
    /// Whether the service holds a qualified INS for this patient.
    pub has_ins: bool,
    /// That INS, for the physician's choice to fill the access form.
    pub ins: Option<CandidateIns>,
    /// How well the candidate matches the traits searched for, percent, when the record
    /// service says (the DMP does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_percent: Option<u8>,
    /// How the record service answered (its transaction and assertion id), for the
    /// access's audit record; never sent.
    #[serde(skip)]
    #[schema(ignore)]
    pub provenance: Vec<String>,
}

/// A candidate's INS as the record service holds it.
#[derive(Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CandidateIns {
    /// The number.
    pub value: String,
    /// Its OID.
    pub oid: String,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Candidate(****)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: InsPolicy = InsPolicy {
        accept_test_oids: false,
    };

    /// The key of a 13-character number, computed independently of `check_nir`.
    fn with_key(body: &str) -> String {
        let n: u64 = body
            .replace("2A", "19")
            .replace("2B", "18")
            .parse()
            .unwrap();
        format!("{body}{:02}", 97 - n % 97)
    }

    #[test]
    fn nir_keys_are_checked_including_corsica() {
        // The public example NIR 2 69 05 49 588 157 has key 80.
        assert!(Ins::parse("2 69 05 49 588 157 80", OID_NIR, STRICT).is_ok());
        assert_eq!(
            Ins::parse("269054958815781", OID_NIR, STRICT),
            Err(PatientError::Key)
        );
        let corsica = with_key("185072A123456");
        assert!(Ins::parse(&corsica, OID_NIR, STRICT).is_ok());
        assert!(Ins::parse(&corsica.to_lowercase(), OID_NIR, STRICT).is_ok());
        let upper = with_key("285072B123456");
        assert!(Ins::parse(&upper, OID_NIA, STRICT).is_ok());
        // Months 20-42 and 50+ exist: not rejected.
        assert!(Ins::parse(&with_key("1855099123456"), OID_NIR, STRICT).is_ok());
        // Copied with characters that print as nothing: read as typed (they were
        // refused as a 16th character the physician could not see).
        for invisible in ['\u{200B}', '\u{2060}', '\u{00AD}', '\u{FEFF}', '\u{200E}'] {
            let pasted = format!("{invisible}2 69 05 49 588{invisible} 157 80");
            let ins = Ins::parse(&pasted, OID_NIR, STRICT).unwrap();
            assert_eq!(ins.as_str(), "269054958815780");
        }
        // Another character is still named by its place.
        assert_eq!(
            Ins::parse("2690549588157\u{00B7}80", OID_NIR, STRICT),
            Err(PatientError::Length(16))
        );
    }

    #[test]
    fn each_defect_is_named_without_the_digits() {
        assert_eq!(
            Ins::parse("12345", OID_NIR, STRICT),
            Err(PatientError::Length(5))
        );
        assert_eq!(
            Ins::parse("1850X99123456 00", OID_NIR, STRICT),
            Err(PatientError::Character(5))
        );
        assert_eq!(
            Ins::parse(&with_key("5850799123456"), OID_NIR, STRICT),
            Err(PatientError::FirstDigit)
        );
        assert_eq!(
            Ins::parse(&with_key("1850799123456"), "1.2.3", STRICT),
            Err(PatientError::UnknownOid)
        );
        assert_eq!(
            Ins::parse(&with_key("1850799123456"), OID_NIR_TEST, STRICT),
            Err(PatientError::TestOid)
        );
        let lenient = InsPolicy {
            accept_test_oids: true,
        };
        let ins = Ins::parse(&with_key("1850799123456"), OID_NIR_DEMO, lenient).unwrap();
        assert!(!format!("{ins:?}").contains("185"));
        assert_eq!(
            ins.resource_id(),
            format!("{}^^^&1.2.250.1.213.1.4.11&ISO^NH", ins.as_str())
        );
        let mistyped = with_key("1850799123456").replace("185", "186");
        let refusal = Ins::parse(&mistyped, OID_NIR, STRICT)
            .unwrap_err()
            .to_string();
        assert!(!refusal.contains("186"), "{refusal}");
    }

    #[test]
    fn traits_are_validated() {
        let today = time::macros::date!(2026 - 11 - 23);
        let mut traits = Traits {
            birth_name: "DE LA FONTAINE".into(),
            first_names: "Jean-Marie Éloïse".into(),
            birth_date: "1962-03-04".into(),
            sex: Sex::F,
            birthplace: Some("2A004".into()),
        };
        assert!(traits.validate(today).is_ok());
        traits.birth_date = "2030-01-01".into();
        assert!(traits.validate(today).is_err());
        traits.birth_date = "04/03/1962".into();
        assert!(traits.validate(today).is_err());
        traits.birth_date = "1962-03-04".into();
        traits.birth_name = "  ".into();
        assert!(traits.validate(today).is_err());
        traits.birth_name = "DUPONT".into();
        traits.birthplace = Some("7505".into());
        assert!(traits.validate(today).is_err());
        assert_eq!(format!("{traits:?}"), "Traits(****)");
    }

    /// A name typed decomposed or with a curly apostrophe reads as the same name
    /// composed, and passes the checks it failed.
    #[test]
    fn names_are_composed_before_they_are_checked() {
        let today = time::macros::date!(2026 - 12 - 01);
        let traits = Traits {
            birth_name: "D\u{2019}HE\u{301}RAULT\u{a0}LE\u{300}VE".into(),
            first_names: "Ame\u{301}lie-Noe\u{308}l".into(),
            birth_date: "1962-03-04".into(),
            sex: Sex::F,
            birthplace: None,
        };
        assert!(
            traits.validate(today).is_err(),
            "a bare combining mark is no letter"
        );
        let composed = traits.composed();
        assert_eq!(composed.birth_name, "D'H\u{c9}RAULT L\u{c8}VE");
        assert_eq!(composed.first_names, "Am\u{e9}lie-No\u{eb}l");
        assert!(composed.validate(today).is_ok());
    }

    proptest::proptest! {
        /// The INS parser's fuzz target, bounded for CI.
        #[test]
        fn arbitrary_input_never_panics(value in ".{0,40}", oid in ".{0,30}") {
            let _ = Ins::parse(&value, &oid, InsPolicy { accept_test_oids: true });
        }

        #[test]
        fn every_valid_number_with_a_wrong_key_is_refused(body in "[12][0-9]{12}", delta in 1u64..97) {
            let good = with_key(&body);
            proptest::prop_assert!(Ins::parse(&good, OID_NIR, STRICT).is_ok());
            let key: u64 = good[13..].parse().unwrap();
            let wrong = format!("{body}{:02}", (key + delta - 1) % 97 + 1);
            if wrong != good {
                proptest::prop_assert_eq!(Ins::parse(&wrong, OID_NIR, STRICT), Err(PatientError::Key));
            }
        }
    }
}
