//! Subscriptions delivered without async-graphql's per-item execution.
//!
//! A subscription run by async-graphql keeps its execution state (the
//! parsed request, the boxed execution and field streams, the query
//! environment: ~9 KiB measured) for as long as it lives, and executes the
//! selection set once per item and per subscriber. For the subscriptions
//! that carry live traffic that is most of an idle dashboard's memory and
//! most of the CPU of a busy one.
//!
//! So the WebSocket transport compiles the selection of an `events`,
//! `deviceChanged`, `commands` or `commandUpdated` subscription into a
//! [`Plan`] when it asks only for fields the bus message holds (`Event`,
//! `DeviceChange` with its `Device`, `Command`; with aliases, fragments,
//! `@skip` and `@include`). It still lets async-graphql parse, validate and
//! run the resolver, so limits, permissions, argument checks and every
//! error stay exactly those of the schema; the resolver, finding a
//! [`Handoff`] in the request's data, hands over its [`Feed`] instead of
//! returning a stream. The transport then runs [`Live`]: that feed,
//! rendered by the plan. Anything else (`Event.device`, other
//! subscriptions, documents `plan` does not follow) runs through
//! async-graphql as before.
//!
//! Plans are interned by shape ([`Plans`]): subscribers asking for the same
//! fields under the same names share one plan, and a live bus message is
//! serialised once per plan, on the message they all share (its
//! [`Renderings`](crate::bus::Renderings)), not once per subscriber. The
//! output is byte-for-byte what async-graphql would send (the end-to-end
//! tests compare the two).
//!
//! The publishing mutations, `publishEvent` and `publishEvents`, are
//! compiled the same way and run without async-graphql's execution once
//! async-graphql has run their document once (`publish`).
//!
//! # Layout
//! - this module: the handoff, and the stream the transport sends;
//! - `plan`: what a selection compiles to, and how it renders;
//! - `publish`: the compiled publishing mutations.

/// Selections compiled to plans, and their rendering.
mod plan;
/// `publishEvent(s)` without async-graphql's execution.
mod publish;

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use async_graphql::{
    PathSegment, Pos, Request, Response,
    futures_util::{Stream, StreamExt, stream::BoxStream},
};

pub use self::plan::Plans;
use self::plan::{Item, ObjectType, Plan};
pub use self::publish::{Prepared, Publish};
use super::error::ApiError;
use crate::bus::{BusCommand, DeviceChange, EventStream, LiveEvent};

/// What a subscription resolver hands the transport instead of a stream of
/// GraphQL objects: the stream of bus messages it would have resolved.
pub enum Feed {
    /// `events`.
    Events(EventStream),
    /// `deviceChanged`.
    Devices(BoxStream<'static, Result<Arc<DeviceChange>, ApiError>>),
    /// `commands` and `commandUpdated`.
    Commands(BoxStream<'static, Result<Arc<BusCommand>, ApiError>>),
}

impl Feed {
    fn streams(&self) -> ObjectType {
        match self {
            Feed::Events(_) => ObjectType::Event,
            Feed::Devices(_) => ObjectType::DeviceChange,
            Feed::Commands(_) => ObjectType::Command,
        }
    }
}

/// Where a subscription resolver leaves its feed for the transport, when
/// the request carries one in its data. Clones share the slot.
#[derive(Clone, Default)]
pub struct Handoff(Arc<Mutex<Option<Feed>>>);

impl Handoff {
    pub fn give(&self, feed: Feed) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(feed);
    }

    pub fn take(&self) -> Option<Feed> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A subscription compiled for delivery outside async-graphql.
pub struct Compiled {
    plan: Arc<Plan>,
    /// Where the root field is in the document, for error locations.
    pos: Pos,
}

/// Compiles `request` when it is a subscription this module can deliver,
/// and leaves the parsed document in it for async-graphql. `None`: run it
/// through async-graphql.
///
/// The document is the one admission parsed (`Request::parsed_query`
/// parses only if nothing did): parsing is the largest single cost of a
/// small operation such as `publishEvent`, and was paid twice.
pub fn compile(request: &mut Request, plans: &Plans) -> Option<Compiled> {
    // Moved out and back so the document can be borrowed beside them.
    let operation_name = request.operation_name.take();
    let variables = std::mem::take(&mut request.variables);
    let compiled = request.parsed_query().ok().and_then(|document| {
        plan::compile_document(document, operation_name.as_deref(), &variables)
    });
    request.operation_name = operation_name;
    request.variables = variables;
    compiled.map(|(shape, pos)| Compiled {
        plan: plans.intern(shape),
        pos,
    })
}

/// What a compiled subscription sends.
pub enum Next {
    /// The `payload` of a `next` message, serialised.
    Payload(Arc<str>),
    /// An error, as async-graphql would have sent it.
    Error(Box<Response>),
}

/// A compiled subscription: its resolver's feed, rendered by its plan.
pub struct Live {
    feed: Feed,
    compiled: Compiled,
}

impl Live {
    /// `None` when `feed` is not what the plan renders (a resolver handing
    /// over the wrong feed: a bug).
    pub fn new(feed: Feed, compiled: Compiled) -> Option<Self> {
        (feed.streams() == compiled.plan.shape.ty).then_some(Live { feed, compiled })
    }

    fn error(&self, error: ApiError) -> Box<Response> {
        let error = async_graphql::Error::from(error)
            .into_server_error(self.compiled.pos)
            .with_path(vec![PathSegment::Field(
                self.compiled.plan.shape.root.clone(),
            )]);
        Box::new(Response::from_errors(vec![error]))
    }
}

impl Stream for Live {
    type Item = Next;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let this = self.get_mut();
        let plan = &this.compiled.plan;
        // Each feed ends after an error.
        let next = match &mut this.feed {
            Feed::Events(events) => match ready!(events.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(LiveEvent::Live(message))) => Ok(message
                    .renderings
                    .get_or_render(plan.id, || plan.render(Item::Event(&message.event)))),
                Some(Ok(LiveEvent::Stored(event))) => Ok(plan.render(Item::Event(&event)).into()),
                Some(Ok(LiveEvent::Gap { pruned_through })) => {
                    Err(ApiError::EventsPruned { pruned_through })
                }
                Some(Err(err)) => Err(ApiError::from(err)),
            },
            Feed::Devices(changes) => match ready!(changes.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(change)) => Ok(change
                    .renderings
                    .get_or_render(plan.id, || plan.render(Item::Change(&change)))),
                Some(Err(err)) => Err(err),
            },
            Feed::Commands(commands) => match ready!(commands.poll_next_unpin(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(message)) => Ok(message
                    .renderings
                    .get_or_render(plan.id, || plan.render(Item::Command(&message.command)))),
                Some(Err(err)) => Err(err),
            },
        };
        Poll::Ready(Some(match next {
            Ok(payload) => Next::Payload(payload),
            Err(err) => Next::Error(this.error(err)),
        }))
    }
}
