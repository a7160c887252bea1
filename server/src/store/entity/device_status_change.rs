use sea_orm::entity::prelude::*;

use super::DeviceStatus;

/// A device entered `status` at `at`; `connector_id` is the gateway it came
/// ONLINE on or went OFFLINE from.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device_status_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub device_id: Uuid,
    pub status: DeviceStatus,
    pub connector_id: Option<String>,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
