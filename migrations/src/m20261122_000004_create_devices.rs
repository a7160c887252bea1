use sea_orm_migration::{prelude::*, schema::*};

use super::m20261122_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .if_not_exists()
                    // UUIDv7: ids sort by creation time, so they double as cursors.
                    .col(pk_uuid(Devices::Id))
                    .col(uuid(Devices::OwnerId))
                    .col(string_len(Devices::ExternalId, 128))
                    .col(string_len(Devices::Name, 200))
                    .col(string_len(Devices::Type, 64))
                    .col(string_len_null(Devices::Location, 200))
                    .col(json_binary(Devices::Attributes))
                    .col(string_len(Devices::Status, 16))
                    .col(string_len_null(Devices::ConnectorId, 128))
                    .col(timestamp_with_time_zone_null(Devices::LastSeenAt))
                    .col(timestamp_with_time_zone(Devices::CreatedAt))
                    .col(timestamp_with_time_zone(Devices::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_devices_owner")
                            .from(Devices::Table, Devices::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_devices_owner_external_id")
                    .table(Devices::Table)
                    .col(Devices::OwnerId)
                    .col(Devices::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Devices::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Devices {
    Table,
    Id,
    OwnerId,
    ExternalId,
    Name,
    Type,
    Location,
    Attributes,
    Status,
    ConnectorId,
    LastSeenAt,
    CreatedAt,
    UpdatedAt,
}
