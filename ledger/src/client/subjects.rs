//! What a client asks the ledger about one subject, checked by the client itself: the entries
//! naming it (proven, signed by a replayed member), their payloads page by page, and the one
//! cohort or slice entry an id stands for, held to the ledger's own rules (docs/ledger.md,
//! "Submission checks").

use std::collections::HashMap;

use ecgfed_proto::v1::entry_body::Payload;
use ecgfed_proto::v1::{CohortCreated, CohortSliceCommitted, Role, Subject, SubjectKind};

use super::{CheckedEntry, ClientError, LedgerClient};
use crate::state;

impl LedgerClient {
    /// The checked entries naming a subject (proven, signed by a replayed member), in log
    /// order, from entry index `from`, at most `limit` entries (0: all).
    pub async fn entries_naming(
        &mut self,
        kind: SubjectKind,
        id: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<CheckedEntry>, ClientError> {
        let subject = Subject {
            kind: kind as i32,
            id: id.to_string(),
        };
        self.query_checked(subject, from, limit).await
    }

    /// Payloads of the entries naming a subject ([`LedgerClient::entries_naming`]) with their
    /// indexes, in log order.
    pub async fn payloads_naming(
        &mut self,
        kind: SubjectKind,
        id: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<(u64, Payload)>, ClientError> {
        Ok(self
            .entries_naming(kind, id, from, limit)
            .await?
            .into_iter()
            .filter_map(|e| Some((e.entry.index, e.entry.body.payload?)))
            .collect())
    }

    /// The one `CohortCreated` entry of `cohort_id` (index, entry), signed by a scientist who
    /// is its requester; `None` when the ledger has none. A second entry for the id, or one
    /// signed by another member, breaks the ledger's rules: [`ClientError::BrokenRules`].
    pub async fn cohort(
        &mut self,
        cohort_id: &str,
    ) -> Result<Option<(u64, CohortCreated)>, ClientError> {
        let broken = |entries: Vec<u64>, reason: String| ClientError::BrokenRules {
            subject: format!("cohort {cohort_id}"),
            entries,
            reason,
        };
        let mut found = None;
        for e in self
            .entries_naming(SubjectKind::Cohort, cohort_id, 0, 0)
            .await?
        {
            let Some(Payload::CohortCreated(c)) = e.entry.body.payload else {
                continue;
            };
            if c.cohort_id != cohort_id {
                continue;
            }
            if e.signer.role != Role::Scientist || c.requester != e.signer.id {
                return Err(broken(
                    vec![e.entry.index],
                    format!(
                        "cohort {cohort_id}: entry {} is signed by {} for requester {:?}",
                        e.entry.index, e.signer.id, c.requester
                    ),
                ));
            }
            if let Some((first, _)) = &found {
                return Err(broken(
                    vec![*first, e.entry.index],
                    format!(
                        "cohort {cohort_id} has two CohortCreated entries ({first} and {}): the ledger broke its rules",
                        e.entry.index
                    ),
                ));
            }
            found = Some((e.entry.index, c));
        }
        Ok(found)
    }

    /// The `CohortSliceCommitted` entry of `slice_id` (index, entry), checked with the
    /// ledger's own rules: its id is `<cohort>/<site>`, it is signed by the hospital member of
    /// that site, its cohort exists and allocates to the site exactly the rows it commits, with
    /// the cohort's requester and seed; and it is the only such entry. Entries that fail
    /// (another hospital front-running the id, say) are not the slice: without a valid one the
    /// answer is [`ClientError::NotOnLedger`], listing them.
    pub async fn slice(
        &mut self,
        slice_id: &str,
    ) -> Result<(u64, CohortSliceCommitted), ClientError> {
        let mut found: Option<(u64, CohortSliceCommitted)> = None;
        let mut refused = Vec::new();
        // Each cohort looked up once, however many entries claim the slice id.
        let mut cohorts: HashMap<String, Option<(u64, CohortCreated)>> = HashMap::new();
        for e in self
            .entries_naming(SubjectKind::Slice, slice_id, 0, 0)
            .await?
        {
            let Some(Payload::CohortSliceCommitted(s)) = e.entry.body.payload else {
                continue;
            };
            if s.slice_id != slice_id {
                continue;
            }
            let why = if state::slice_id(&s.cohort_id, &s.site) != slice_id {
                Some(format!("its id is not {}/{}", s.cohort_id, s.site))
            } else if e.signer.role != Role::Hospital || e.signer.site != s.site {
                Some(format!(
                    "it is signed by {}, not by the hospital of site {}",
                    e.signer.id, s.site
                ))
            } else {
                let cohort = match cohorts.get(&s.cohort_id) {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.cohort(&s.cohort_id).await?;
                        cohorts.insert(s.cohort_id.clone(), c.clone());
                        c
                    }
                };
                match cohort {
                    None => Some(format!("cohort {} is not on the ledger", s.cohort_id)),
                    Some((_, c)) => state::cohort_info(&c)
                        .and_then(|info| state::check_slice_of(&s, &info))
                        .err()
                        .map(|r| r.message),
                }
            };
            if let Some(why) = why {
                refused.push((e.entry.index, why));
                continue;
            }
            if let Some((first, _)) = &found {
                return Err(ClientError::BrokenRules {
                    subject: format!("slice {slice_id}"),
                    entries: vec![*first, e.entry.index],
                    reason: format!(
                        "slice {slice_id} has two valid CohortSliceCommitted entries ({first} and {}): the ledger broke its rules",
                        e.entry.index
                    ),
                });
            }
            found = Some((e.entry.index, s));
        }
        found.ok_or_else(|| ClientError::NotOnLedger {
            subject: format!("slice {slice_id}"),
            wanted: "CohortSliceCommitted",
            refused,
        })
    }
}
