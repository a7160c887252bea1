//! Commands: sending them to devices, reading them, answering them.

use async_graphql::{Context, ID, InputObject, Object, connection::Connection};
use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::{
    context::{principal, state},
    error::{ApiError, ApiResult, OrNotFound},
    input::{self, CursorKind},
    totals::TotalCount,
};
use crate::{
    config::Limits,
    store::{
        self, NewCommand,
        entity::{CommandStatus, Permission, command},
    },
};

const SERVICE_MAX: usize = 128;

/// A request sent to a device, and its answer.
pub struct Command(pub command::Model);

#[Object]
impl Command {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn device_id(&self) -> ID {
        ID(self.0.device_id.to_string())
    }
    /// What to do, e.g. `set`.
    async fn service(&self) -> &str {
        &self.0.service
    }
    async fn payload(&self) -> async_graphql::Json<&Json> {
        async_graphql::Json(&self.0.payload)
    }
    async fn status(&self) -> CommandStatus {
        self.0.status
    }
    /// The gateway's answer, once it gave one.
    async fn result(&self) -> Option<async_graphql::Json<&Json>> {
        self.0.result.as_ref().map(async_graphql::Json)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Unanswered by then, the command is EXPIRED.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
    async fn responded_at(&self) -> Option<DateTime<Utc>> {
        self.0.responded_at
    }
}

/// Which commands to list; every field given must match.
#[derive(InputObject, Default)]
pub struct CommandFilter {
    pub device_ids: Option<Vec<ID>>,
    pub services: Option<Vec<String>>,
    pub statuses: Option<Vec<CommandStatus>>,
}

impl CommandFilter {
    fn into_store(self, limits: &Limits) -> ApiResult<store::CommandFilter> {
        let max = limits.filter_values;
        input::filter_list("deviceIds", &self.device_ids, max)?;
        input::filter_list("services", &self.services, max)?;
        input::filter_list("statuses", &self.statuses, max)?;
        Ok(store::CommandFilter {
            device_ids: input::uuid_ids("device", &self.device_ids)?,
            services: self.services,
            statuses: self.statuses,
        })
    }
}

#[derive(InputObject)]
pub struct SendCommandInput {
    pub device_id: ID,
    /// What to do (1–128 characters), e.g. `set`.
    pub service: String,
    /// At most `limits.payload_bytes` as JSON. Default: `null`.
    pub payload: Option<async_graphql::Json<Json>>,
    /// Seconds the device has to answer before the command EXPIRES. Default:
    /// `commands.default_timeout_seconds` (300).
    pub timeout_seconds: Option<i32>,
}

#[derive(Default)]
pub struct CommandQuery;

#[Object]
impl CommandQuery {
    async fn command(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Command> {
        let caller = principal(ctx, Permission::Read)?;
        let id = input::uuid_id("command", &id)?;
        let found = state(ctx)
            .store
            .command_by_id(id, caller.scope())
            .await
            .or_not_found("command")?;
        Ok(Command(found))
    }

    /// Commands, newest first.
    async fn commands(
        &self,
        ctx: &Context<'_>,
        filter: Option<CommandFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Command, TotalCount>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        let limits = &app.config.limits;
        let filter = filter.unwrap_or_default().into_store(limits)?;
        let args = input::page_args(CursorKind::Command, first, after, None, None, limits)?;
        let page = app
            .store
            .list_commands(caller.scope(), &filter, args, limits.default_page_size)
            .await?;
        Ok(input::connection(
            page,
            CursorKind::Command,
            |c| c.id.to_string(),
            Command,
            TotalCount::Commands(caller.scope(), filter),
        ))
    }
}

#[derive(Default)]
pub struct CommandMutation;

#[Object]
impl CommandMutation {
    /// Queues a command for a device (PENDING).
    async fn send_command(&self, ctx: &Context<'_>, input: SendCommandInput) -> ApiResult<Command> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let settings = &app.config.commands;
        input::text("service", &input.service, SERVICE_MAX)?;
        let payload = input.payload.map(|json| json.0).unwrap_or(Json::Null);
        input::json_size("payload", &payload, app.config.limits.payload_bytes)?;
        let timeout = match input.timeout_seconds {
            None => settings.default_timeout_seconds,
            Some(seconds) if seconds >= 1 && seconds as u64 <= settings.max_timeout_seconds => {
                seconds as u64
            }
            Some(_) => {
                return Err(ApiError::bad_input(format!(
                    "timeoutSeconds must be between 1 and {}",
                    settings.max_timeout_seconds
                )));
            }
        };
        let expires_at = store::now() + chrono::Duration::seconds(timeout as i64);
        let new = NewCommand {
            device_id: input::uuid_id("device", &input.device_id)?,
            service: input.service,
            payload,
            expires_at,
        };
        let command = app
            .store
            .insert_command(caller.scope(), new)
            .await
            .or_not_found("device")?;
        Ok(Command(command))
    }

    /// Answers a command: SUCCEEDED or FAILED, with an optional result.
    /// CONFLICT when it was already answered or has expired.
    async fn respond_command(
        &self,
        ctx: &Context<'_>,
        id: ID,
        success: bool,
        result: Option<async_graphql::Json<Json>>,
    ) -> ApiResult<Command> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let id = input::uuid_id("command", &id)?;
        let result = result.map(|json| json.0);
        if let Some(result) = &result {
            input::json_size("result", result, app.config.limits.payload_bytes)?;
        }
        let command = app
            .store
            .respond_command(id, caller.scope(), success, result)
            .await
            .or_not_found("command")?;
        Ok(Command(command))
    }
}
