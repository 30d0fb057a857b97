//! The VIHF: the SAML 2.0 assertion every DMP request carries, saying who asks (the
//! professional, the structure, the software), about whom (the patient's INS) and why
//! (the access mode), signed with an enveloped XML signature (docs/dmp.md, "The VIHF
//! assertion", attribute by attribute).
//!
//! Built with an XML writer (every value escaped), then signed through
//! [`crate::xmldsig`]: the signer only ever sees the canonical `SignedInfo`, so the same
//! path serves a software key and a card.

use std::io::Write as _;

use quick_xml::Writer;
use quick_xml::events::BytesText;

use super::{AuthenticationMode, DmpError};
use crate::access_mode::AccessMode;
use crate::card::trust::Professional;
use crate::patient::Ins;

const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const HL7: &str = "urn:hl7-org:v3";
/// TRE_R248, the access modes.
const PURPOSE_SYSTEM: &str = "1.2.250.1.213.1.1.4.248";
/// TRE_G15, professions.
const PROFESSION_SYSTEM: &str = "1.2.250.1.71.1.2.7";
/// TRE_R38, specialties.
const SPECIALTY_SYSTEM: &str = "1.2.250.1.71.4.2.5";
/// J61, activity sectors.
const SECTOR_SYSTEM: &str = "1.2.250.1.71.4.2.4";

/// What the configuration says of every assertion (`[dmp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VihfSettings {
    /// `Identifiant_Structure`.
    pub structure_id: String,
    /// `Secteur_Activite` code (J61, e.g. `SA01`).
    pub activity_sector: String,
    /// The professional's specialty (TRE_R38, e.g. `SM26`), a second `Role`.
    pub specialty: Option<String>,
    /// `LPS_Nom`.
    pub software_name: String,
    /// `LPS_Version`.
    pub software_version: String,
    /// `LPS_ID_HOMOLOGATION_DMP`.
    pub homologation_number: Option<String>,
    /// `LPS_ID`, when the structure registered one.
    pub software_id: Option<String>,
    /// `VIHF_Version`.
    pub vihf_version: String,
    /// `Authentification_Mode`.
    pub authentication_mode: AuthenticationMode,
    /// How long an assertion is valid (`Conditions`), seconds.
    pub lifetime_secs: u64,
}

/// What the session says of one assertion.
#[derive(Debug, Clone, Copy)]
pub struct VihfSubject<'a> {
    /// The logged-in professional (from the card).
    pub professional: &'a Professional,
    /// Why the record is consulted: the physician's choice.
    pub mode: AccessMode,
    /// The patient, for every transaction about one (none for a search by traits).
    pub patient: Option<&'a Ins>,
}

/// An assertion ready to sign: [`crate::xmldsig::Unsigned::to_sign`] gives the bytes.
pub type UnsignedVihf = crate::xmldsig::Unsigned;

/// The assertion's id, and the assertion ready for its signature.
pub fn prepare(
    settings: &VihfSettings,
    subject: VihfSubject<'_>,
    signer_certificate: &[u8],
    id: &str,
    now_ms: u64,
) -> Result<UnsignedVihf, DmpError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(signer_certificate)
        .map_err(|e| DmpError::Signer(format!("the signing certificate cannot be read: {e}")))?;
    let issuer = subject_name(certificate.subject())?;
    let xml = assertion_xml(settings, subject, &issuer, id, now_ms)?;
    // The signature goes right after the Issuer, where the SAML schema wants it. The
    // Issuer's text is escaped: its end tag occurs once.
    let split = xml
        .find("</Issuer>")
        .map(|at| at + "</Issuer>".len())
        .ok_or_else(|| DmpError::Vihf("no Issuer in the assertion".into()))?;
    let (before, after) = xml.split_at(split);
    crate::xmldsig::Unsigned::prepare(before, after, id, signer_certificate)
        .map_err(|e| DmpError::Vihf(e.to_string()))
}

/// Short names RFC 4514 gives attribute types; others are written as their OID.
const SHORT_NAMES: [(&str, &str); 9] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// The signing certificate's subject as the `Issuer`'s `X509SubjectName` format says
/// (SAML core §8.3.3, XML-DSig: the RFC 4514 string): the most specific part first, `,`
/// between parts and `+` within one, special characters escaped, types without a short
/// name as their OID with the value's DER in hex. x509-parser's display is none of these
/// (certificate order, `, `, no escaping), and writes an error's text for a string type it
/// does not read. docs/dmp.md, "The VIHF assertion".
fn subject_name(name: &x509_parser::x509::X509Name<'_>) -> Result<String, DmpError> {
    let unwritable = || {
        DmpError::Signer(
            "the signing certificate's subject has a value that cannot be written as a name".into(),
        )
    };
    let mut parts = Vec::new();
    for rdn in name.iter_rdn() {
        let mut values = Vec::new();
        for attribute in rdn.iter() {
            let oid = attribute.attr_type().to_id_string();
            let short = SHORT_NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
            values.push(match (short, attribute.as_str()) {
                (Some(short), Ok(text)) => format!("{short}={}", escape_name_value(text)),
                _ => {
                    let value = attribute.attr_value();
                    let tag = value.tag().0;
                    if value.header.class() != x509_parser::der_parser::asn1_rs::Class::Universal
                        || tag >= 31
                    {
                        return Err(unwritable());
                    }
                    let constructed = if value.header.is_constructed() {
                        0x20
                    } else {
                        0
                    };
                    let mut der = vec![u8::try_from(tag).map_err(|_| unwritable())? | constructed];
                    let length = value.data.len();
                    if length < 0x80 {
                        der.push(u8::try_from(length).map_err(|_| unwritable())?);
                    } else {
                        let bytes = length.to_be_bytes();
                        let first = bytes
                            .iter()
                            .position(|b| *b != 0)
                            .unwrap_or(bytes.len() - 1);
                        der.push(
                            0x80 | u8::try_from(bytes.len() - first).map_err(|_| unwritable())?,
                        );
                        der.extend_from_slice(&bytes[first..]);
                    }
                    der.extend_from_slice(value.data);
                    format!("{oid}=#{}", crate::encoding::hex(&der))
                }
            });
        }
        parts.push(values.join("+"));
    }
    parts.reverse();
    Ok(parts.join(","))
}

/// An attribute value escaped as RFC 4514 §2.4 says.
fn escape_name_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

fn instant(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::clock::format_time(t).0
}

fn assertion_xml(
    settings: &VihfSettings,
    subject: VihfSubject<'_>,
    issuer: &str,
    id: &str,
    now_ms: u64,
) -> Result<String, DmpError> {
    let professional = subject.professional;
    let issued = instant(now_ms);
    let expires = instant(now_ms.saturating_add(settings.lifetime_secs.saturating_mul(1000)));
    let name = [&professional.given_name, &professional.surname]
        .iter()
        .filter_map(|n| n.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    let mut attributes: Vec<(&str, Value)> = vec![
        ("VIHF_Version", Value::Text(settings.vihf_version.clone())),
        (
            "Authentification_Mode",
            Value::Text(settings.authentication_mode.code().into()),
        ),
        (
            "Identifiant_Structure",
            Value::Text(settings.structure_id.clone()),
        ),
        (
            "Secteur_Activite",
            Value::Text(format!("{}^{SECTOR_SYSTEM}", settings.activity_sector)),
        ),
        (
            "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
            Value::Text(if name.is_empty() {
                professional.id_nat.clone()
            } else {
                name
            }),
        ),
    ];
    let mut roles = Vec::new();
    if let Some(profession) = professional.title.as_deref() {
        roles.push(Value::Coded {
            element: "Role",
            code: profession.trim().to_owned(),
            system: PROFESSION_SYSTEM,
            display: None,
        });
    }
    if let Some(specialty) = &settings.specialty {
        roles.push(Value::Coded {
            element: "Role",
            code: specialty.clone(),
            system: SPECIALTY_SYSTEM,
            display: None,
        });
    }
    if !roles.is_empty() {
        attributes.push((
            "urn:oasis:names:tc:xacml:2.0:subject:role",
            Value::Many(roles),
        ));
    }
    if let Some(ins) = subject.patient {
        attributes.push((
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
            Value::Text(ins.resource_id()),
        ));
    }
    attributes.push(("Ressource_URN", Value::Text("urn:dmp".into())));
    attributes.push((
        "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
        Value::Coded {
            element: "PurposeOfUse",
            code: subject.mode.code().into(),
            system: PURPOSE_SYSTEM,
            display: Some(match subject.mode {
                AccessMode::Centre15 => "Accès par un centre de régulation médicale",
                AccessMode::BrisDeGlace => "Accès en bris de glace",
            }),
        },
    ));
    attributes.push(("LPS_Nom", Value::Text(settings.software_name.clone())));
    attributes.push((
        "LPS_Version",
        Value::Text(settings.software_version.clone()),
    ));
    if let Some(number) = &settings.homologation_number {
        attributes.push(("LPS_ID_HOMOLOGATION_DMP", Value::Text(number.clone())));
    }
    if let Some(software_id) = &settings.software_id {
        attributes.push(("LPS_ID", Value::Text(software_id.clone())));
    }

    let mut writer = Writer::new(Vec::new());
    let written = writer
        .create_element("Assertion")
        .with_attribute(("xmlns", SAML))
        .with_attribute(("xmlns:xsi", XSI))
        .with_attribute(("ID", id))
        .with_attribute(("IssueInstant", issued.as_str()))
        .with_attribute(("Version", "2.0"))
        .write_inner_content(|w| {
            w.create_element("Issuer")
                .with_attribute((
                    "Format",
                    "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
                ))
                .write_text_content(BytesText::new(issuer))?;
            w.create_element("Subject").write_inner_content(|w| {
                w.create_element("NameID")
                    .with_attribute((
                        "Format",
                        "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
                    ))
                    .write_text_content(BytesText::new(&professional.id_nat))?;
                Ok(())
            })?;
            w.create_element("Conditions")
                .with_attribute(("NotBefore", issued.as_str()))
                .with_attribute(("NotOnOrAfter", expires.as_str()))
                .write_empty()?;
            w.create_element("AuthnStatement")
                .with_attribute(("AuthnInstant", issued.as_str()))
                .write_inner_content(|w| {
                    w.create_element("AuthnContext").write_inner_content(|w| {
                        w.create_element("AuthnContextClassRef")
                            .write_text_content(BytesText::new(
                                settings.authentication_mode.authn_context(),
                            ))?;
                        Ok(())
                    })?;
                    Ok(())
                })?;
            w.create_element("AttributeStatement")
                .write_inner_content(|w| {
                    for (name, value) in &attributes {
                        w.create_element("Attribute")
                            .with_attribute(("Name", *name))
                            .write_inner_content(|w| value.write(w))?;
                    }
                    Ok(())
                })?;
            Ok(())
        });
    if let Err(e) = written {
        return Err(DmpError::Vihf(format!("cannot write the assertion: {e}")));
    }
    String::from_utf8(writer.into_inner())
        .map_err(|_| DmpError::Vihf("the assertion is not UTF-8".into()))
}

/// An attribute's value(s).
enum Value {
    Text(String),
    /// An HL7 v3 `CE` in its own namespace, as the DMP reads roles and purposes.
    Coded {
        element: &'static str,
        code: String,
        system: &'static str,
        display: Option<&'static str>,
    },
    Many(Vec<Value>),
}

impl Value {
    fn write(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        match self {
            Self::Text(text) => {
                w.create_element("AttributeValue")
                    .write_text_content(BytesText::new(text))?;
            }
            Self::Coded {
                element,
                code,
                system,
                display,
            } => {
                w.create_element("AttributeValue")
                    .write_inner_content(|w| {
                        let mut coded = w
                            .create_element(*element)
                            .with_attribute(("xmlns", HL7))
                            .with_attribute(("xsi:type", "CE"))
                            .with_attribute(("code", code.as_str()))
                            .with_attribute(("codeSystem", *system));
                        if let Some(display) = display {
                            coded = coded.with_attribute(("displayName", *display));
                        }
                        coded.write_empty()?;
                        Ok(())
                    })?;
            }
            Self::Many(values) => {
                for value in values {
                    value.write(w)?;
                }
            }
        }
        // Keeps the writer's io::Write bound used: a Vec never fails.
        w.get_mut().flush()
    }
}

/// What an assertion says, read back (the stand-in DMP, the tests): attribute values by
/// name (a coded value as its `code`), the subject and the validity.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReadVihf {
    /// `Subject/NameID`.
    pub name_id: Option<String>,
    /// `Conditions@NotBefore`.
    pub not_before: Option<String>,
    /// `Conditions@NotOnOrAfter`.
    pub not_on_or_after: Option<String>,
    /// Attribute values by attribute name, in document order.
    pub attributes: std::collections::BTreeMap<String, Vec<String>>,
}

redacted_debug!(ReadVihf);

impl ReadVihf {
    /// The first value of attribute `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.attributes.get(name)?.first().map(String::as_str)
    }
}

/// Reads `assertion` (a SAML `Assertion` element, already verified by the caller).
pub fn read(assertion: roxmltree::Node<'_, '_>) -> ReadVihf {
    let saml = |n: &roxmltree::Node<'_, '_>, name: &str| n.has_tag_name((SAML, name));
    let mut out = ReadVihf::default();
    for child in assertion.children().filter(roxmltree::Node::is_element) {
        if saml(&child, "Subject") {
            out.name_id = child
                .children()
                .find(|n| saml(n, "NameID"))
                .and_then(|n| n.text())
                .map(|t| t.trim().to_owned());
        } else if saml(&child, "Conditions") {
            out.not_before = child.attribute("NotBefore").map(str::to_owned);
            out.not_on_or_after = child.attribute("NotOnOrAfter").map(str::to_owned);
        } else if saml(&child, "AttributeStatement") {
            for attribute in child.children().filter(|n| saml(n, "Attribute")).take(64) {
                let Some(name) = attribute.attribute("Name") else {
                    continue;
                };
                let values = attribute
                    .children()
                    .filter(|n| saml(n, "AttributeValue"))
                    .take(16)
                    .map(|v| match v.first_element_child() {
                        Some(coded) => coded.attribute("code").unwrap_or_default().to_owned(),
                        None => v.text().unwrap_or_default().trim().to_owned(),
                    });
                out.attributes
                    .entry(name.to_owned())
                    .or_default()
                    .extend(values);
            }
        }
    }
    out
}

/// The attributes every assertion must carry (the resource id only when the transaction
/// is about one patient).
pub const REQUIRED_ATTRIBUTES: [&str; 10] = [
    "VIHF_Version",
    "Authentification_Mode",
    "Identifiant_Structure",
    "Secteur_Activite",
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
    "urn:oasis:names:tc:xacml:2.0:subject:role",
    "Ressource_URN",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "LPS_Nom",
    "LPS_ID_HOMOLOGATION_DMP",
];

/// The patient attribute.
pub const RESOURCE_ID: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
/// The purpose attribute.
pub const PURPOSE_OF_USE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings() -> VihfSettings {
        VihfSettings {
            structure_id: "1750000000".into(),
            activity_sector: "SA01".into(),
            specialty: Some("SM26".into()),
            software_name: "samu-gateway".into(),
            software_version: "0.1.0".into(),
            homologation_number: Some("TEST-0001".into()),
            software_id: None,
            vihf_version: "3.0".into(),
            authentication_mode: AuthenticationMode::Directe,
            lifetime_secs: 300,
        }
    }

    /// The `Issuer` is the signer's subject as RFC 4514 writes it: most specific first,
    /// commas escaped, a type without a short name as its OID and DER.
    #[test]
    fn the_issuer_is_the_subject_in_rfc_4514_form() {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "FR");
        dn.push(rcgen::DnType::OrganizationName, "CH Saint-Denis, SAMU 93");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 97]), "SIRET12345");
        dn.push(rcgen::DnType::CommonName, " #Régulation");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            subject_name(certificate.subject()).unwrap(),
            "CN=\\ #Régulation,2.5.4.97=#0c0a53495245543132333435,O=CH Saint-Denis\\, SAMU 93,C=FR"
        );
    }

    #[test]
    fn the_assertion_carries_every_attribute_escaped() {
        let professional = Professional {
            id_nat: "810002813839".into(),
            id_nat_key_ok: true,
            given_name: Some("Jeanne <&>".into()),
            surname: Some("URGENTISTE".into()),
            title: Some("10".into()),
            certificate_sha256: String::new(),
        };
        let ins = Ins::parse(
            "180017500000134",
            "1.2.250.1.213.1.4.10",
            crate::patient::InsPolicy {
                accept_test_oids: true,
            },
        )
        .unwrap();
        let xml = assertion_xml(
            &settings(),
            VihfSubject {
                professional: &professional,
                mode: AccessMode::Centre15,
                patient: Some(&ins),
            },
            "CN=Signer, O=Test",
            "_abc",
            1_700_000_000_000,
        )
        .unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let value = |name: &str| {
            doc.descendants()
                .find(|n| n.attribute("Name") == Some(name))
                .map(|a| {
                    a.children()
                        .map(|v| {
                            v.text().map(str::to_owned).unwrap_or_else(|| {
                                let c = v.first_element_child().unwrap();
                                format!(
                                    "{}:{}",
                                    c.attribute("code").unwrap(),
                                    c.attribute("codeSystem").unwrap()
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            value("urn:oasis:names:tc:xspa:1.0:subject:subject-id"),
            ["Jeanne <&> URGENTISTE"]
        );
        assert_eq!(
            value("urn:oasis:names:tc:xacml:2.0:resource:resource-id"),
            ["180017500000134^^^&1.2.250.1.213.1.4.10&ISO^NH"]
        );
        assert_eq!(
            value("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"),
            ["centre_15:1.2.250.1.213.1.1.4.248"]
        );
        assert_eq!(
            value("urn:oasis:names:tc:xacml:2.0:subject:role"),
            ["10:1.2.250.1.71.1.2.7", "SM26:1.2.250.1.71.4.2.5"]
        );
        assert_eq!(value("Secteur_Activite"), ["SA01^1.2.250.1.71.4.2.4"]);
        assert_eq!(value("Authentification_Mode"), ["DIRECTE"]);
        assert_eq!(value("LPS_ID_HOMOLOGATION_DMP"), ["TEST-0001"]);
        assert!(
            xml.contains("IssueInstant=\"2023-11-14T22:13:20.000Z\""),
            "{xml}"
        );
        assert!(
            xml.contains("NotOnOrAfter=\"2023-11-14T22:18:20.000Z\""),
            "{xml}"
        );
    }
}
