//! Queries on `commands`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, Set,
    sea_query::Expr,
};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    Scope, Store, StoreError,
    entity::{CommandStatus, command},
    now,
    page::{Order, Page, PageArgs, fetch_page},
    scoped,
};

/// Which commands a list returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct CommandFilter {
    pub device_ids: Option<Vec<Uuid>>,
    pub services: Option<Vec<String>>,
    pub statuses: Option<Vec<CommandStatus>>,
}

impl CommandFilter {
    fn condition(&self) -> Condition {
        let mut all = Condition::all();
        if let Some(device_ids) = &self.device_ids {
            all = all.add(command::Column::DeviceId.is_in(device_ids.iter().copied()));
        }
        if let Some(services) = &self.services {
            all = all.add(command::Column::Service.is_in(services.iter().cloned()));
        }
        if let Some(statuses) = &self.statuses {
            all = all.add(command::Column::Status.is_in(statuses.iter().copied()));
        }
        all
    }
}

/// A command to queue for a device.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub device_id: Uuid,
    pub service: String,
    pub payload: Json,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    pub async fn command_by_id(
        &self,
        id: Uuid,
        scope: Scope,
    ) -> Result<command::Model, StoreError> {
        scoped(
            command::Entity::find_by_id(id),
            scope,
            command::Column::OwnerId,
        )
        .one(&self.db)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// A page of commands, newest first.
    pub async fn list_commands(
        &self,
        scope: Scope,
        filter: &CommandFilter,
        args: PageArgs<Uuid>,
        default_size: u64,
    ) -> Result<Page<command::Model>, StoreError> {
        let query = scoped(command::Entity::find(), scope, command::Column::OwnerId)
            .filter(filter.condition());
        fetch_page(
            &self.db,
            query,
            command::Column::Id,
            Order::Descending,
            args,
            default_size,
        )
        .await
    }

    pub async fn count_commands(
        &self,
        scope: Scope,
        filter: &CommandFilter,
    ) -> Result<u64, StoreError> {
        Ok(
            scoped(command::Entity::find(), scope, command::Column::OwnerId)
                .filter(filter.condition())
                .count(&self.db)
                .await?,
        )
    }

    /// Queues a command (PENDING) for a device in `scope`.
    pub async fn insert_command(
        &self,
        scope: Scope,
        new: NewCommand,
    ) -> Result<command::Model, StoreError> {
        let device = self.device_by_id(new.device_id, scope).await?;
        let at = now();
        let model = command::ActiveModel {
            id: Set(Uuid::now_v7()),
            device_id: Set(device.id),
            owner_id: Set(device.owner_id),
            service: Set(new.service),
            payload: Set(new.payload),
            status: Set(CommandStatus::Pending),
            result: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
            expires_at: Set(new.expires_at),
            delivered_at: Set(None),
            responded_at: Set(None),
        };
        // The device may be deleted between the lookup and the insert; the
        // foreign key then refuses the row, which is a plain "not found".
        model.insert(&self.db).await.map_err(|err| {
            if matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
            ) {
                StoreError::NotFound
            } else {
                err.into()
            }
        })
    }

    /// Records a gateway's answer. `Conflict` when the command is no longer
    /// open (already answered, or expired).
    pub async fn respond_command(
        &self,
        id: Uuid,
        scope: Scope,
        success: bool,
        result: Option<Json>,
    ) -> Result<command::Model, StoreError> {
        let tx = self.begin_write().await?;
        let found = scoped(
            command::Entity::find_by_id(id),
            scope,
            command::Column::OwnerId,
        )
        .one(&tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let at = now();
        if !found.status.is_open() {
            return Err(StoreError::Conflict(
                "the command has already been answered or has expired",
            ));
        }
        if found.expires_at <= at {
            let mut model: command::ActiveModel = found.into();
            model.status = Set(CommandStatus::Expired);
            model.updated_at = Set(at);
            model.update(&tx).await?;
            tx.commit().await?;
            return Err(StoreError::Conflict("the command has expired"));
        }
        let mut model: command::ActiveModel = found.into();
        model.status = Set(if success {
            CommandStatus::Succeeded
        } else {
            CommandStatus::Failed
        });
        model.result = Set(result);
        model.responded_at = Set(Some(at));
        model.updated_at = Set(at);
        let saved = model.update(&tx).await?;
        tx.commit().await?;
        Ok(saved)
    }

    /// Marks every open command past its deadline EXPIRED; returns how many.
    pub async fn expire_commands(&self) -> Result<u64, StoreError> {
        let at = now();
        let result = command::Entity::update_many()
            .col_expr(command::Column::Status, Expr::value(CommandStatus::Expired))
            .col_expr(command::Column::UpdatedAt, Expr::value(at))
            .filter(
                command::Column::Status.is_in([CommandStatus::Pending, CommandStatus::Delivered]),
            )
            .filter(command::Column::ExpiresAt.lte(at))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}
