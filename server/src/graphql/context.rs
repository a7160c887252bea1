//! What a resolver reads from its context: the shared state, the caller and
//! its address.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use async_graphql::Context;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use crate::{
    AppState,
    auth::{Credential, Principal},
    store::{ConnectorSession, entity::Permission},
};

/// Per-request (or per-WebSocket-connection) data.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `None` when the request carried no token: only the schema is public.
    pub principal: Option<Principal>,
    /// The client's address, for login throttling.
    pub client: IpAddr,
    /// Set when this is a connector session: a WebSocket whose
    /// `connection_init` named a `connectorId`.
    pub session: Option<ConnectorSession>,
    /// Set on a WebSocket: the connection's credential, which the client
    /// may renew with `renewConnection`.
    pub socket: Option<Arc<SocketLease>>,
}

/// The credential a WebSocket connection runs on. The principal is fixed
/// for the connection's life; only the expiry moves, when the client renews
/// it with a fresh token of the same kind and user.
#[derive(Debug)]
pub struct SocketLease {
    pub user_id: Uuid,
    /// What the connection was opened with: a renewal must be the same kind,
    /// so a socket opened with an expiring token cannot be made to outlive
    /// it with an API key (whose revocation it would then not watch).
    pub credential: Credential,
    /// When the credential expires (`None`: an API key, until revoked). The
    /// connection closes with 4403 at that moment unless renewed before.
    pub expires: watch::Sender<Option<DateTime<Utc>>>,
}

impl RequestContext {
    /// The caller, refused unless its credential holds `needed`.
    pub fn caller(&self, needed: Permission) -> ApiResult<&Principal> {
        let principal = self.principal.as_ref().ok_or_else(|| {
            ApiError::Unauthenticated(
                "authentication required: send `Authorization: Bearer <token>`".into(),
            )
        })?;
        principal.require(needed)?;
        Ok(principal)
    }

    pub fn anonymous(client: IpAddr) -> Self {
        Self {
            principal: None,
            client,
            session: None,
            socket: None,
        }
    }
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

pub fn request<'a>(ctx: &Context<'a>) -> &'a RequestContext {
    static LOCAL: RequestContext = RequestContext {
        principal: None,
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        session: None,
        socket: None,
    };
    ctx.data_opt::<RequestContext>().unwrap_or(&LOCAL)
}

/// The caller, refused unless its credential holds `needed`. Every resolver
/// that reads or writes data starts here.
pub fn principal<'a>(ctx: &Context<'a>, needed: Permission) -> ApiResult<&'a Principal> {
    request(ctx).caller(needed)
}
