//! The demo's record service: six sample patients (IPS bundles and CDA documents written
//! for the demo, demo INS OID), the development upstream's PKI, and the `[upstream]` settings the
//! gateway uses to reach it.

use std::path::Path;

use super::{DemoError, DemoPatient};
use crate::dev_pki::{Authority, write_file, write_pair};
use crate::dev_upstream::{DevData, DevPatient, DevUpstreamOptions};
use crate::patient::OID_NIR_DEMO;
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
        demonstrates: "synthèse tenue seulement en PDF (document non structuré) : à ouvrir dans le navigateur",
    },
];

/// The demo record service, ready to start.
pub(super) struct RecordService {
    /// What the gateway's `[upstream]` says.
    pub config: UpstreamConfig,
    /// The patients, for `demo.json`.
    pub patients: Vec<DemoPatient>,
    /// Bound on 127.0.0.1 (port named in `config`).
    pub listener: std::net::TcpListener,
    /// Its files.
    pub options: DevUpstreamOptions,
}

/// Writes the samples, the data file and the PKI under `dir/upstream` and `pki_dir`.
pub(super) fn record_service(dir: &Path, pki_dir: &Path) -> Result<RecordService, DemoError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::Directory { path, source }
    };
    let data_dir = dir.join("upstream");
    std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
    let mut patients = Vec::new();
    let mut shown = Vec::new();
    for sample in SAMPLES {
        write_file(&data_dir.join(sample.file), sample.document, 0o644)?;
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
        patients: shown,
        listener,
        options: DevUpstreamOptions {
            listen: ([127, 0, 0, 1], port).into(),
            data,
            cert: record_cert,
            key: record_key,
            client_ca: structure_ca,
            assertion_keys: vec![assertion_pub],
        },
    })
}
