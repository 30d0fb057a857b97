//! The record service's failures, counted for monitoring: a [`RecordService`] that passes
//! every call to the real client and counts the outcomes that are the service's fault
//! (unreachable, timed out, malformed answers, refused assertions; the answers a desk gets
//! as 5xx), by their code. Counted here, below the cache, so that a failure a cached copy
//! hid from the physician still shows to centre IT.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Access, BoxFuture, RecordService, UpstreamError};
use crate::patient::{Candidate, Ins, Traits};
use crate::summary::CriticalSummary;

/// Failures since start, by code.
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Failures {
    /// Counts `outcome` when it is the record service's failure (a request the gateway
    /// could not send is not).
    fn observe<T>(&self, outcome: &Result<T, UpstreamError>) {
        if let Err(e) = outcome
            && !matches!(e, UpstreamError::NotSent(_))
        {
            let answer = e.answer();
            if answer.status >= 500 {
                *self
                    .counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(answer.code)
                    .or_default() += 1;
            }
        }
    }

    /// Every code seen, with its count since start.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(code, n)| (*code, *n))
            .collect()
    }
}

/// `inner`, with its failures counted in `failures`.
pub struct Counted {
    inner: Arc<dyn RecordService>,
    failures: Arc<Failures>,
}

impl Counted {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RecordService>, failures: Arc<Failures>) -> Self {
        Self { inner, failures }
    }
}

impl Counted {
    /// Runs one call of the inner service and counts its failure, if it is one.
    async fn count<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let outcome = call.await;
        self.failures.observe(&outcome);
        outcome
    }
}

impl RecordService for Counted {
    fn find_by_ins<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
        Box::pin(self.count(self.inner.find_by_ins(ins, access)))
    }

    fn search<'a>(
        &'a self,
        traits: &'a Traits,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, UpstreamError>> {
        Box::pin(self.count(self.inner.search(traits, access)))
    }

    fn summary<'a>(
        &'a self,
        id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        Box::pin(self.count(self.inner.summary(id, access)))
    }

    /// The inner service's own way (the DMP asks both at once), counted once.
    fn patient_summary<'a>(
        &'a self,
        ins: &'a Ins,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<(Candidate, CriticalSummary), UpstreamError>> {
        Box::pin(self.count(self.inner.patient_summary(ins, access)))
    }

    fn document<'a>(
        &'a self,
        unique_id: &'a str,
        access: &'a Access<'a>,
    ) -> BoxFuture<'a, Result<CriticalSummary, UpstreamError>> {
        Box::pin(self.count(self.inner.document(unique_id, access)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_services_failures_are_counted_by_code() {
        let failures = Failures::default();
        failures.observe::<()>(&Err(UpstreamError::TimedOut(2000)));
        failures.observe::<()>(&Err(UpstreamError::TimedOut(2000)));
        failures.observe::<()>(&Err(UpstreamError::Unavailable("refused".into())));
        // The patient's choices and a record that does not exist are answers, not failures.
        failures.observe::<()>(&Err(UpstreamError::NoRecord));
        failures.observe::<()>(&Err(UpstreamError::ProfessionalBlocked));
        // Nor a request the gateway could not sign: the service was not asked.
        failures.observe::<()>(&Err(UpstreamError::NotSent("card".into())));
        failures.observe(&Ok(()));
        let totals = failures.totals();
        let timeout = UpstreamError::TimedOut(1).answer().code;
        let unavailable = UpstreamError::Unavailable(String::new()).answer().code;
        assert_eq!(totals.len(), 2, "{totals:?}");
        assert!(totals.contains(&(timeout, 2)), "{totals:?}");
        assert!(totals.contains(&(unavailable, 1)), "{totals:?}");
    }
}
