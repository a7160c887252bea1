//! SeaORM entities: one module per table, mirroring `ferrite-migration`.
//!
//! The enums stored as strings (roles, permissions, statuses) live here too and
//! double as GraphQL enums, so the database and the API cannot disagree on a
//! spelling.

/// `api_keys`: a key's hash, owner, permission, use and revocation.
pub mod api_key;
/// `commands`: a command, its status and its answer.
pub mod command;
/// `devices`: a device, its owner, status and hosting session.
pub mod device;
/// `device_status_changes`: the status history.
pub mod device_status_change;
/// `device_tombstones`: deletions remembered for lagging subscribers.
pub mod device_tombstone;
/// `events`: what devices reported, in id order.
pub mod event;
/// `nodes`: the server processes sharing a database, with heartbeats.
pub mod node;
/// `refresh_tokens`: login sessions' refresh tokens (hashed).
pub mod refresh_token;
/// `revocations`: notes that a user's credentials changed.
pub mod revocation;
/// `settings`: the server's own key-value settings.
pub mod setting;
/// `users`: people who sign in, with their role and session epoch.
pub mod user;

use sea_orm::entity::prelude::*;

/// What a user is: an ADMIN manages users and sees every tenant; a MEMBER
/// sees and touches only what it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, async_graphql::Enum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Role {
    /// Sees and manages everything: every user's devices, events,
    /// commands and keys, and the users themselves.
    #[sea_orm(string_value = "ADMIN")]
    Admin,
    /// Sees and manages only its own devices, events, commands and keys.
    #[sea_orm(string_value = "MEMBER")]
    Member,
}

/// What a credential may do, within its owner's role. Ordered: READ < WRITE < ADMIN.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Permission {
    /// Every query and subscription.
    #[sea_orm(string_value = "READ")]
    Read,
    /// Also every mutation except key and user management.
    #[sea_orm(string_value = "WRITE")]
    Write,
    /// Everything the owner's role allows.
    #[sea_orm(string_value = "ADMIN")]
    Admin,
}

/// Whether a device is reachable.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum DeviceStatus {
    /// Bound to a live connector session.
    #[sea_orm(string_value = "ONLINE")]
    Online,
    /// Registered, but no session hosts it now.
    #[sea_orm(string_value = "OFFLINE")]
    Offline,
    /// Taken off its gateway on purpose; kept on the platform, unbound.
    #[sea_orm(string_value = "DISCONNECTED")]
    Disconnected,
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, async_graphql::Enum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum CommandStatus {
    /// Stored, not yet handed to a gateway.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Handed to the gateway hosting the device; waiting for its answer.
    #[sea_orm(string_value = "DELIVERED")]
    Delivered,
    /// The gateway answered with success.
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    /// The gateway answered with failure.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Nobody answered before `expiresAt`.
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
}

impl CommandStatus {
    /// Open commands still wait for an answer; the others are final.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Delivered)
    }
}
