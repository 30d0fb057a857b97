//! The OpenAPI document is generated from the routes and cannot drift from them.

use crate::support;

use reqwest::StatusCode;
use support::{DESK_A, Gateway};

#[tokio::test]
async fn every_documented_operation_is_served() {
    let gateway = Gateway::start();
    let client = gateway.client(Some(DESK_A));
    let (_, doc) = support::get_json(&client, &gateway.url("/api/v1/openapi.json")).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let request = client.request(method.to_uppercase().parse().unwrap(), gateway.url(path));
            let status = request.send().await.unwrap().status();
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but answers {status}"
            );
        }
    }
    documented.sort();
    assert_eq!(
        documented,
        [
            "DELETE /api/v1/desks/{desk}/case",
            "DELETE /api/v1/grants/{grant_id}",
            "DELETE /api/v1/session",
            "GET /",
            "GET /api/v1/case",
            "GET /api/v1/compliance/accesses/{seq}",
            "GET /api/v1/compliance/downloads/{ticket}",
            "GET /api/v1/compliance/pending",
            "GET /api/v1/compliance/report",
            "GET /api/v1/csrf-token",
            "GET /api/v1/desk",
            "GET /api/v1/desk/events",
            "GET /api/v1/grants/{grant_id}/document",
            "GET /api/v1/grants/{grant_id}/documents/{unique_id}",
            "GET /api/v1/grants/{grant_id}/documents/{unique_id}/pdf",
            "GET /api/v1/grants/{grant_id}/summary",
            "GET /api/v1/openapi.json",
            "GET /api/v1/session",
            "GET /assets/app.css",
            "GET /assets/app.js",
            "GET /assets/common.js",
            "GET /assets/compliance.js",
            "GET /assets/icon.svg",
            "GET /conformite",
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "POST /api/v1/break-glass",
            "POST /api/v1/compliance/downloads",
            "POST /api/v1/compliance/export",
            "POST /api/v1/compliance/reviews",
            "POST /api/v1/compliance/search",
            "POST /api/v1/desks/{desk}/case",
            "POST /api/v1/patients/search",
            "POST /api/v1/session",
            "PUT /api/v1/roster",
        ]
    );
    assert!(
        doc["components"]["schemas"]["ApiError"].is_object(),
        "refusals are documented"
    );
    // The break-glass answer documents the summary it carries, down to its statuses and
    // the counts of what the document got wrong.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Delivered"]["properties"]["summary"]["$ref"],
        "#/components/schemas/CriticalSummary"
    );
    assert_eq!(
        schemas["CriticalSummary"]["properties"]["allergies"]["$ref"],
        "#/components/schemas/Section_Allergy"
    );
    let statuses = schemas["SectionStatus"]["enum"].as_array().unwrap();
    assert!(statuses.contains(&"conflicting".into()), "{statuses:?}");
    for count in [
        "unlisted_items",
        "duplicate_entries",
        "other_person_entries",
        "unreadable_entries",
    ] {
        assert!(
            schemas["Section_Allergy"]["properties"][count].is_object(),
            "{count} documented"
        );
    }
    let defects = schemas["DocumentDefects"]["properties"]
        .as_object()
        .unwrap();
    assert!(
        defects.contains_key("bad_attachments") && defects.contains_key("other_person_entries")
    );
    // A level-1 document's PDF is its own operation, never inside the summary JSON.
    assert!(
        doc["paths"]["/api/v1/grants/{grant_id}/document"]["get"]["responses"]["200"]["content"]
            ["application/pdf"]
            .is_object()
    );
    assert!(
        schemas["Unstructured"]["properties"]
            .get("content")
            .is_none(),
        "the PDF's bytes are not documented as part of the summary"
    );
    // The INS the document carries is never sent to the screen, nor documented as sent.
    assert!(
        schemas["DocumentPatient"]["properties"]
            .get("ins")
            .is_none()
    );

    // Each search documents its own body and answer, under its own operation id.
    let search = |path: &str| &doc["paths"][path]["post"];
    assert_eq!(
        search("/api/v1/patients/search")["operationId"],
        "search_patients"
    );
    assert_eq!(
        search("/api/v1/compliance/search")["operationId"],
        "search_audit_records"
    );
    assert_eq!(
        search("/api/v1/compliance/search")["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/AuditSearchRequest"
    );
    assert_eq!(
        search("/api/v1/patients/search")["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PatientSearchRequest"
    );
    // How to authenticate, and under which licence.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in [
        "workstationCertificate",
        "sessionCookie",
        "sessionBearer",
        "csrfHeader",
    ] {
        assert!(schemes.contains_key(scheme), "{scheme} declared");
    }
    assert_eq!(schemes["workstationCertificate"]["type"], "mutualTLS");
    assert!(doc["info"]["license"]["name"].is_string());
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );

    // And an independent validator agrees the document is valid OpenAPI.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let (valid, stdout, stderr) = support::validators::run("openapi.py", &path);
    assert!(valid, "{stdout}{stderr}");
}

/// The validator catches what this document once got wrong: two operations sharing an id.
#[test]
fn the_openapi_validator_refuses_a_shared_operation_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    let operation = |id: &str| serde_json::json!({"operationId": id, "responses": {"200": {"description": "ok"}}});
    let doc = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/a": {"post": operation("search")}, "/b": {"post": operation("search")}},
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    let (valid, stdout, _) = support::validators::run("openapi.py", &path);
    assert!(!valid, "{stdout}");
    assert!(
        stdout.contains("Operation ID 'search'") && stdout.contains("not unique"),
        "{stdout}"
    );
}

/// Routes are registered only through `utoipa_axum::routes!` (which documents them), so an
/// undocumented route can only appear by bypassing it: this test fails when that happens.
#[test]
fn routes_are_added_only_through_the_documenting_router() {
    let mut offenders = Vec::new();
    scan(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut offenders,
    );
    assert!(
        offenders.is_empty(),
        "undocumented route registration in: {offenders:?}"
    );
}

fn scan(dir: &std::path::Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // The dev upstream and dev-dmp are other servers (the record services' stand-ins),
        // not the gateway's API: their routes are the ones they imitate.
        if path.is_dir() && (path.ends_with("dev_upstream") || path.ends_with("dev_dmp")) {
            continue;
        }
        if path.is_dir() {
            scan(&path, offenders);
            continue;
        }
        // The test-hooks router exists only in test builds and is deliberately undocumented.
        if path.ends_with("http/test_hooks.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            if text.contains(needle) {
                offenders.push(format!("{} uses {needle}", path.display()));
            }
        }
    }
}
