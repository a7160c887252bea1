use sea_orm::entity::prelude::*;

/// The credentials of `user_id` changed at `at` (a key revoked, the
/// password or the role changed, the user disabled or deleted): its open
/// sockets on every node check theirs again.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "revocations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: Uuid,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
