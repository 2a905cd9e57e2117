//! GatewayService over gRPC: every call authenticated ([`crate::server::authenticate`]) before anything
//! else happens, then checked against the caller's role.

use std::sync::Arc;

use ecgfed_ledger::state::MemberInfo;
use ecgfed_proto::v1::gateway_service_server::{GatewayService, GatewayServiceServer};
use ecgfed_proto::v1::{
    DatasetInfo, EraseRequest, EraseResponse, ListDatasetsRequest, ListDatasetsResponse,
    ReserveSliceRequest, ReserveSliceResponse, Role, StrataRequest, StrataTable,
};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::protocol::{MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, SERVICE_PATH, ticket};
use crate::server::authenticate::authenticate;
use crate::server::gateway::Gateway;

/// The GatewayService implementation.
#[derive(Clone)]
pub(super) struct GatewayServer {
    gw: Arc<Gateway>,
}

impl GatewayServer {
    /// A server over `gw`.
    pub(super) fn new(gw: Arc<Gateway>) -> Self {
        GatewayServer { gw }
    }

    /// The tonic service with our message limits.
    pub(super) fn into_service(self) -> GatewayServiceServer<GatewayServer> {
        GatewayServiceServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Authenticates a request of `method` (name inside the service) for `gw`.
pub(super) async fn caller<T: Message>(
    gw: &Gateway,
    path: &str,
    r: &Request<T>,
) -> Result<MemberInfo, Status> {
    authenticate(
        r.metadata(),
        &gw.cfg.site,
        path,
        &r.get_ref().encode_to_vec(),
        &gw.members,
        &gw.keys,
        gw.cfg.policy.max_request_age_ms,
    )
    .await
}

fn deny(who: &MemberInfo, what: &str) -> Status {
    Status::permission_denied(format!("member {} ({:?}) may not {what}", who.id, who.role))
}

#[tonic::async_trait]
impl GatewayService for GatewayServer {
    async fn list_datasets(
        &self,
        r: Request<ListDatasetsRequest>,
    ) -> Result<Response<ListDatasetsResponse>, Status> {
        let who = caller(&self.gw, &format!("{SERVICE_PATH}ListDatasets"), &r).await?;
        if who.role == Role::Ledger {
            return Err(deny(&who, "list datasets"));
        }
        let c = self.gw.catalog();
        let reg = self.gw.registration();
        Ok(Response::new(ListDatasetsResponse {
            datasets: vec![DatasetInfo {
                dataset_id: c.dataset_id.clone(),
                site: c.site.clone(),
                version: reg.as_ref().map(|r| r.version).unwrap_or(0),
                records: c.records,
                segments: c.rows.len() as u64,
                commitment_root: c.root.to_vec(),
                ledger_index: reg.map(|r| r.ledger_index).unwrap_or(0),
                sources: c.sources.clone(),
                age_bands: c.age_bands(),
                k: c.k,
            }],
        }))
    }

    async fn strata(&self, r: Request<StrataRequest>) -> Result<Response<StrataTable>, Status> {
        let who = caller(&self.gw, &format!("{SERVICE_PATH}Strata"), &r).await?;
        if who.role == Role::Ledger {
            return Err(deny(&who, "read strata"));
        }
        let c = self.gw.catalog();
        let q = r.into_inner();
        if !q.dataset_id.is_empty() && q.dataset_id != c.dataset_id {
            return Err(Status::not_found(format!(
                "dataset {:?} is not served here (this gateway serves {:?})",
                q.dataset_id, c.dataset_id
            )));
        }
        Ok(Response::new(crate::server::strata::strata(&c, &q.by)?))
    }

    async fn reserve_slice(
        &self,
        r: Request<ReserveSliceRequest>,
    ) -> Result<Response<ReserveSliceResponse>, Status> {
        let who = caller(&self.gw, &format!("{SERVICE_PATH}ReserveSlice"), &r).await?;
        let q = r.into_inner();
        if q.cohort_id.is_empty() {
            return Err(Status::invalid_argument("cohort_id is empty"));
        }
        let s = self
            .gw
            .reserve(&who, &q.cohort_id, &q.dataset_id, q.seed, &q.allocation)
            .await?;
        Ok(Response::new(ReserveSliceResponse {
            ticket: ticket(&s.slice_id),
            rows: s.segments.len() as u64,
            slice_root: s.root.0.to_vec(),
            ledger_index: s.ledger_index,
            slice_id: s.slice_id,
        }))
    }

    async fn erase(&self, r: Request<EraseRequest>) -> Result<Response<EraseResponse>, Status> {
        let who = caller(&self.gw, &format!("{SERVICE_PATH}Erase"), &r).await?;
        if who.id != self.gw.cfg.member {
            return Err(deny(
                &who,
                "erase records at this site (only its own hospital member)",
            ));
        }
        let q = r.into_inner();
        let e = self.gw.erase(&q.patient, &q.reason).await?;
        Ok(Response::new(EraseResponse {
            segments: e.segments,
            commitments: e.commitments.iter().map(|c| c.to_vec()).collect(),
            ledger_index: e.ledger_index,
            disclosure: e.disclosure,
        }))
    }
}
