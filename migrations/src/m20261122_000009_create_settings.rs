use sea_orm_migration::{prelude::*, schema::*};

/// `settings`: small facts the server keeps about itself, by key. The first
/// is `events_pruned_through`: the highest event id retention has deleted,
/// so a subscriber asking to resume below it is told it missed events.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .if_not_exists()
                    .col(string_len(Settings::Key, 64).primary_key())
                    .col(string(Settings::Value))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Settings::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
}
