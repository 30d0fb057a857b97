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
            // Signed by the gateway's key for a professional its own card authenticated
            // at the desk: the structure's assertion, the card checked locally (what the
            // DMP calls INDIRECTE_RENFORCEE); DIRECTE would claim the card signed it.
            auth_mode: "INDIRECTE_RENFORCEE".into(),
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

/// Whether `id` may name a patient in a request path: a FHIR id, and not one of dots only
/// (`..` would make `Patient/../$summary` a call on the whole server).
fn usable_id(id: &str) -> bool {
    summary::validate::legal_id(id) && !id.bytes().all(|b| b == b'.')
}

/// Whether a Patient is one the service keeps: not `active: false`, not replaced by
/// another (a merged record: its successor holds what was added since).
fn current(patient: &serde_json::Map<String, Value>) -> bool {
    let replaced = patient
        .get("link")
        .and_then(Value::as_array)
        .is_some_and(|links| {
            links
                .iter()
                .any(|l| l.get("type").and_then(Value::as_str) == Some("replaced-by"))
        });
    patient.get("active").and_then(Value::as_bool) != Some(false) && !replaced
}

/// The patients of a searchset Bundle; with `carrying` (`OID|value`), only those that carry
/// that INS: a server that ignores or loosens the `identifier` parameter (FHIR lets it)
/// must not turn an INS look-up into another patient's record.
///
/// Nothing is picked from a part of the answer: a paged answer (a `next` link, or a
/// `total` above the patients listed), a search outcome saying it failed, or a patient
/// without a usable id is unreadable, since a candidate left out may be the second patient
/// carrying the INS, or the right one among namesakes. Inactive and merged patients are
/// left out; an INS look-up answered only with such patients, or only with patients not
/// carrying the INS, is not "no record" (which would delete the patient's copies).
fn candidates(body: &[u8], carrying: Option<&str>) -> Result<Vec<Candidate>, UpstreamError> {
    let unreadable = |why: &str| Err(UpstreamError::Malformed(why.to_owned()));
    // Part of a search by traits: the physician narrows the search. Part of an INS look-up
    // is unreadable (a second patient carrying the INS may be past it).
    let partial = |why: &str| match carrying {
        None => Err(UpstreamError::TooManyCandidates(why.to_owned())),
        Some(_) => unreadable(why),
    };
    let value =
        summary::syntax::parse(body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return unreadable("a search answer that is not a Bundle");
    }
    let paged = value
        .get("link")
        .and_then(Value::as_array)
        .is_some_and(|links| {
            links
                .iter()
                .any(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        });
    if paged {
        return partial("the search answer is paged: patients past its first page were not seen");
    }
    let entries = value
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mode = |e: &Value| {
        e.get("search")
            .and_then(|s| s.get("mode"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let failed = entries.iter().any(|e| {
        mode(e).as_deref() == Some("outcome")
            && e.get("resource")
                .and_then(|r| r.get("issue"))
                .and_then(Value::as_array)
                .is_some_and(|issues| {
                    issues.iter().any(|i| {
                        matches!(
                            i.get("severity").and_then(Value::as_str),
                            Some("error" | "fatal")
                        )
                    })
                })
    });
    if failed {
        return unreadable(
            "the search answer says the search failed in part (an outcome with an error)",
        );
    }
    // Patients the search matched (an entry without a mode is one); included ones are
    // context, not candidates.
    let matched: Vec<&serde_json::Map<String, Value>> = entries
        .iter()
        .filter(|e| mode(e).is_none_or(|m| m == "match"))
        .filter_map(|e| e.get("resource")?.as_object())
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
        .collect();
    if value
        .get("total")
        .and_then(Value::as_u64)
        .is_some_and(|total| total > matched.len() as u64)
    {
        return partial("the search answer counts more patients than it lists");
    }
    let (listed, stale): (Vec<_>, Vec<_>) = matched.into_iter().partition(|r| current(r));
    let (patients, others): (Vec<_>, Vec<_>) = listed.into_iter().partition(|r| {
        carrying.is_none_or(|token| summary::ins_identifiers(r).iter().any(|t| t == token))
    });
    if !others.is_empty() || !stale.is_empty() {
        // Counts only: what the others carry is health data.
        tracing::warn!(
            not_carrying = others.len(),
            inactive_or_merged = stale.len(),
            "the record service answered with patients left out (not carrying the INS asked for, inactive or merged)"
        );
    }
    if carrying.is_some() && patients.is_empty() {
        if !others.is_empty() {
            return Err(UpstreamError::WrongPatient(
                "the INS look-up answered other patients only".into(),
            ));
        }
        if !stale.is_empty() {
            return unreadable("the INS look-up answered inactive or merged patient records only");
        }
    }
    // As the DMP path: a physician cannot choose among more, and each candidate shown is
    // named in the search's audit record.
    if patients.len() > MAX_CANDIDATES {
        return partial(&format!("more than {MAX_CANDIDATES} candidates"));
    }
    if patients.iter().any(|r| {
        r.get("id")
            .and_then(Value::as_str)
            .is_none_or(|id| !usable_id(id))
    }) {
        return unreadable("a patient of the search answer has no usable id");
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
            usable_id(id).then(|| Candidate {
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

    /// Both calls and the reading under one deadline: each call's own would let an
    /// access take twice `total_timeout_ms`, and the physician wait that long.
    fn patient_summary<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<(Candidate, CriticalSummary), UpstreamError>> {
        Box::pin(async move {
            tokio::time::timeout(self.total, super::resolve_then_summary(self, ins, access))
                .await
                .unwrap_or(Err(UpstreamError::TimedOut(self.total.as_millis() as u64)))
        })
    }

    fn summary<'a>(
        &'a self,
        id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        Box::pin(async move {
            if !usable_id(id) {
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
        // The physician is asked to narrow the search (it read as an unusable answer).
        assert!(
            matches!(refused, UpstreamError::TooManyCandidates(_)),
            "{refused:?}"
        );
        assert_eq!(refused.answer().status, 422);
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

    fn searchset(entries: serde_json::Value, extra: serde_json::Value) -> Vec<u8> {
        let mut bundle = serde_json::json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": entries,
        });
        if let (Some(bundle), Some(extra)) = (bundle.as_object_mut(), extra.as_object()) {
            bundle.extend(extra.clone());
        }
        serde_json::to_vec(&bundle).unwrap()
    }

    const ASKED: &str = "1.2.250.1.213.1.4.8|185057800608436";

    fn patient(id: serde_json::Value, carrying: bool) -> serde_json::Value {
        let mut patient = serde_json::json!({"resourceType": "Patient", "id": id});
        if carrying {
            patient["identifier"] = serde_json::json!([
                {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "185057800608436"}]);
        }
        serde_json::json!({"resource": patient})
    }

    /// An INS look-up answered only with other patients is the service answering wrongly,
    /// not "no record" (which deletes the patient's copies and tells the physician there
    /// is none). Before, it read as no record.
    #[test]
    fn an_ins_look_up_answered_with_other_patients_only_is_not_no_record() {
        let body = searchset(
            serde_json::json!([patient("other".into(), false)]),
            serde_json::json!({}),
        );
        assert!(matches!(
            candidates(&body, Some(ASKED)),
            Err(UpstreamError::WrongPatient(_))
        ));
        // An answer listing nobody is "no record".
        let empty = searchset(serde_json::json!([]), serde_json::json!({"total": 0}));
        assert!(candidates(&empty, Some(ASKED)).unwrap().is_empty());
    }

    /// Nothing is picked from part of an answer: a second patient carrying the INS without
    /// a usable id, on a next page, or counted in `total` and not listed, or a search
    /// outcome saying it failed. Before, the one patient left was taken as the only one.
    #[test]
    fn nothing_is_picked_from_part_of_an_answer() {
        let two = serde_json::json!([
            patient("a".into(), true),
            patient(serde_json::Value::Null, true)
        ]);
        for second in [
            patient(serde_json::Value::Null, true),
            patient("p_2".into(), true),
            patient("..".into(), true),
            patient("x".repeat(65).into(), true),
        ] {
            let body = searchset(
                serde_json::json!([patient("a".into(), true), second]),
                serde_json::json!({}),
            );
            assert!(
                matches!(
                    candidates(&body, Some(ASKED)),
                    Err(UpstreamError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        let one = serde_json::json!([patient("a".into(), true)]);
        for extra in [
            serde_json::json!({"total": 2}),
            serde_json::json!({"link": [{"relation": "next", "url": "https://service/Patient?page=2"}]}),
        ] {
            let body = searchset(one.clone(), extra);
            assert!(matches!(
                candidates(&body, Some(ASKED)),
                Err(UpstreamError::Malformed(_))
            ));
            // A search by traits: the physician is asked to narrow it.
            assert!(matches!(
                candidates(&body, None),
                Err(UpstreamError::TooManyCandidates(_))
            ));
        }
        let failed = searchset(
            serde_json::json!([
                patient("a".into(), true),
                {"search": {"mode": "outcome"}, "resource": {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "too-costly"}]}}
            ]),
            serde_json::json!({}),
        );
        assert!(matches!(
            candidates(&failed, None),
            Err(UpstreamError::Malformed(_))
        ));
        // A warning outcome and an included patient do not count against the answer.
        let fine = searchset(
            serde_json::json!([
                patient("a".into(), true),
                {"search": {"mode": "outcome"}, "resource": {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "warning", "code": "informational"}]}},
                {"search": {"mode": "include"}, "resource": {"resourceType": "Patient", "id": "b"}}
            ]),
            serde_json::json!({"total": 1, "link": [{"relation": "self", "url": "https://service/Patient"}]}),
        );
        assert_eq!(candidates(&fine, Some(ASKED)).unwrap().len(), 1);
        assert!(candidates(&searchset(two, serde_json::json!({})), None).is_err());
    }

    /// Inactive and merged patient records are left out: the surviving record holds what
    /// was added since. An INS found only on such records is not read as found, nor as no
    /// record.
    #[test]
    fn inactive_and_merged_patients_are_left_out() {
        let mut inactive = patient("old".into(), true);
        inactive["resource"]["active"] = false.into();
        let mut merged = patient("merged".into(), true);
        merged["resource"]["link"] = serde_json::json!([
            {"type": "replaced-by", "other": {"reference": "Patient/new"}}]);
        let both = searchset(
            serde_json::json!([
                inactive.clone(),
                merged.clone(),
                patient("new".into(), true)
            ]),
            serde_json::json!({}),
        );
        let found = candidates(&both, Some(ASKED)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "new");
        let only_old = searchset(serde_json::json!([inactive, merged]), serde_json::json!({}));
        assert!(matches!(
            candidates(&only_old, Some(ASKED)),
            Err(UpstreamError::Malformed(why)) if why.contains("inactive or merged")
        ));
    }
}
