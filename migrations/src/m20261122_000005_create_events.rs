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
                    .table(Events::Table)
                    .if_not_exists()
                    // AUTOINCREMENT on SQLite, BIGSERIAL on PostgreSQL: ids are
                    // never reused, so they are stable cursors.
                    .col(big_pk_auto(Events::Id))
                    .col(uuid(Events::DeviceId))
                    // Copied from the device so tenant-scoped listings use one
                    // index instead of a join.
                    .col(uuid(Events::OwnerId))
                    .col(string_len(Events::Service, 128))
                    .col(json_binary(Events::Payload))
                    .col(timestamp_with_time_zone_null(Events::OccurredAt))
                    .col(timestamp_with_time_zone(Events::ReceivedAt))
                    .col(string_len_null(Events::IdempotencyKey, 128))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_events_device")
                            .from(Events::Table, Events::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_events_device_id")
                    .table(Events::Table)
                    .col(Events::DeviceId)
                    .col(Events::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_events_owner_id")
                    .table(Events::Table)
                    .col(Events::OwnerId)
                    .col(Events::Id)
                    .to_owned(),
            )
            .await?;
        // A retried publish carries the same key: the second insert is refused
        // by this index and the stored event is returned instead.
        manager
            .create_index(
                Index::create()
                    .name("idx_events_device_idempotency_key")
                    .table(Events::Table)
                    .col(Events::DeviceId)
                    .col(Events::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    DeviceId,
    OwnerId,
    Service,
    Payload,
    OccurredAt,
    ReceivedAt,
    IdempotencyKey,
}
