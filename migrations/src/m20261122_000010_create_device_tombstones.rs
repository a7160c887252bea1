use sea_orm_migration::{prelude::*, schema::*};

/// `device_tombstones`: devices as they were when deleted, kept for a day, so
/// a `deviceChanged` subscriber that fell behind the live stream is told
/// about deletions it missed, not only about the devices that remain.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeviceTombstones::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeviceTombstones::Id))
                    .col(uuid(DeviceTombstones::DeviceId))
                    .col(uuid(DeviceTombstones::OwnerId))
                    // The device row as it was, serialised.
                    .col(json_binary(DeviceTombstones::Device))
                    .col(timestamp_with_time_zone(DeviceTombstones::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_device_tombstones_deleted_at")
                    .table(DeviceTombstones::Table)
                    .col(DeviceTombstones::DeletedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeviceTombstones::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum DeviceTombstones {
    Table,
    Id,
    DeviceId,
    OwnerId,
    Device,
    DeletedAt,
}
