use sea_orm_migration::{prelude::*, schema::*};

use super::m20261122_000004_create_devices::Devices;

/// Presence is keyed by connector session: a device records the session and
/// node hosting it, so a late close of an old session cannot mark OFFLINE a
/// device that a newer session has brought back ONLINE.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .add_column(uuid_null(DeviceSessions::SessionId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .add_column(uuid_null(DeviceSessions::NodeId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_devices_session_id")
                    .table(Devices::Table)
                    .col(DeviceSessions::SessionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_devices_session_id")
                    .table(Devices::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .drop_column(DeviceSessions::NodeId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Devices::Table)
                    .drop_column(DeviceSessions::SessionId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum DeviceSessions {
    SessionId,
    NodeId,
}
