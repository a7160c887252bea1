use sea_orm_migration::{prelude::*, schema::*};

use super::m20261122_000001_create_users::Users;

/// Revocation that reaches every open socket, whoever revoked:
///
/// - `users.session_epoch`: access tokens carry the epoch they were issued
///   in; changing the password or disabling the user moves it on, and
///   older tokens stop working at once (not when they expire).
/// - `users.disabled_at`: a disabled user cannot sign in, and none of its
///   credentials work; its rows stay.
/// - `revocations`: a row each time a user's credentials change (a key
///   revoked, the password or the role changed, the user disabled or
///   deleted), written in the transaction that changed them. Every node
///   reads new rows about twice a second, and the user's sockets there
///   check their credential against the store again — also after changes
///   made by the CLI, in another process, which no bus reaches.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(integer(UserRevocation::SessionEpoch).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(timestamp_with_time_zone_null(UserRevocation::DisabledAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Revocations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Revocations::Id))
                    .col(uuid(Revocations::UserId))
                    .col(timestamp_with_time_zone(Revocations::At))
                    .to_owned(),
            )
            .await?;
        // Pruned by age.
        manager
            .create_index(
                Index::create()
                    .name("idx_revocations_at")
                    .table(Revocations::Table)
                    .col(Revocations::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Revocations::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(UserRevocation::DisabledAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(UserRevocation::SessionEpoch)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UserRevocation {
    SessionEpoch,
    DisabledAt,
}

#[derive(DeriveIden)]
enum Revocations {
    Table,
    Id,
    UserId,
    At,
}
