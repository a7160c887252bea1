//! `totalCount` on connections, counted only when a client asks for it.

use async_graphql::{Context, Object};

use super::{context::state, error::ApiResult};
use crate::store::{CommandFilter, DeviceFilter, EventFilter, Scope};

/// The list a connection was cut from, kept to count it on demand.
pub enum TotalCount {
    Devices(Scope, DeviceFilter),
    Events(Scope, EventFilter),
    Commands(Scope, CommandFilter),
}

#[Object]
impl TotalCount {
    /// How many items match the filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> ApiResult<u64> {
        let store = &state(ctx).store;
        Ok(match self {
            TotalCount::Devices(scope, filter) => store.count_devices(*scope, filter).await?,
            TotalCount::Events(scope, filter) => store.count_events(*scope, filter).await?,
            TotalCount::Commands(scope, filter) => store.count_commands(*scope, filter).await?,
        })
    }
}
