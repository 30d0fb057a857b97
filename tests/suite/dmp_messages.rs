//! The DMP's messages (issue 18): the requests the gateway writes, golden and validated
//! against the SOAP, WS-Addressing, WS-Security, SAML, ebRS and XDS.b schemas (when
//! `../shared/fixtures` is there); the answers it reads, through `dmp inspect` on the
//! project's own saved messages, MTOM included; faults and refusals named.

use std::path::{Path, PathBuf};
use std::process::Command;

use samu_gateway::upstream::dmp::soap::{self, Addressing};
use samu_gateway::upstream::dmp::xds;
use serde_json::Value;

use crate::support::BIN;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dmp")
        .join(name)
}

/// What writes a message body.
type BodyWriter = Box<dyn FnOnce(&mut quick_xml::Writer<Vec<u8>>) -> std::io::Result<()>>;

/// A stand-in for a signed assertion: the envelope must carry it byte for byte.
const ASSERTION: &str = "<Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_a\" IssueInstant=\"2026-12-04T06:00:00.000Z\" Version=\"2.0\"><Issuer>CN=x</Issuer></Assertion>";

fn find_documents(assertion: &str) -> String {
    soap::envelope(
        Addressing {
            action: xds::FIND_ACTION,
            to: "https://dmp.example/registry",
            message_id: "urn:uuid:1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
        },
        assertion,
        xds::find_documents_body(
            "180017500000134^^^&1.2.250.1.213.1.4.10&ISO^NH",
            &[
                "60591-5^^2.16.840.1.113883.6.1".into(),
                "SYNTH^^1.2.250.1.213.1.1.4.12".into(),
            ],
        ),
    )
    .unwrap()
}

fn retrieve(assertion: &str) -> String {
    soap::envelope(
        Addressing {
            action: xds::RETRIEVE_ACTION,
            to: "https://dmp.example/repository",
            message_id: "urn:uuid:2b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
        },
        assertion,
        xds::retrieve_body(&[
            ("1.2.250.1.999.7.1".into(), "1.2.250.1.999.7.2.1".into()),
            ("1.2.250.1.999.7.9".into(), "1.2.250.1.999.7.2.3".into()),
        ]),
    )
    .unwrap()
}

/// The FindDocuments request, exactly: namespaces, the action, the slots and their
/// quoting (a single value in quotes, a list in parentheses).
#[test]
fn the_find_documents_request_is_the_golden_one() {
    let expected = concat!(
        "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa=\"http://www.w3.org/2005/08/addressing\">",
        "<soap:Header>",
        "<wsa:Action soap:mustUnderstand=\"true\">urn:ihe:iti:2007:RegistryStoredQuery</wsa:Action>",
        "<wsa:MessageID>urn:uuid:1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b</wsa:MessageID>",
        "<wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>",
        "<wsa:To soap:mustUnderstand=\"true\">https://dmp.example/registry</wsa:To>",
        "<wsse:Security xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd\" soap:mustUnderstand=\"true\">",
        "<Assertion xmlns=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_a\" IssueInstant=\"2026-12-04T06:00:00.000Z\" Version=\"2.0\"><Issuer>CN=x</Issuer></Assertion>",
        "</wsse:Security>",
        "</soap:Header>",
        "<soap:Body>",
        "<query:AdhocQueryRequest xmlns:query=\"urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0\" xmlns:rim=\"urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0\">",
        "<query:ResponseOption returnComposedObjects=\"true\" returnType=\"LeafClass\"/>",
        "<rim:AdhocQuery id=\"urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d\">",
        "<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'180017500000134^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH'</rim:Value></rim:ValueList></rim:Slot>",
        "<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>",
        "<rim:Slot name=\"$XDSDocumentEntryTypeCode\"><rim:ValueList><rim:Value>('60591-5^^2.16.840.1.113883.6.1')</rim:Value><rim:Value>('SYNTH^^1.2.250.1.213.1.1.4.12')</rim:Value></rim:ValueList></rim:Slot>",
        "</rim:AdhocQuery>",
        "</query:AdhocQueryRequest>",
        "</soap:Body>",
        "</soap:Envelope>",
    );
    assert_eq!(find_documents(ASSERTION), expected);
    // A quote inside a value is doubled, never closing the value early.
    let body = soap::envelope(
        Addressing {
            action: xds::FIND_ACTION,
            to: "https://d",
            message_id: "urn:uuid:x",
        },
        ASSERTION,
        xds::find_documents_body("a'b", &[]),
    )
    .unwrap();
    assert!(body.contains("<rim:Value>'a''b'</rim:Value>"), "{body}");
    assert!(
        !body.contains("$XDSDocumentEntryTypeCode"),
        "no type slot when no type is asked"
    );
}

#[test]
fn the_retrieve_request_asks_for_every_document_at_once() {
    let xml = retrieve(ASSERTION);
    assert!(xml.contains(
        "<xdsb:RetrieveDocumentSetRequest xmlns:xdsb=\"urn:ihe:iti:xds-b:2007\"><xdsb:DocumentRequest><xdsb:RepositoryUniqueId>1.2.250.1.999.7.1</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>1.2.250.1.999.7.2.1</xdsb:DocumentUniqueId></xdsb:DocumentRequest><xdsb:DocumentRequest><xdsb:RepositoryUniqueId>1.2.250.1.999.7.9</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>1.2.250.1.999.7.2.3</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"
    ), "{xml}");
    assert!(xml.contains(">urn:ihe:iti:2007:RetrieveDocumentSet</wsa:Action>"));
}

/// Every request the gateway sends, with a real signed assertion inside, validates
/// against the published schemas of each layer.
#[test]
fn every_request_validates_against_the_schemas() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/dmp");
    if !fixtures.join("dmp-all.xsd").exists() {
        crate::support::skipped(&format!(
            "dmp_messages: {} is absent; the requests were not validated against the schemas",
            fixtures.display()
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (assertion, _) = crate::support::dmp::signed_vihf(dir.path(), "bris_de_glace");
    // The shared fixtures' own schema of a whole message: every layer imported, in the
    // order libxml2 needs.
    let wrapper = fixtures.join("dmp-all.xsd");
    let validate = |name: &str, xml: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, xml).unwrap();
        Command::new("xmllint")
            .args(["--noout", "--nonet", "--schema"])
            .arg(&wrapper)
            .arg(&file)
            .env("XML_CATALOG_FILES", fixtures.join("ws/catalog.xml"))
            .output()
            .expect("xmllint runs")
    };
    let patients = |action: &str, body: BodyWriter| {
        soap::envelope(
            Addressing {
                action,
                to: "https://dmp.example/patients",
                message_id: "urn:uuid:3b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
            },
            &assertion,
            body,
        )
        .unwrap()
    };
    use samu_gateway::upstream::dmp::hl7v3;
    let traits = samu_gateway::patient::Traits {
        birth_name: "SYNTHETIQUE".into(),
        first_names: "Camille".into(),
        birth_date: "1980-01-17".into(),
        sex: samu_gateway::patient::Sex::F,
        birthplace: None,
    };
    // The HL7 v3 bodies have no schema among the fixtures: their envelopes and headers are
    // checked, their bodies by the golden tests.
    for (name, xml) in [
        ("find.xml", find_documents(&assertion)),
        ("retrieve.xml", retrieve(&assertion)),
        (
            "existence.xml",
            patients(
                hl7v3::EXISTENCE_ACTION,
                Box::new(hl7v3::existence_body(
                    transmission(),
                    "1.2.250.1.213.1.4.10",
                    "180017500000134",
                )),
            ),
        ),
        (
            "search.xml",
            patients(
                hl7v3::SEARCH_ACTION,
                Box::new(hl7v3::search_body(transmission(), &traits)),
            ),
        ),
    ] {
        let out = validate(name, &xml);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check bites: a Body element the XDS.b schema does not allow.
    let broken = retrieve(&assertion).replace("xdsb:DocumentUniqueId>", "xdsb:DocumentId>");
    let out = validate("broken.xml", &broken);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DocumentId"));
}

fn inspect(file: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["dmp", "inspect", "--json"])
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dmp_inspect_reads_a_document_list_an_mtom_retrieval_and_a_fault() {
    let (code, out, err) = inspect(&fixture("td31-answer.xml"));
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["message"], "td3.1-answer");
    assert_eq!(json["status"], "success");
    let documents = json["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 3);
    assert_eq!(documents[0]["unique_id"], "1.2.250.1.999.7.2.1");
    assert_eq!(documents[0]["repository_unique_id"], "1.2.250.1.999.7.1");
    assert_eq!(documents[0]["type_code"]["code"], "60591-5");
    assert_eq!(documents[0]["type_code"]["scheme"], "2.16.840.1.113883.6.1");
    assert_eq!(documents[0]["format_code"]["code"], "urn:ihe:pcc:ips:2020");
    assert_eq!(documents[0]["creation_time"], "20261120090000");
    assert_eq!(documents[0]["authors"][0], "Jeanne TRAITANTE");
    assert_eq!(
        documents[1]["format_code"]["code"],
        "urn:ihe:iti:xds-sd:pdf:2008"
    );
    assert_eq!(
        documents[2]["confidentiality"][1]["code"],
        "INVISIBLE_PATIENT"
    );
    // Entries are read where ebRIM puts them only: one nested in another entry (which
    // made each entry's reading walk the rest of the answer) is not an entry.
    let text = std::fs::read_to_string(fixture("td31-answer.xml")).unwrap();
    let first = text.find("<rim:ExtrinsicObject").unwrap();
    let inner = text[first..].find('>').unwrap() + first + 1;
    let end = text.find("</rim:ExtrinsicObject>").unwrap() + "</rim:ExtrinsicObject>".len();
    let nested = format!("{}{}{}", &text[..inner], &text[first..end], &text[inner..]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nested.xml"), nested).unwrap();
    let (code, out, err) = inspect(&dir.path().join("nested.xml"));
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["documents"].as_array().unwrap().len(), 3);

    let (code, out, err) = inspect(&fixture("td32-answer.mtom"));
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["message"], "td3.2-answer");
    let retrieved = &json["retrieved"][0];
    assert_eq!(retrieved["unique_id"], "1.2.250.1.999.7.2.1");
    assert_eq!(retrieved["mime_type"], "text/xml");
    // The MIME part is the project's level-1 text document, byte for byte (its last
    // line end belongs to the boundary).
    let cda = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cda/level-1-text.xml"),
    )
    .unwrap();
    let cda = cda.strip_suffix(b"\n").unwrap();
    assert_eq!(retrieved["bytes"], cda.len());
    assert_eq!(
        retrieved["sha256"],
        samu_gateway::encoding::hex(&samu_gateway::encoding::sha256(cda))
    );
    // The registry entry's size and SHA-1 (written in capitals there) are what was
    // retrieved.
    assert_eq!(documents[0]["size"], cda.len());
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cda);
    assert_eq!(
        documents[0]["hash"],
        samu_gateway::encoding::hex(sha1.as_ref())
    );
    assert_eq!(documents[1]["hash"], Value::Null);

    let (code, out, err) = inspect(&fixture("fault-invalid-signature.xml"));
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["fault"]["code"], "DMPInvalidSignatureCertificate");
    assert_eq!(json["fault"]["codes"][0], "Sender");
}

/// What is not a DMP message is refused with its defect, exit 1, nothing of it echoed.
#[test]
fn dmp_inspect_refuses_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "html.xml",
            "<html><body>SECRETVALUE</body></html>".to_owned(),
            "not a SOAP 1.2 Envelope",
        ),
        (
            "dtd.xml",
            "<!DOCTYPE e [<!ENTITY s \"SECRETVALUE\">]><e>&s;</e>".to_owned(),
            "not well-formed XML",
        ),
        (
            "truncated.xml",
            std::fs::read_to_string(fixture("td31-answer.xml")).unwrap()[..2_000].to_owned(),
            "not well-formed XML",
        ),
        (
            "mtom-missing-part.mtom",
            String::from_utf8(std::fs::read(fixture("td32-answer.mtom")).unwrap())
                .unwrap()
                .replace("doc-1@samu-gateway.test>", "other@x>"),
            "MIME part it points to is missing",
        ),
        (
            // Two documents naming one part: the part is used once, never copied again.
            "mtom-part-named-twice.mtom",
            {
                let text =
                    String::from_utf8(std::fs::read(fixture("td32-answer.mtom")).unwrap()).unwrap();
                let start = text.find("<xdsb:DocumentResponse>").unwrap();
                let end = text.find("</xdsb:DocumentResponse>").unwrap()
                    + "</xdsb:DocumentResponse>".len();
                let twice = format!("{}{}", &text[start..end], &text[start..end]);
                text.replacen(&text[start..end], &twice, 1)
            },
            "MIME part it points to is missing or was already used",
        ),
        (
            // An id that would swell the access's audit record past its bound.
            "huge-unique-id.xml",
            std::fs::read_to_string(fixture("td31-answer.xml"))
                .unwrap()
                .replace(
                    "1.2.250.1.999.7.2.1",
                    &format!("1.2.250.{}", "9".repeat(300)),
                ),
            "document 0 of the list: uniqueId is longer than 256 characters",
        ),
        (
            "no-unique-id.xml",
            std::fs::read_to_string(fixture("td31-answer.xml"))
                .unwrap()
                .replace(
                    "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
                    "urn:uuid:0",
                ),
            "has no uniqueId",
        ),
    ];
    for (name, content, said) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, &content).unwrap();
        let (code, out, err) = inspect(&file);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains(said), "{name}: {err}");
        assert!(
            !err.contains("SECRETVALUE") && !err.contains("SYNTHETIQUE"),
            "{err}"
        );
    }
}

fn transmission() -> samu_gateway::upstream::dmp::hl7v3::Transmission<'static> {
    samu_gateway::upstream::dmp::hl7v3::Transmission {
        message_id: "7c3b0d0e-5f7a-4f44-9d0a-000000000000",
        query_id: "7c3b0d0e-5f7a-4f44-9d0a-000000000002",
        created: "20261204060000",
        structure_id: "1750000000",
    }
}

/// TD0.2 and TD0.5 bodies, exactly: the transmission wrapper, the reason, the query
/// parameters in the schema's order.
#[test]
fn the_patient_requests_are_the_golden_ones() {
    use samu_gateway::upstream::dmp::hl7v3;
    let body = |write: BodyWriter| {
        let mut w = quick_xml::Writer::new(Vec::new());
        write(&mut w).unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    };
    let wrapper = |root: &str| {
        format!(
            "<{root} xmlns=\"urn:hl7-org:v3\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ITSVersion=\"XML_1.0\">\
             <id root=\"7c3b0d0e-5f7a-4f44-9d0a-000000000000\"/><creationTime value=\"20261204060000\"/>\
             <interactionId root=\"2.16.840.1.113883.1.6\" extension=\"{root}\"/>\
             <processingCode code=\"P\"/><processingModeCode code=\"T\"/><acceptAckCode code=\"AL\"/>\
             <receiver typeCode=\"RCV\"><device classCode=\"DEV\" determinerCode=\"INSTANCE\"><id root=\"1.2.250.1.213.4.1.1.1\"/><softwareName>DMP</softwareName></device></receiver>\
             <sender typeCode=\"SND\"><device classCode=\"DEV\" determinerCode=\"INSTANCE\"><id root=\"1.2.250.1.71.4.2.2\" extension=\"1750000000\"/><softwareName>samu-gateway</softwareName></device></sender>\
             <controlActProcess classCode=\"CACT\" moodCode=\"EVN\">"
        )
    };
    let existence = body(Box::new(hl7v3::existence_body(
        transmission(),
        "1.2.250.1.213.1.4.10",
        "180017500000134",
    )));
    assert_eq!(
        existence,
        format!(
            "{}<reasonCode code=\"TEST_EXST\" codeSystem=\"1.2.250.1.213.1.1.4.11\" displayName=\"Test d&apos;existence de dossier\"/>\
             <queryByParameter><queryId root=\"7c3b0d0e-5f7a-4f44-9d0a-000000000002\"/><statusCode code=\"new\"/><parameterList>\
             <patientIdentifier><value root=\"1.2.250.1.213.1.4.10\" extension=\"180017500000134\"/><semanticsText>Patient.id</semanticsText></patientIdentifier>\
             </parameterList></queryByParameter></controlActProcess></PRPA_IN201307UV02>",
            wrapper("PRPA_IN201307UV02")
        )
    );
    let traits = samu_gateway::patient::Traits {
        birth_name: "DE LA FONTAINE".into(),
        first_names: "Jean Baptiste".into(),
        birth_date: "1980-01-17".into(),
        sex: samu_gateway::patient::Sex::M,
        birthplace: None,
    };
    let search = body(Box::new(hl7v3::search_body(transmission(), &traits)));
    assert_eq!(
        search,
        format!(
            "{}<code code=\"PRPA_TE201305UV02\" codeSystem=\"2.16.840.1.113883.1.6\"/>\
             <queryByParameter><queryId root=\"7c3b0d0e-5f7a-4f44-9d0a-000000000002\"/><statusCode code=\"new\"/><parameterList>\
             <livingSubjectAdministrativeGender><value code=\"M\" codeSystem=\"2.16.840.1.113883.5.1\"/><semanticsText>LivingSubject.administrativeGender</semanticsText></livingSubjectAdministrativeGender>\
             <livingSubjectBirthTime><value value=\"19800117\"/><semanticsText>LivingSubject.birthTime</semanticsText></livingSubjectBirthTime>\
             <livingSubjectName><value><family qualifier=\"BR\">DE LA FONTAINE</family><given>Jean</given></value><semanticsText>LivingSubject.name</semanticsText></livingSubjectName>\
             </parameterList></queryByParameter></controlActProcess></PRPA_IN201305UV02>",
            wrapper("PRPA_IN201305UV02")
        )
    );
}

#[test]
fn dmp_inspect_reads_the_patient_answers() {
    let (code, out, err) = inspect(&fixture("td02-answer.xml"));
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["message"], "td0.2-answer");
    let existence = &json["existence"];
    assert_eq!(existence["found"], true);
    assert_eq!(existence["closed"], false);
    assert_eq!(existence["authorisation"], "VALIDE");
    assert_eq!(existence["treating_physician"], false);
    // The flag set to true, not the one set to false.
    assert_eq!(
        existence["oppositions"],
        serde_json::json!(["OPPOSITION_ACCES_URGENCE"])
    );

    let (code, out, err) = inspect(&fixture("td05-answer.xml"));
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    let candidates = json["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2);
    assert_eq!(candidates[0]["ins"], "180017500000134");
    assert_eq!(candidates[0]["oid"], "1.2.250.1.213.1.4.10");
    assert_eq!(candidates[0]["match_percent"], 100);
    assert_eq!(candidates[1]["match_percent"], 80);
    // The birth date tells namesakes apart: read as written, never masked.
    assert_eq!(candidates[0]["birth_date"], "19800117");
    assert_eq!(candidates[1]["oppositions"][0], "OPPOSITION_ACCES_URGENCE");

    // Not found, closed, refused: each said.
    let dir = tempfile::tempdir().unwrap();
    let td02 = std::fs::read_to_string(fixture("td02-answer.xml")).unwrap();
    for (name, text, check) in [
        (
            "nf.xml",
            td02.replace(
                "<queryResponseCode code=\"OK\"/>",
                "<queryResponseCode code=\"NF\"/>",
            ),
            "\"found\": false",
        ),
        (
            "closed.xml",
            td02.replace(
                "<statusCode code=\"active\"/>",
                "<statusCode code=\"terminated\"/>",
            ),
            "\"closed\": true",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, out, err) = inspect(&file);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(check), "{out}");
    }
    // Found, and no patient named: refused, never read as an open, unopposed record.
    let start = td02.find("<subject1").unwrap();
    let end = td02.find("</subject1>").unwrap() + "</subject1>".len();
    let file = dir.path().join("nobody.xml");
    std::fs::write(&file, format!("{}{}", &td02[..start], &td02[end..])).unwrap();
    let (code, _, err) = inspect(&file);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("names no patient"), "{err}");
    let refused = td02.replace(
        "<acknowledgement typeCode=\"AA\">",
        "<acknowledgement typeCode=\"AE\"><acknowledgementDetail typeCode=\"E\"><code code=\"DMPAccessDenied\"/><text>SYNTHETIQUE</text></acknowledgementDetail>",
    );
    let file = dir.path().join("refused.xml");
    std::fs::write(&file, refused).unwrap();
    let (code, _, err) = inspect(&file);
    assert_eq!(code, 1);
    assert!(
        err.contains("the DMP refused the request (DMPAccessDenied)"),
        "{err}"
    );
    assert!(!err.contains("SYNTHETIQUE"), "{err}");
    // A search whose query failed (QE) under an accepted message: an error, not "nobody
    // matches" (before, it read as no candidate).
    let td05 = std::fs::read_to_string(fixture("td05-answer.xml")).unwrap();
    let failed = td05.replace(
        "<queryResponseCode code=\"OK\"/>",
        "<queryResponseCode code=\"QE\"/>",
    );
    assert_ne!(failed, td05);
    let file = dir.path().join("query-error.xml");
    std::fs::write(&file, failed).unwrap();
    let (code, _, err) = inspect(&file);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("query response code QE"), "{err}");
}

/// The project's saved DMP messages, every one `dmp inspect` reads.
fn corpus() -> Vec<Vec<u8>> {
    [
        "td02-answer.xml",
        "td05-answer.xml",
        "td31-answer.xml",
        "td32-answer.mtom",
        "fault-invalid-signature.xml",
    ]
    .iter()
    .map(|name| std::fs::read(fixture(name)).unwrap())
    .collect()
}

fn inspect_in_process(bytes: Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _ = runtime.block_on(samu_gateway::upstream::dmp::inspect::inspect(bytes));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Answers with bytes flipped, cut or inserted never panic the readers (every peer
    /// may be hostile; the DMP's answers included).
    #[test]
    fn dmp_answers_with_bytes_mutated_never_panic(
        file in proptest::prelude::any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>(), 0u8..3), 1..6),
    ) {
        let all = corpus();
        let mut bytes = all[file.index(all.len())].clone();
        crate::support::mutate(&mut bytes, edits);
        inspect_in_process(bytes);
    }

    /// Structure-aware: whole elements removed, doubled or moved inside another; the
    /// documents stay well-formed, so the readers' own checks are what is exercised.
    #[test]
    fn dmp_answers_with_elements_removed_or_doubled_never_panic(
        file in proptest::prelude::any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0u8..3), 1..4),
    ) {
        let all = corpus();
        let mut text = String::from_utf8(all[file.index(all.len())].clone()).unwrap();
        for (at, kind) in edits {
            // The MTOM body: mutate its envelope part only, as text around it stays.
            let ranges: Vec<std::ops::Range<usize>> = {
                let start = text.find("<soap:Envelope").or_else(|| text.find("<env:Envelope")).unwrap_or(0);
                let end = text.rfind("Envelope>").map_or(text.len(), |e| e + "Envelope>".len());
                let Ok(doc) = roxmltree::Document::parse(&text[start..end]) else { break };
                doc.descendants()
                    .filter(|n| n.is_element())
                    .skip(1)
                    .map(|n| n.range().start + start..n.range().end + start)
                    .collect()
            };
            if ranges.is_empty() { break; }
            let range = ranges[at.index(ranges.len())].clone();
            let element = text[range.clone()].to_owned();
            match kind {
                0 => text.replace_range(range, ""),
                1 => text.insert_str(range.end, &element),
                _ => {
                    // Into its own first child's place: nesting it one level deeper.
                    let inner = element.find('>').map_or(range.end, |i| range.start + i + 1);
                    text.insert_str(inner, &element);
                }
            }
        }
        inspect_in_process(text.into_bytes());
    }
}
