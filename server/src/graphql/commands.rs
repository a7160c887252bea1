//! Commands: sending them to devices, reading them, answering them.

use super::connection::{Connection, connection};
use super::scalars::Timestamp;
use std::sync::Arc;

use async_graphql::{
    Context, ID, InputObject, Object, Subscription,
    futures_util::{
        Stream, StreamExt,
        stream::{self, BoxStream},
    },
};
use serde_json::Value as Json;

use super::{
    context::{principal, request, state},
    error::{ApiError, ApiResult, OrNotFound},
    input::{self, CursorKind},
    live,
    totals::TotalCount,
};
use crate::{
    bus::{self, BusCommand},
    config::Limits,
    store::{
        self, NewCommand,
        entity::{CommandStatus, Permission, command},
    },
};

const SERVICE_MAX: usize = 128;

/// A request sent to a device, and its answer.
pub struct Command(pub command::Model);

impl Command {
    fn shared(message: Arc<BusCommand>) -> Self {
        Command(message.command.clone())
    }
}

/// A request sent to a device through its gateway (switch a relay, set a
/// target), and the gateway's answer. It moves PENDING → DELIVERED →
/// SUCCEEDED or FAILED, or EXPIRED when nobody answers in time;
/// `commandUpdated` follows it.
#[Object]
impl Command {
    /// The command's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The device the command is for.
    async fn device_id(&self) -> ID {
        ID(self.0.device_id.to_string())
    }
    /// What to do, e.g. `set`.
    async fn service(&self) -> &str {
        &self.0.service
    }
    /// The command's arguments, as the JSON value the sender gave.
    async fn payload(&self) -> async_graphql::Json<&Json> {
        async_graphql::Json(&self.0.payload)
    }
    /// Where the command is in its life.
    async fn status(&self) -> CommandStatus {
        self.0.status
    }
    /// The gateway's answer, once it gave one.
    async fn result(&self) -> Option<async_graphql::Json<&Json>> {
        self.0.result.as_ref().map(async_graphql::Json)
    }
    /// When it was sent.
    async fn created_at(&self) -> Timestamp {
        self.0.created_at.into()
    }
    /// When its status last changed.
    async fn updated_at(&self) -> Timestamp {
        self.0.updated_at.into()
    }
    /// Unanswered by then, the command is EXPIRED.
    async fn expires_at(&self) -> Timestamp {
        self.0.expires_at.into()
    }
    /// When it was handed to the gateway; null before.
    async fn delivered_at(&self) -> Option<Timestamp> {
        self.0.delivered_at.map(Timestamp)
    }
    /// When the gateway answered; null before.
    async fn responded_at(&self) -> Option<Timestamp> {
        self.0.responded_at.map(Timestamp)
    }
}

/// Which commands to list; every field given must match.
#[derive(InputObject, Default)]
pub struct CommandFilter {
    /// Commands for one of these devices.
    pub device_ids: Option<Vec<ID>>,
    /// Commands of one of these services.
    pub services: Option<Vec<String>>,
    /// Commands in one of these statuses.
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

/// A command to send, for `sendCommand`.
#[derive(InputObject)]
pub struct SendCommandInput {
    /// The device the command is for; the caller must own it (or be ADMIN).
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
    /// One command, by id; NOT_FOUND unless the caller may see it.
    async fn command(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's id.")] id: ID,
    ) -> ApiResult<Command> {
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
        #[graphql(desc = "Which commands; all the caller may see when left out.")] filter: Option<
            CommandFilter,
        >,
        #[graphql(
            desc = "How many items at most, from the start or after `after`; at most the server's page size."
        )]
        first: Option<i32>,
        #[graphql(desc = "A cursor (`pageInfo.endCursor`, or an edge's): the items after it.")]
        after: Option<String>,
    ) -> ApiResult<Connection<Command>> {
        let caller = principal(ctx, Permission::Read)?;
        let app = state(ctx);
        let limits = &app.config.limits;
        let filter = filter.unwrap_or_default().into_store(limits)?;
        let args = input::page_args(CursorKind::Command, first, after, None, None, limits)?;
        let page = app
            .store
            .list_commands(caller.scope(), &filter, args, limits.default_page_size)
            .await?;
        Ok(connection(
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
    async fn send_command(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The device, what to do and how long it may take.")]
        input: SendCommandInput,
    ) -> ApiResult<Command> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let settings = &app.config.commands;
        input::text("service", &input.service, SERVICE_MAX)?;
        let payload = input.payload.map(|json| json.0).unwrap_or(Json::Null);
        input::json(
            "payload",
            &payload,
            app.config.limits.payload_bytes,
            app.config.limits.json_depth,
        )?;
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
            .service()
            .send_command(caller.scope(), new)
            .await
            .or_not_found("device")?;
        Ok(Command(command))
    }

    /// Answers a command: SUCCEEDED or FAILED, with an optional result. Only
    /// the connector session hosting the command's device may answer
    /// (FORBIDDEN otherwise); CONFLICT when it was already answered or has
    /// expired.
    async fn respond_command(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's id, as `commands` delivered it.")] id: ID,
        #[graphql(desc = "True for SUCCEEDED, false for FAILED.")] success: bool,
        #[graphql(desc = "What the device answered, as a JSON value.")] result: Option<
            async_graphql::Json<Json>,
        >,
    ) -> ApiResult<Command> {
        let caller = principal(ctx, Permission::Write)?;
        let app = state(ctx);
        let id = input::uuid_id("command", &id)?;
        let result = result.map(|json| json.0);
        if let Some(result) = &result {
            input::json(
                "result",
                result,
                app.config.limits.payload_bytes,
                app.config.limits.json_depth,
            )?;
        }
        let session = request(ctx).session.as_ref().map(|session| session.id);
        let command = app
            .service()
            .respond_command(id, caller.scope(), session, success, result)
            .await
            .or_not_found("command")?;
        Ok(Command(command))
    }
}

#[derive(Default)]
pub struct CommandSubscription;

#[Subscription]
impl CommandSubscription {
    /// For a gateway's connector session: the commands for the devices it
    /// hosts. Open commands queued while it was away come first (oldest
    /// first), then new ones as they are sent. Each is marked DELIVERED as it
    /// is handed over. Delivery is at least once: a command delivered just
    /// before a reconnect may come again (same id) if it was not answered.
    async fn commands(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<BoxStream<'static, ApiResult<Command>>> {
        let caller = principal(ctx, Permission::Read)?;
        let Some(session) = request(ctx).session.clone() else {
            return Err(ApiError::Forbidden(
                "`commands` is for connector sessions: name a connectorId in connection_init"
                    .into(),
            )
            .into());
        };
        let app = state(ctx);
        let commands =
            bus::command_delivery(app.store.clone(), app.bus.clone(), caller.scope(), session)
                .map(|item| item.map_err(ApiError::from));
        Ok(hand_over_or_resolve(ctx, commands))
    }

    /// Every change of one command: its current state first, then each
    /// transition (DELIVERED, SUCCEEDED, FAILED, EXPIRED); it completes once
    /// the command is final.
    async fn command_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The command's id.")] id: ID,
    ) -> async_graphql::Result<BoxStream<'static, ApiResult<Command>>> {
        let caller = principal(ctx, Permission::Read)?;
        let id = input::uuid_id("command", &id)?;
        let app = state(ctx);
        // Join the ring before reading, so no transition falls in between.
        let ring = app.bus.subscribe_commands();
        let current = app
            .store
            .command_by_id(id, caller.scope())
            .await
            .or_not_found("command")?;
        let updates = bus::command_updates(app.store.clone(), ring, caller.scope(), current)
            .map(|item| item.map_err(ApiError::from));
        Ok(hand_over_or_resolve(ctx, updates))
    }
}

/// Commands as a subscription returns them: handed over as a feed when the
/// WebSocket transport delivers the subscription itself, resolved as
/// [`Command`]s otherwise.
fn hand_over_or_resolve(
    ctx: &Context<'_>,
    commands: impl Stream<Item = ApiResult<Arc<BusCommand>>> + Send + 'static,
) -> BoxStream<'static, ApiResult<Command>> {
    if let Some(handoff) = ctx.data_opt::<live::Handoff>() {
        handoff.give(live::Feed::Commands(commands.boxed()));
        return stream::empty().boxed();
    }
    commands.map(|item| item.map(Command::shared)).boxed()
}
