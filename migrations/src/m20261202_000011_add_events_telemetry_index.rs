use sea_orm_migration::prelude::*;

/// An index for `telemetry`: one device's events of one service, by the time
/// they happened — the device's clock when it sent one, else the server's.
///
/// The key is an expression, which sea-query 1.0 can write for PostgreSQL but
/// not for SQLite (it panics), so this one statement is written out; the text
/// is the same on both backends. The store's telemetry query repeats the
/// expression exactly, which is what lets both planners use the index.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The index's name; `down` drops it.
const INDEX: &str = "idx_events_device_service_time";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {INDEX} ON events \
                 (device_id, service, (COALESCE(occurred_at, received_at)))"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(Alias::new("events"))
                    .to_owned(),
            )
            .await
    }
}
