//! `events` subscriptions delivered without async-graphql's per-event
//! execution.
//!
//! A subscription run by async-graphql keeps its execution state (the
//! parsed request, the boxed execution and field streams, the query
//! environment: ~9 KiB measured) for as long as it lives, and executes the
//! selection set once per event and per subscriber. For the subscription
//! that carries the traffic, `events`, that is most of an idle dashboard's
//! memory and most of the CPU of a busy one.
//!
//! So the WebSocket transport compiles the selection of an `events`
//! subscription into an [`EventPlan`] when it asks only for `Event`'s
//! scalar fields (`id`, `deviceId`, `service`, `payload`, `occurredAt`,
//! `receivedAt`, `idempotencyKey`, `__typename`, with aliases, fragments,
//! `@skip` and `@include`). It still lets async-graphql parse, validate and
//! run the `events` resolver, so limits, permissions, argument checks and
//! every error stay exactly those of the schema; the resolver, finding a
//! [`Handoff`] in the request's data, hands over its [`EventStream`]
//! instead of starting one. The transport then runs [`LiveEvents`]: that
//! stream, rendered by the plan. Anything else (`device { … }`, other
//! subscriptions, documents this module does not follow) runs through
//! async-graphql as before.
//!
//! Plans are interned by shape ([`Plans`]): subscribers asking for the same
//! fields under the same names share one plan, and a live event is
//! serialised once per plan, on the bus message they all share, not once per
//! subscriber. The output is byte-for-byte what async-graphql would send
//! (the end-to-end tests compare the two).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use async_graphql::{
    Name, PathSegment, Pos, Positioned, Request, Response, Value as ConstValue, Variables,
    futures_util::{Stream, StreamExt},
    parser::types::{
        Directive, DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType,
        Selection, SelectionSet,
    },
};

use super::error::ApiError;
use crate::{
    bus::{EventStream, LiveEvent},
    store::entity::event,
};

/// Where the `events` resolver leaves its stream for the transport, when
/// the request carries one in its data. Clones share the slot.
#[derive(Clone, Default)]
pub struct Handoff(Arc<Mutex<Option<EventStream>>>);

impl Handoff {
    pub fn give(&self, events: EventStream) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(events);
    }

    pub fn take(&self) -> Option<EventStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A scalar field of `Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EventField {
    Id,
    DeviceId,
    Service,
    Payload,
    OccurredAt,
    ReceivedAt,
    IdempotencyKey,
    Typename,
}

impl EventField {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "id" => EventField::Id,
            "deviceId" => EventField::DeviceId,
            "service" => EventField::Service,
            "payload" => EventField::Payload,
            "occurredAt" => EventField::OccurredAt,
            "receivedAt" => EventField::ReceivedAt,
            "idempotencyKey" => EventField::IdempotencyKey,
            "__typename" => EventField::Typename,
            _ => return None,
        })
    }
}

/// What a plan is interned by: the subscription's response key and the
/// event's fields under their response keys, in output order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    root: String,
    fields: Vec<(String, EventField)>,
}

/// How to serialise an event for one selection set.
#[derive(Debug)]
pub struct EventPlan {
    /// Unique among the plans alive: the key of the bus message's cache.
    id: u64,
    shape: Shape,
}

impl EventPlan {
    /// The `payload` of a `next` message carrying `event`, as async-graphql
    /// would serialise it: `{"data":{"<root>":{…}}}`.
    pub fn render(&self, event: &event::Model) -> String {
        let mut out = Vec::with_capacity(128 + event.service.len());
        out.extend_from_slice(b"{\"data\":{");
        push_key(&mut out, &self.shape.root);
        for (at, (key, field)) in self.shape.fields.iter().enumerate() {
            out.push(if at == 0 { b'{' } else { b',' });
            push_key(&mut out, key);
            let written = match field {
                EventField::Id => serde_json::to_writer(&mut out, &event.id.to_string()),
                EventField::DeviceId => {
                    serde_json::to_writer(&mut out, &event.device_id.to_string())
                }
                EventField::Service => serde_json::to_writer(&mut out, &event.service),
                EventField::Payload => serde_json::to_writer(&mut out, &event.payload),
                EventField::OccurredAt => {
                    serde_json::to_writer(&mut out, &event.occurred_at.map(|at| at.to_rfc3339()))
                }
                EventField::ReceivedAt => {
                    serde_json::to_writer(&mut out, &event.received_at.to_rfc3339())
                }
                EventField::IdempotencyKey => {
                    serde_json::to_writer(&mut out, &event.idempotency_key)
                }
                EventField::Typename => serde_json::to_writer(&mut out, "Event"),
            };
            written.expect("BUG: writing JSON to a Vec cannot fail");
        }
        out.extend_from_slice(b"}}}");
        String::from_utf8(out).expect("BUG: serde_json writes UTF-8")
    }
}

/// `"key":`. GraphQL names are ASCII letters, digits and underscores, but
/// they go through the JSON writer anyway.
fn push_key(out: &mut Vec<u8>, key: &str) {
    serde_json::to_writer(&mut *out, key).expect("BUG: writing JSON to a Vec cannot fail");
    out.push(b':');
}

/// The plans in use, interned by shape. Cheap to clone.
#[derive(Clone, Default)]
pub struct Plans(Arc<PlansInner>);

#[derive(Default)]
struct PlansInner {
    next_id: AtomicU64,
    interned: Mutex<HashMap<Shape, Weak<EventPlan>>>,
}

impl Plans {
    fn intern(&self, shape: Shape) -> Arc<EventPlan> {
        let mut interned = self.0.interned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = interned.get(&shape).and_then(Weak::upgrade) {
            return plan;
        }
        // Forget plans nobody uses any more before the map grows.
        if interned.len() >= interned.capacity() {
            interned.retain(|_, plan| plan.strong_count() > 0);
        }
        let plan = Arc::new(EventPlan {
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            shape: shape.clone(),
        });
        interned.insert(shape, Arc::downgrade(&plan));
        plan
    }

    /// How many distinct plans are alive.
    #[cfg(test)]
    fn alive(&self) -> usize {
        let interned = self.0.interned.lock().unwrap();
        interned.values().filter(|p| p.strong_count() > 0).count()
    }
}

/// An `events` subscription compiled for delivery outside async-graphql.
pub struct Compiled {
    plan: Arc<EventPlan>,
    /// Where the `events` field is in the document, for error locations.
    pos: Pos,
}

/// Fragments nested deeper than this are left to async-graphql (which
/// refuses cycles and enforces the depth limit).
const MAX_FRAGMENT_DEPTH: usize = 16;

/// Compiles `request` when it is an `events` subscription this module
/// can deliver, and leaves the parsed document in it for async-graphql.
/// `None`: run it through async-graphql.
pub fn compile(request: &mut Request, plans: &Plans) -> Option<Compiled> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let compiled = compile_document(
        &document,
        request.operation_name.as_deref(),
        &request.variables,
    )
    .map(|(shape, pos)| Compiled {
        plan: plans.intern(shape),
        pos,
    });
    request.set_parsed_query(document);
    compiled
}

fn compile_document(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Option<(Shape, Pos)> {
    // The operation async-graphql would run.
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), None) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        _ => return None,
    };
    if operation.node.ty != OperationType::Subscription {
        return None;
    }
    let [root] = operation.node.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(root) = &root.node else {
        return None;
    };
    if root.node.name.node != "events" || !root.node.directives.is_empty() {
        return None;
    }
    let mut fields = Vec::new();
    collect(
        &root.node.selection_set.node,
        &document.fragments,
        variables,
        0,
        &mut fields,
    )?;
    if fields.is_empty() {
        return None;
    }
    let shape = Shape {
        root: root.node.response_key().node.to_string(),
        fields,
    };
    Some((shape, root.pos))
}

/// Adds the fields `selection` picks on `Event`, in async-graphql's order:
/// fragments flattened in place, a response key's first occurrence wins.
fn collect(
    selection: &SelectionSet,
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    variables: &Variables,
    depth: usize,
    fields: &mut Vec<(String, EventField)>,
) -> Option<()> {
    if depth > MAX_FRAGMENT_DEPTH {
        return None;
    }
    for item in &selection.items {
        if skipped(item.node.directives(), variables)? {
            continue;
        }
        match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                if !field.arguments.is_empty() || !field.selection_set.node.items.is_empty() {
                    return None;
                }
                let kind = EventField::named(&field.name.node)?;
                let key = field.response_key().node.as_str();
                match fields.iter().find(|(seen, _)| seen == key) {
                    None => fields.push((key.to_owned(), kind)),
                    Some((_, seen)) if *seen == kind => {}
                    // Conflicting fields under one key: async-graphql
                    // refuses the document.
                    Some(_) => return None,
                }
            }
            Selection::FragmentSpread(spread) => {
                let fragment = fragments.get(&spread.node.fragment_name.node)?;
                if fragment.node.type_condition.node.on.node != "Event" {
                    return None;
                }
                collect(
                    &fragment.node.selection_set.node,
                    fragments,
                    variables,
                    depth + 1,
                    fields,
                )?;
            }
            Selection::InlineFragment(inline) => {
                let on = inline.node.type_condition.as_ref();
                if on.is_some_and(|on| on.node.on.node != "Event") {
                    return None;
                }
                collect(
                    &inline.node.selection_set.node,
                    fragments,
                    variables,
                    depth + 1,
                    fields,
                )?;
            }
        }
    }
    Some(())
}

/// Whether `@skip`/`@include` drop a selection, decided the way
/// async-graphql decides it (`remove_skipped_selection`: a variable that
/// is not given, or not a boolean, counts as false). `None` for any other
/// directive.
fn skipped(directives: &[Positioned<Directive>], variables: &Variables) -> Option<bool> {
    let mut skipped = false;
    for directive in directives {
        let include = match directive.node.name.node.as_str() {
            "skip" => false,
            "include" => true,
            _ => return None,
        };
        if let Some(condition) = directive.node.get_argument("if") {
            let value = condition
                .node
                .clone()
                .into_const_with(|name| variables.get(&name).cloned().ok_or(()))
                .unwrap_or_default();
            let value = matches!(value, ConstValue::Boolean(true));
            skipped |= include != value;
        }
    }
    Some(skipped)
}

/// What a compiled subscription sends.
pub enum Next {
    /// The `payload` of a `next` message, serialised.
    Payload(Arc<str>),
    /// An error, as async-graphql would have sent it.
    Error(Box<Response>),
}

/// An `events` subscription: the bus's lossless stream, rendered by its
/// plan.
pub struct LiveEvents {
    events: EventStream,
    compiled: Compiled,
}

impl LiveEvents {
    pub fn new(events: EventStream, compiled: Compiled) -> Self {
        LiveEvents { events, compiled }
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

impl Stream for LiveEvents {
    type Item = Next;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let this = self.get_mut();
        let plan = &this.compiled.plan;
        let next = match ready!(this.events.poll_next_unpin(cx)) {
            None => return Poll::Ready(None),
            Some(Ok(LiveEvent::Live(message))) => Next::Payload(
                message
                    .renderings
                    .get_or_render(plan.id, || plan.render(&message.event)),
            ),
            Some(Ok(LiveEvent::Stored(event))) => Next::Payload(plan.render(&event).into()),
            Some(Ok(LiveEvent::Gap { pruned_through })) => {
                Next::Error(this.error(ApiError::EventsPruned { pruned_through }))
            }
            // The event stream ends after an error.
            Some(Err(err)) => Next::Error(this.error(ApiError::from(err))),
        };
        Poll::Ready(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str, variables: serde_json::Value) -> Option<Vec<(String, EventField)>> {
        let mut request = Request::new(query).variables(Variables::from_json(variables.clone()));
        let plans = Plans::default();
        compile(&mut request, &plans).map(|c| c.plan.shape.fields.clone())
    }

    fn keys(fields: Option<Vec<(String, EventField)>>) -> Option<Vec<String>> {
        fields.map(|f| f.into_iter().map(|(k, _)| k).collect())
    }

    #[test]
    fn compiles_scalar_selections_with_aliases_fragments_and_directives() {
        let q = "subscription { events { id service } }";
        assert_eq!(
            keys(shape(q, serde_json::json!({}))).unwrap(),
            ["id", "service"]
        );

        let q = "subscription S($on: Boolean!) { e: events(after: \"0\") { \
                 n: id ...F @include(if: $on) ... on Event { service } ... { id } } } \
                 fragment F on Event { payload id }";
        assert_eq!(
            keys(shape(q, serde_json::json!({"on": true}))).unwrap(),
            ["n", "payload", "id", "service"]
        );
        assert_eq!(
            keys(shape(q, serde_json::json!({"on": false}))).unwrap(),
            ["n", "service", "id"]
        );
        // Missing or non-boolean variables count as false, as in async-graphql.
        assert_eq!(
            keys(shape(q, serde_json::json!({}))).unwrap(),
            ["n", "service", "id"]
        );
    }

    #[test]
    fn leaves_everything_else_to_async_graphql() {
        let none = |q: &str| shape(q, serde_json::json!({})).is_none();
        assert!(none("subscription { events { id device { id } } }"));
        assert!(none("subscription { deviceChanged { kind } }"));
        assert!(none("query { events { nodes { id } } }"));
        assert!(none(
            "subscription { events { id } events2: events { id } }"
        ));
        assert!(none("subscription { events @skip(if: false) { id } }"));
        assert!(none("subscription { events { id @deprecated } }"));
        assert!(none("subscription { events { nope } }"));
        assert!(none("subscription { events { id: service id } }"));
        assert!(none("subscription { events { ... on Device { id } } }"));
        assert!(none("subscription { events { ...Missing } }"));
        assert!(none("subscription { events { id @skip(if: true) } }"));
        assert!(none(
            "subscription A { events { id } } subscription B { events { id } }"
        ));
        assert!(none(
            "subscription { events { ...F } } fragment F on Event { ...F }"
        ));
        assert!(none("not graphql"));
    }

    #[test]
    fn identical_selections_share_a_plan() {
        let plans = Plans::default();
        let mut a = Request::new("subscription { events { id service } }");
        let mut b = Request::new("subscription   { events { id, service } }");
        let mut c = Request::new("subscription { events { service id } }");
        let (a, b, c) = (
            compile(&mut a, &plans).unwrap(),
            compile(&mut b, &plans).unwrap(),
            compile(&mut c, &plans).unwrap(),
        );
        assert!(Arc::ptr_eq(&a.plan, &b.plan));
        assert!(!Arc::ptr_eq(&a.plan, &c.plan));
        assert_eq!(plans.alive(), 2);
        drop((a, b));
        assert_eq!(plans.alive(), 1);
    }
}
