use sea_orm_migration::{prelude::*, schema::*};

use super::m20261122_000004_create_devices::Devices;

/// `device_status_changes`: every ONLINE / OFFLINE / DISCONNECTED a device
/// went through, with the gateway it was on, for the dashboard's status
/// timeline. Written in the transaction that changes the device; deleted
/// with the device, and by retention with the events.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeviceStatusChanges::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeviceStatusChanges::Id))
                    .col(uuid(DeviceStatusChanges::DeviceId))
                    .col(string_len(DeviceStatusChanges::Status, 16))
                    .col(string_len_null(DeviceStatusChanges::ConnectorId, 128))
                    .col(timestamp_with_time_zone(DeviceStatusChanges::At))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_device_status_changes_device")
                            .from(DeviceStatusChanges::Table, DeviceStatusChanges::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A device's history, newest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_device_status_changes_device")
                    .table(DeviceStatusChanges::Table)
                    .col(DeviceStatusChanges::DeviceId)
                    .col(DeviceStatusChanges::Id)
                    .to_owned(),
            )
            .await?;
        // Retention deletes by age.
        manager
            .create_index(
                Index::create()
                    .name("idx_device_status_changes_at")
                    .table(DeviceStatusChanges::Table)
                    .col(DeviceStatusChanges::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeviceStatusChanges::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DeviceStatusChanges {
    Table,
    Id,
    DeviceId,
    Status,
    ConnectorId,
    At,
}
