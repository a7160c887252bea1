use sea_orm::entity::prelude::*;

/// A deleted device, kept for a while for subscribers that fell behind.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device_tombstones")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub device_id: Uuid,
    pub owner_id: Uuid,
    /// The `devices` row as it was when deleted.
    pub device: Json,
    pub deleted_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
