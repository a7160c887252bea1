use sea_orm_migration::{prelude::*, schema::*};

use super::m20261122_000004_create_devices::Devices;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Commands::Table)
                    .if_not_exists()
                    // UUIDv7: ids sort by creation time and serve as cursors.
                    .col(pk_uuid(Commands::Id))
                    .col(uuid(Commands::DeviceId))
                    .col(uuid(Commands::OwnerId))
                    .col(string_len(Commands::Service, 128))
                    .col(json_binary(Commands::Payload))
                    .col(string_len(Commands::Status, 16))
                    .col(json_binary_null(Commands::Result))
                    .col(timestamp_with_time_zone(Commands::CreatedAt))
                    .col(timestamp_with_time_zone(Commands::UpdatedAt))
                    .col(timestamp_with_time_zone(Commands::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Commands::DeliveredAt))
                    .col(timestamp_with_time_zone_null(Commands::RespondedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_commands_device")
                            .from(Commands::Table, Commands::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_commands_device_status")
                    .table(Commands::Table)
                    .col(Commands::DeviceId)
                    .col(Commands::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_commands_owner_id")
                    .table(Commands::Table)
                    .col(Commands::OwnerId)
                    .col(Commands::Id)
                    .to_owned(),
            )
            .await?;
        // The expiry sweeper looks for open commands past their deadline.
        manager
            .create_index(
                Index::create()
                    .name("idx_commands_status_expires_at")
                    .table(Commands::Table)
                    .col(Commands::Status)
                    .col(Commands::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Commands::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Commands {
    Table,
    Id,
    DeviceId,
    OwnerId,
    Service,
    Payload,
    Status,
    Result,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    DeliveredAt,
    RespondedAt,
}
