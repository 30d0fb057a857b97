//! [`RecordService`] over FHIR R4: HTTPS with mutual TLS (the centre's structure
//! certificate; rustls, ring provider), keep-alive pooling, a connect deadline and a total
//! deadline per operation, bounded retries with jitter for reads, a body-size limit, and a
//! fresh access assertion on every request.
//!
//! Searches go as `POST [base]/Patient/_search` (form body): FHIR's equivalent of
//! `GET Patient?identifier=…`, which keeps INS and identity traits out of URLs and so out of
//! every access log on the way. The summary is `GET [base]/Patient/{id}/$summary`.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::assertion::{AssertionSigner, Claims, LIFETIME_SECS, new_jti};
use super::{Access, BoxFuture, RecordService, UpstreamConfig, UpstreamError, outcome};
use crate::patient::{Candidate, CandidateIns, Ins, Traits};
use crate::problem::ConfigProblem;
use crate::summary::{self, CriticalSummary};

/// Largest error body read (OperationOutcomes are small).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Shortest backoff before a retry; doubled each time, plus up to as much jitter.
const BACKOFF: Duration = Duration::from_millis(50);

/// The FHIR record service client.
pub struct FhirClient {
    http: reqwest::Client,
    base: String,
    signer: AssertionSigner,
    structure_id: String,
    activity_sector: String,
    total: Duration,
    max_retries: u32,
    max_body: usize,
}

/// One attempt's failure: worth retrying or not.
enum Failure {
    Retry(UpstreamError),
    Final(UpstreamError),
}

impl FhirClient {
    /// Loads the TLS material and the assertion key named in `cfg`; all problems together.
    pub fn new(cfg: &UpstreamConfig, structure_id: &str) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let tls = tls_config(cfg, &mut problems);
        let signer = match cfg.assertion_key.resolve() {
            Ok(path) => AssertionSigner::load(&path)
                .map_err(|e| problems.push(ConfigProblem::new("upstream.assertion_key", e)))
                .ok(),
            Err(e) => {
                problems.push(ConfigProblem::new("upstream.assertion_key", e));
                None
            }
        };
        let (Some(tls), Some(signer), true) = (tls, signer, problems.is_empty()) else {
            return Err(problems);
        };
        let http = crate::upstream::http_client(tls, cfg.connect_timeout_ms, "upstream")?;
        Ok(Self {
            http,
            base: cfg.base_url.trim_end_matches('/').to_owned(),
            signer,
            structure_id: structure_id.to_owned(),
            activity_sector: cfg.activity_sector.clone(),
            total: Duration::from_millis(cfg.total_timeout_ms),
            max_retries: cfg.max_retries,
            max_body: cfg.max_body_bytes,
        })
    }

    /// The assertion for one request.
    fn assertion(&self, access: &Access<'_>) -> Result<String, UpstreamError> {
        let professional = access.professional;
        let name = [&professional.given_name, &professional.surname]
            .iter()
            .filter_map(|n| n.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        let now = crate::clock::now().1 / 1000;
        let claims = Claims {
            iss: format!("samu-gateway/{}", self.structure_id),
            aud: self.base.clone(),
            iat: now,
            exp: now + LIFETIME_SECS,
            jti: new_jti().map_err(|e| UpstreamError::Unavailable(e.to_string()))?,
            purpose_of_use: access.mode,
            subject_id: if name.is_empty() {
                professional.id_nat.clone()
            } else {
                name
            },
            subject_nameid: professional.id_nat.clone(),
            role: professional.title.clone(),
            specialty: None,
            structure_id: self.structure_id.clone(),
            activity_sector: self.activity_sector.clone(),
            resource_id: access.patient.map(Ins::resource_id),
            lps_name: "samu-gateway".into(),
            lps_version: env!("CARGO_PKG_VERSION").into(),
            auth_mode: "DIRECTE".into(),
        };
        self.signer.sign(&claims).map_err(|e| {
            UpstreamError::AssertionRefused(format!("cannot encode the assertion: {e}"))
        })
    }

    /// Runs `request` (rebuilt for each attempt) within the total deadline, retrying
    /// idempotent reads after connection failures and 502/503/504.
    async fn call(
        &self,
        access: &Access<'_>,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, UpstreamError> {
        let deadline = Instant::now() + self.total;
        let timed_out = UpstreamError::TimedOut(self.total.as_millis() as u64);
        let mut attempt = 0;
        loop {
            let token = self.assertion(access)?;
            let send = self.attempt(request().bearer_auth(token), access);
            let outcome = match tokio::time::timeout_at(deadline, send).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(timed_out),
            };
            match outcome {
                Ok(body) => return Ok(body),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    let pause = backoff(attempt);
                    if attempt >= self.max_retries || Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    tracing::info!(attempt, error = %e, "record service call retried");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        request: reqwest::RequestBuilder,
        access: &Access<'_>,
    ) -> Result<Vec<u8>, Failure> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                Failure::Retry(UpstreamError::Unavailable(format!(
                    "cannot connect: {}",
                    super::send_failure(e)
                )))
            } else {
                Failure::Final(UpstreamError::Unavailable(super::send_failure(e)))
            }
        })?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = super::read_limited(response, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            let e = outcome::classify(status, &body, access.mode);
            return Err(if matches!(status, 502..=504) {
                Failure::Retry(e)
            } else {
                Failure::Final(e)
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        // FHIR JSON, or a CDA document (XML): the document's own first byte then decides
        // how it is read, and a mismatch is refused by that reader.
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !matches!(
            media,
            "application/fhir+json"
                | "application/json"
                | "application/xml"
                | "text/xml"
                | "application/hl7-cda+xml"
        ) {
            return Err(Failure::Final(UpstreamError::Malformed(format!(
                "content type '{}' is neither FHIR JSON nor XML",
                crate::encoding::peer_token(&content_type, 60, "/.+-;= ", Some('?'))
            ))));
        }
        super::read_limited(response, self.max_body)
            .await
            .map_err(Failure::Final)
    }

    fn search_request(
        &self,
        form: Vec<(&'static str, String)>,
    ) -> impl Fn() -> reqwest::RequestBuilder {
        let url = format!("{}/Patient/_search", self.base);
        move || {
            self.http
                .post(&url)
                .header(reqwest::header::ACCEPT, "application/fhir+json")
                .form(&form)
        }
    }
}

/// Exponential backoff with full jitter.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF * 2u32.saturating_pow(attempt.min(6));
    let mut byte = [0u8; 1];
    // Jitter, not an id: without the kernel's generator the backoff is just not spread.
    let _ = crate::random::fill(&mut byte);
    base + base.mul_f64(f64::from(byte[0]) / 255.0)
}

/// Candidates a search answer may list (the DMP client has the same bound).
const MAX_CANDIDATES: usize = 100;

/// The patients of a searchset Bundle; with `carrying` (`OID|value`), only those that carry
/// that INS: a server that ignores or loosens the `identifier` parameter (FHIR lets it)
/// must not turn an INS look-up into another patient's record.
fn candidates(body: &[u8], carrying: Option<&str>) -> Result<Vec<Candidate>, UpstreamError> {
    let value =
        summary::syntax::parse(body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(UpstreamError::Malformed(
            "a search answer that is not a Bundle".into(),
        ));
    }
    let entries = value
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let listed = entries
        .iter()
        .filter_map(|e| e.get("resource")?.as_object())
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"));
    let (patients, others): (Vec<_>, Vec<_>) = listed.partition(|r| {
        carrying.is_none_or(|token| summary::ins_identifiers(r).iter().any(|t| t == token))
    });
    if !others.is_empty() {
        // Counts only: what the others carry is health data.
        tracing::warn!(
            left_out = others.len(),
            "the record service answered an INS look-up with patients not carrying that INS; they were left out"
        );
    }
    // As the DMP path: a physician cannot choose among more, and each candidate shown is
    // named in the search's audit record.
    if patients.len() > MAX_CANDIDATES {
        return Err(UpstreamError::Malformed(format!(
            "more than {MAX_CANDIDATES} candidates"
        )));
    }
    Ok(patients
        .into_iter()
        .filter_map(|r| {
            let id = r.get("id")?.as_str()?;
            let ins = summary::ins_identifiers(r)
                .into_iter()
                .find(|t| carrying.is_none_or(|token| t == token))
                .and_then(|token| {
                    let (oid, value) = token.split_once('|')?;
                    Some(CandidateIns {
                        value: value.to_owned(),
                        oid: oid.to_owned(),
                    })
                });
            summary::validate::legal_id(id).then(|| Candidate {
                id: id.to_owned(),
                names: summary::human_names(r),
                birth_date: r
                    .get("birthDate")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                gender: r.get("gender").and_then(Value::as_str).map(str::to_owned),
                birthplace: None,
                has_ins: ins.is_some(),
                match_percent: None,
                provenance: Vec::new(),
                ins,
            })
        })
        .collect())
}

impl RecordService for FhirClient {
    fn find_by_ins<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
        Box::pin(async move {
            let request = self.search_request(vec![("identifier", ins.fhir_token())]);
            let carrying = format!("{}|{}", ins.oid(), ins.as_str());
            candidates(&self.call(access, request).await?, Some(&carrying))
        })
    }

    fn search<'a>(
        &'a self,
        traits: &'a Traits,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
        Box::pin(async move {
            let mut form = vec![
                ("family", traits.birth_name.trim().to_owned()),
                ("given", traits.first_names.trim().to_owned()),
                ("birthdate", traits.birth_date.clone()),
            ];
            if let Some(gender) = traits.sex.fhir_gender() {
                form.push(("gender", gender.to_owned()));
            }
            if let Some(place) = &traits.birthplace {
                form.push(("birthplace", place.clone()));
            }
            candidates(&self.call(access, self.search_request(form)).await?, None)
        })
    }

    fn summary<'a>(
        &'a self,
        id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        Box::pin(async move {
            if !summary::validate::legal_id(id) {
                return Err(UpstreamError::NoRecord);
            }
            let url = format!("{}/Patient/{id}/$summary", self.base);
            let request = || {
                self.http.get(&url).header(
                    reqwest::header::ACCEPT,
                    "application/fhir+json, application/xml;q=0.9",
                )
            };
            let body = self.call(access, request).await?;
            let found = super::extract_off_runtime(body.to_vec()).await?;
            super::check_same_patient(&found, access.patient)?;
            Ok(found)
        })
    }
}

fn tls_config(
    cfg: &UpstreamConfig,
    problems: &mut Vec<ConfigProblem>,
) -> Option<rustls::ClientConfig> {
    let files = crate::tls::MutualClient {
        section: "upstream",
        ca: ("server_ca", &cfg.server_ca),
        crls: ("server_crls", &cfg.server_crls),
        cert: ("client_cert", &cfg.client_cert),
        key: ("client_key", &cfg.client_key),
    };
    crate::tls::mutual_client_config(&files, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(patients: usize) -> Vec<u8> {
        let entries: Vec<Value> = (0..patients)
            .map(|i| serde_json::json!({"resource": {"resourceType": "Patient", "id": format!("p{i}")}}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": entries,
        }))
        .unwrap()
    }

    #[test]
    fn a_search_answer_lists_at_most_the_bound() {
        assert_eq!(
            candidates(&bundle(MAX_CANDIDATES), None).unwrap().len(),
            MAX_CANDIDATES
        );
        let refused = candidates(&bundle(MAX_CANDIDATES + 1), None).unwrap_err();
        assert!(
            refused.to_string().contains("more than 100 candidates"),
            "{refused}"
        );
    }

    /// An INS look-up answered with patients that do not carry that INS (a server that
    /// ignored the parameter) finds none of them: never another patient's record.
    #[test]
    fn an_ins_look_up_keeps_only_the_patients_carrying_that_ins() {
        let identifier = |oid: &str, value: &str| serde_json::json!({"system": format!("urn:oid:{oid}"), "value": value});
        let body = serde_json::to_vec(&serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": "no-ins"}},
                {"resource": {"resourceType": "Patient", "id": "other", "identifier": [
                    identifier("1.2.250.1.213.1.4.8", "285017512345612")]}},
                {"resource": {"resourceType": "Patient", "id": "same-number-other-oid", "identifier": [
                    identifier("1.2.250.1.213.1.4.9", "185057800608436")]}},
                {"resource": {"resourceType": "Patient", "id": "asked", "identifier": [
                    identifier("1.2.250.1.213.1.4.9", "285017512345612"),
                    identifier("1.2.250.1.213.1.4.8", "185057800608436")]}}
            ]
        }))
        .unwrap();
        let found = candidates(&body, Some("1.2.250.1.213.1.4.8|185057800608436")).unwrap();
        let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["asked"]);
        // The INS shown is the one asked for, not the first the patient carries.
        let ins = found[0].ins.as_ref().unwrap();
        assert_eq!(
            (ins.oid.as_str(), ins.value.as_str()),
            ("1.2.250.1.213.1.4.8", "185057800608436")
        );
        // A search by traits keeps every patient.
        assert_eq!(candidates(&body, None).unwrap().len(), 4);
    }
}
