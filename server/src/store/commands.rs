//! Queries on `commands`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
    sea_query::{Expr, Query},
};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    Scope, Store, StoreError,
    entity::{CommandStatus, command, device},
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

    /// Records a gateway's answer, given by connector session
    /// `answering_session` (if any). `Forbidden` unless that session hosts the
    /// command's device; `Conflict` when the command is no longer open
    /// (already answered, or expired). Checked in one transaction, so the
    /// device cannot move to another session in between.
    pub async fn respond_command(
        &self,
        id: Uuid,
        scope: Scope,
        answering_session: Option<Uuid>,
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
        let hosting = device::Entity::find_by_id(found.device_id)
            .one(&tx)
            .await?
            .and_then(|device| device.session_id);
        if answering_session.is_none() || hosting != answering_session {
            return Err(StoreError::Forbidden(
                "only the connector session hosting the device may answer its commands",
            ));
        }
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

    /// Marks every open command past its deadline EXPIRED and returns them.
    pub async fn expire_commands(&self) -> Result<Vec<command::Model>, StoreError> {
        let at = now();
        let open = [CommandStatus::Pending, CommandStatus::Delivered];
        // A read first: most sweeps find nothing and need no write lock.
        let due: Vec<Uuid> = command::Entity::find()
            .filter(command::Column::Status.is_in(open))
            .filter(command::Column::ExpiresAt.lte(at))
            .select_only()
            .column(command::Column::Id)
            .limit(1000)
            .into_tuple()
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.begin_write().await?;
        // Still open: an answer may have come in since the read.
        let expiring = command::Entity::find()
            .filter(command::Column::Id.is_in(due))
            .filter(command::Column::Status.is_in(open))
            .order_by_asc(command::Column::Id)
            .all(&tx)
            .await?;
        let mut expired = Vec::with_capacity(expiring.len());
        for found in expiring {
            let mut model: command::ActiveModel = found.into();
            model.status = Set(CommandStatus::Expired);
            model.updated_at = Set(at);
            expired.push(model.update(&tx).await?);
        }
        tx.commit().await?;
        Ok(expired)
    }

    /// The open, unexpired commands for devices bound to connector session
    /// `session_id`, oldest first: what a gateway gets when it subscribes.
    /// DELIVERED ones are included: the gateway may not have received them
    /// before it went away (delivery is at least once; ids identify repeats).
    pub async fn open_commands_for_session(
        &self,
        session_id: Uuid,
    ) -> Result<Vec<command::Model>, StoreError> {
        Ok(command::Entity::find()
            .filter(
                command::Column::DeviceId.in_subquery(
                    Query::select()
                        .column(device::Column::Id)
                        .from(device::Entity)
                        .and_where(device::Column::SessionId.eq(session_id))
                        .to_owned(),
                ),
            )
            .filter(
                command::Column::Status.is_in([CommandStatus::Pending, CommandStatus::Delivered]),
            )
            .filter(command::Column::ExpiresAt.gt(now()))
            .order_by_asc(command::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Marks a PENDING command DELIVERED to a connector session, if its
    /// device is still bound to that session: the check and the change are
    /// one statement, so a command is never handed to a session that has
    /// just lost its device to a newer one. Returns the command when this
    /// call changed it, `None` when it was not PENDING any more or its
    /// device is hosted elsewhere.
    pub async fn mark_delivered(
        &self,
        id: Uuid,
        session_id: Uuid,
    ) -> Result<Option<command::Model>, StoreError> {
        let at = now();
        let result = command::Entity::update_many()
            .col_expr(
                command::Column::Status,
                Expr::value(CommandStatus::Delivered),
            )
            .col_expr(command::Column::DeliveredAt, Expr::value(at))
            .col_expr(command::Column::UpdatedAt, Expr::value(at))
            .filter(command::Column::Id.eq(id))
            .filter(command::Column::Status.eq(CommandStatus::Pending))
            .filter(
                command::Column::DeviceId.in_subquery(
                    Query::select()
                        .column(device::Column::Id)
                        .from(device::Entity)
                        .and_where(device::Column::SessionId.eq(session_id))
                        .to_owned(),
                ),
            )
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Ok(None);
        }
        Ok(command::Entity::find_by_id(id).one(&self.db).await?)
    }
}
