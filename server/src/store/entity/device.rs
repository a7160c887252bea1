use sea_orm::entity::prelude::*;

use super::DeviceStatus;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub external_id: String,
    pub name: String,
    #[sea_orm(column_name = "type")]
    pub r#type: String,
    pub location: Option<String>,
    pub attributes: Json,
    pub status: DeviceStatus,
    pub connector_id: Option<String>,
    pub last_seen_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The connector session hosting the device while it is ONLINE.
    pub session_id: Option<Uuid>,
    /// The node that session is connected to.
    pub node_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
