//! The demo's record service: six sample patients (IPS bundles and CDA documents written
//! for the demo, demo INS OID), served either as the national record (`dev-dmp`: each
//! patient's CDA documents, the VIHF signed by the virtual card) or by the FHIR stand-in
//! (`dev-upstream`), with its PKI and the settings the gateway uses to reach it.

use std::path::Path;

use super::{DemoError, DemoPatient};
use crate::dev_dmp::{DevDmpData, DevDmpOptions, DmpDocument, DmpPatient};
use crate::dev_pki::{Authority, write_file, write_pair};
use crate::dev_upstream::{DevData, DevPatient, DevUpstreamOptions};
use crate::patient::OID_NIR_DEMO;
use crate::upstream::dmp::DmpConfig;
use crate::upstream::{AccessMode, UpstreamConfig};

/// One sample: id, INS, family, given, birth date, gender, file, document, opposed modes,
/// what it demonstrates.
struct Sample {
    id: &'static str,
    ins: &'static str,
    family: &'static str,
    given: &'static str,
    birth_date: &'static str,
    gender: &'static str,
    file: &'static str,
    document: &'static str,
    opposed: &'static [AccessMode],
    demonstrates: &'static str,
    /// The patient's documents in the national record (file, content, kind).
    record: &'static [(&'static str, &'static str, Kind)],
}

/// A document's kind, as the record's metadata says it.
#[derive(Clone, Copy)]
enum Kind {
    IpsFr,
    Vsm,
    VsmPdf,
    Reimbursements,
}

impl Kind {
    /// Type code, its scheme, format code, title.
    fn metadata(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::IpsFr => (
                "60591-5",
                "2.16.840.1.113883.6.1",
                "urn:ihe:pcc:ips:2020",
                "Synthèse médicale",
            ),
            Self::Vsm => (
                "SYNTH",
                "1.2.250.1.213.1.1.4.12",
                "urn:asip:ci-sis:vsm:2012",
                "Volet de synthèse médicale",
            ),
            Self::VsmPdf => (
                "SYNTH",
                "1.2.250.1.213.1.1.4.12",
                "urn:ihe:iti:xds-sd:pdf:2008",
                "Synthèse médicale (PDF)",
            ),
            Self::Reimbursements => (
                "REMB",
                "1.2.250.1.213.1.1.4.12",
                "urn:asip:ci-sis:hr:2019",
                "Historique des remboursements",
            ),
        }
    }
}

const SAMPLES: &[Sample] = &[
    Sample {
        id: "demo-durand",
        ins: "255087511204947",
        family: "DURAND",
        given: "Camille",
        birth_date: "1955-08-21",
        gender: "female",
        file: "durand.json",
        document: include_str!("samples/durand.json"),
        opposed: &[],
        demonstrates: "allergie à la pénicilline (criticité haute), anticoagulant, antécédent d'infarctus",
        record: &[
            (
                "durand.xml",
                include_str!("samples/durand.xml"),
                Kind::IpsFr,
            ),
            (
                "durand-remb.xml",
                include_str!("samples/durand-remb.xml"),
                Kind::Reimbursements,
            ),
        ],
    },
    Sample {
        id: "demo-martin",
        ins: "162036912304592",
        family: "MARTIN",
        given: "Louis",
        birth_date: "1962-03-09",
        gender: "male",
        file: "martin.json",
        document: include_str!("samples/martin.json"),
        opposed: &[],
        record: &[(
            "martin.xml",
            include_str!("samples/martin.xml"),
            Kind::IpsFr,
        )],
        demonstrates: "aucune allergie connue (déclaration explicite)",
    },
    Sample {
        id: "demo-bernard",
        ins: "281111305508733",
        family: "BERNARD",
        given: "Léa",
        birth_date: "1981-11-30",
        gender: "female",
        file: "bernard.json",
        document: include_str!("samples/bernard.json"),
        opposed: &[AccessMode::Centre15],
        record: &[(
            "bernard.xml",
            include_str!("samples/bernard.xml"),
            Kind::IpsFr,
        )],
        demonstrates: "opposée à l'accès du centre 15 (le bris de glace reste possible)",
    },
    Sample {
        id: "demo-petit",
        ins: "147022A00401241",
        family: "PETIT",
        given: "Jules",
        birth_date: "1947-02-11",
        gender: "male",
        file: "petit.json",
        document: include_str!("samples/petit.json"),
        opposed: &[],
        record: &[("petit.xml", include_str!("samples/petit.xml"), Kind::Vsm)],
        demonstrates: "allergies non renseignées (différent de « aucune allergie connue »), INS corse (2A)",
    },
    Sample {
        id: "demo-leroy",
        ins: "172056912345696",
        family: "LEROY",
        given: "Marc",
        birth_date: "1972-05-07",
        gender: "male",
        file: "leroy.xml",
        document: include_str!("samples/leroy.xml"),
        opposed: &[],
        record: &[("leroy.xml", include_str!("samples/leroy.xml"), Kind::IpsFr)],
        demonstrates: "synthèse IPS-FR du DMP en CDA : allergie aux produits de contraste iodés (criticité haute), point de vigilance",
    },
    Sample {
        id: "demo-roux",
        ins: "290013306304255",
        family: "ROUX",
        given: "Inès",
        birth_date: "1990-01-13",
        gender: "female",
        file: "roux.xml",
        document: include_str!("samples/roux.xml"),
        opposed: &[],
        record: &[("roux.xml", include_str!("samples/roux.xml"), Kind::VsmPdf)],
        demonstrates: "synthèse tenue seulement en PDF (document non structuré) : à ouvrir dans le navigateur",
    },
];

/// The demo's case id, as the regulation software of an imaginary SAMU 999 would number it.
pub(super) const CASE_ID: &str = "fr.health.samu999.DEMO-CASE-0001";

/// The sample case the demo's regulation software sends: an RS-EDA `createCaseHealth`
/// (bare) whose one patient is described by the caller with the first sample patient's
/// traits, so the search by traits finds her; `creation` is when the demo was set up.
pub(super) fn sample_case(creation: time::OffsetDateTime) -> serde_json::Value {
    let sample = &SAMPLES[0];
    let sex = if sample.gender == "female" { "F" } else { "M" };
    // The Hub's pattern wants seconds and an explicit offset: no fraction, no "Z".
    let creation = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        creation.year(),
        u8::from(creation.month()),
        creation.day(),
        creation.hour(),
        creation.minute(),
        creation.second()
    );
    serde_json::json!({"createCaseHealth": {
        "caseId": CASE_ID,
        "creation": creation,
        "qualification": {
            "healthMotive": {"code": "M04.01", "label": "Malaise avec perte de connaissance"},
            "details": {"priority": "P0"}
        },
        "location": {},
        "owner": "fr.health.samu999",
        "patient": [{
            "patientId": "fr.health.samu999.patient.DEMO-CASE-0001.1",
            "identity": {
                "strictFeatures": {
                    "birthName": sample.family,
                    "birthDate": sample.birth_date,
                    "sex": sex
                },
                "nonStrictFeatures": {
                    "complete": format!("{} {}", sample.given, sample.family),
                    "firstName": sample.given
                }
            },
            "detail": {
                "medicalHistory": "Infarctus il y a cinq ans, selon sa fille",
                "treatment": "Un anticoagulant, nom inconnu de l'appelante"
            }
        }],
        "medicalNote": [{
            "patientId": "fr.health.samu999.patient.DEMO-CASE-0001.1",
            "operator": {"role": "ARM"},
            "medicalNoteId": "fr.health.samu999.medicalNote.DEMO-CASE-0001.1",
            "freetext": "Retrouvée inconsciente à domicile par sa fille, respire."
        }]
    }})
}

/// Which stand-in the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DemoUpstream {
    /// The national record's protocol (SOAP/XDS.b, the card signing the VIHF).
    Dmp,
    /// The FHIR stand-in.
    Fhir,
}

/// The stand-in's files, by protocol.
pub(crate) enum StandIn {
    /// dev-dmp.
    Dmp(DevDmpOptions),
    /// dev-upstream.
    Fhir(DevUpstreamOptions),
}

/// The demo record service, ready to start.
pub(super) struct RecordService {
    /// What the gateway's `[upstream]` says.
    pub config: UpstreamConfig,
    /// Its `[dmp]`, on the DMP path.
    pub dmp: Option<DmpConfig>,
    /// The patients, for `demo.json`.
    pub patients: Vec<DemoPatient>,
    /// Bound on 127.0.0.1 (port named in `config`).
    pub listener: std::net::TcpListener,
    /// Its files.
    pub options: StandIn,
}

/// Writes the samples, the data file and the PKI under `dir/upstream` and `pki_dir`.
pub(super) fn record_service(
    dir: &Path,
    pki_dir: &Path,
    protocol: DemoUpstream,
    card_ca: &Path,
) -> Result<RecordService, DemoError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::Directory { path, source }
    };
    let data_dir = dir.join("upstream");
    std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
    let mut patients = Vec::new();
    let mut record = Vec::new();
    let mut shown = Vec::new();
    for sample in SAMPLES {
        write_file(&data_dir.join(sample.file), sample.document, 0o644)?;
        let mut documents = Vec::new();
        for (file, content, kind) in sample.record {
            write_file(&data_dir.join(file), content, 0o644)?;
            let (type_code, type_scheme, format_code, title) = kind.metadata();
            documents.push(DmpDocument {
                file: (*file).into(),
                unique_id: None,
                type_code: type_code.into(),
                type_scheme: type_scheme.into(),
                format_code: format_code.into(),
                creation_time: "20261015090000".into(),
                title: title.into(),
                author: Some("Sophie DEMO-TRAITANTE".into()),
                masked: false,
                filed_under: None,
            });
        }
        record.push(DmpPatient {
            ins: sample.ins.into(),
            ins_oid: OID_NIR_DEMO.into(),
            family: sample.family.into(),
            given: vec![sample.given.into()],
            birth_date: sample.birth_date.into(),
            gender: if sample.gender == "female" { "F" } else { "M" }.into(),
            closed: false,
            opposed: sample.opposed.to_vec(),
            masked_readable_in: Vec::new(),
            documents,
        });
        patients.push(DevPatient {
            id: sample.id.into(),
            ins: sample.ins.into(),
            ins_oid: OID_NIR_DEMO.into(),
            family: sample.family.into(),
            given: vec![sample.given.into()],
            birth_date: sample.birth_date.into(),
            gender: sample.gender.into(),
            bundle: sample.file.into(),
            opposed: sample.opposed.to_vec(),
            blocked_professionals: Vec::new(),
            record_closed: false,
        });
        shown.push(DemoPatient {
            ins: sample.ins.into(),
            ins_oid: OID_NIR_DEMO.into(),
            name: format!("{} {}", sample.family, sample.given),
            demonstrates: sample.demonstrates.into(),
        });
    }
    let data = data_dir.join("patients.json");
    let text = serde_json::to_string_pretty(&DevData { patients })
        .map_err(|e| DemoError::Config(e.to_string()))?;
    write_file(&data, &text, 0o644)?;
    let record_data = data_dir.join("record.json");
    let text = serde_json::to_string_pretty(&DevDmpData { patients: record })
        .map_err(|e| DemoError::Config(e.to_string()))?;
    write_file(&record_data, &text, 0o644)?;

    let record_ca = Authority::new("samu-gateway demo record service CA")?;
    let record_ca_path = pki_dir.join("record-ca.pem");
    write_file(&record_ca_path, record_ca.cert_pem(), 0o644)?;
    let (record_cert, record_key) = write_pair(
        pki_dir,
        "record-service",
        &record_ca.issue_server(&["localhost", "127.0.0.1"])?,
    )?;
    let structures = Authority::new("samu-gateway demo structure CA")?;
    let structure_ca = pki_dir.join("structure-ca.pem");
    write_file(&structure_ca, structures.cert_pem(), 0o644)?;
    let (client_cert, client_key) = write_pair(
        pki_dir,
        "structure",
        &structures.issue_client("SAMU de démonstration")?,
    )?;
    let assertion_key = pki_dir.join("assertion.key");
    let _ = std::fs::remove_file(&assertion_key);
    let signer = crate::audit::Signer::generate(&assertion_key)?;
    let assertion_pub = pki_dir.join("assertion.key.pub");
    write_file(&assertion_pub, signer.public_key_hex(), 0o644)?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io(dir))?;
    let port = listener.local_addr().map_err(io(dir))?.port();
    if protocol == DemoUpstream::Dmp {
        let config: UpstreamConfig = toml::from_str("protocol = \"dmp\"\naccept_test_ins = true\n")
            .map_err(|e| DemoError::Config(e.to_string()))?;
        let dmp: DmpConfig = toml::from_str(&format!(
            "base_url = \"https://localhost:{port}\"\nserver_ca = \"{}\"\nspecialty = \"SM59\"\nhomologation_number = \"DEMO-NON-HOMOLOGUE\"\n",
            record_ca_path.display(),
        ))
        .map_err(|e| DemoError::Config(e.to_string()))?;
        return Ok(RecordService {
            config,
            dmp: Some(dmp),
            patients: shown,
            listener,
            options: StandIn::Dmp(DevDmpOptions {
                listen: ([127, 0, 0, 1], port).into(),
                data: record_data,
                cert: record_cert,
                key: record_key,
                // DIRECTE: the card authenticates the connection (and signs the VIHF).
                client_cas: vec![card_ca.to_owned()],
                signer_cas: vec![card_ca.to_owned()],
                record: None,
            }),
        });
    }
    let config: UpstreamConfig = toml::from_str(&format!(
        "base_url = \"https://localhost:{port}\"\nserver_ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nassertion_key = \"{}\"\naccept_test_ins = true\n",
        record_ca_path.display(),
        client_cert.display(),
        client_key.display(),
        assertion_key.display(),
    ))
    .map_err(|e| DemoError::Config(e.to_string()))?;
    Ok(RecordService {
        config,
        dmp: None,
        patients: shown,
        listener,
        options: StandIn::Fhir(DevUpstreamOptions {
            listen: ([127, 0, 0, 1], port).into(),
            data,
            cert: record_cert,
            key: record_key,
            client_ca: structure_ca,
            assertion_keys: vec![assertion_pub],
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's case reads as the regulation software meant it: the first sample
    /// patient's traits, so the search by traits finds her.
    #[test]
    fn the_sample_case_is_a_valid_message_about_the_first_sample_patient() {
        let text = serde_json::to_vec(&sample_case(time::OffsetDateTime::now_utc())).unwrap();
        let case = crate::case::hub::parse(&text).unwrap();
        assert_eq!(case.case_id, CASE_ID);
        assert_eq!(case.priority.as_deref(), Some("P0"));
        let [patient] = case.patients.as_slice() else {
            panic!("one patient: {case:?}");
        };
        assert_eq!(patient.birth_name.as_deref(), Some(SAMPLES[0].family));
        assert_eq!(patient.first_name.as_deref(), Some(SAMPLES[0].given));
        assert_eq!(patient.birth_date.as_deref(), Some(SAMPLES[0].birth_date));
        assert_eq!(patient.sex, Some(crate::case::hub::Sex::Female));
        assert_eq!(patient.notes.len(), 1);
    }
}
