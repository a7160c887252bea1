//! `publishEvent` and `publishEvents` run without async-graphql's
//! execution: the compiled path of a gateway sending one reading at a time.
//!
//! Run by async-graphql, every publish builds a query environment, walks
//! the selection through the extension chain, resolves each field into a
//! value tree and serialises that tree: most of the CPU a publish cost once
//! parsing was cached (docs/PERFORMANCE.md, "Where each microsecond
//! goes"). Here a publishing document is compiled once into a
//! [`PublishShape`] (the root field, its variable, the `Event` selection),
//! the variables are checked and converted straight into the ingest's
//! `NewEvent`s, and the stored events are rendered by the same writer that
//! renders compiled subscriptions.
//!
//! What keeps the answers those of the schema, byte for byte:
//! - **A document is trusted only after async-graphql has run it once**
//!   without a request error (it parsed and validated): until then, and
//!   for any document whose meaning could depend on its variables' values
//!   ([`plan::compile_publish`]), the general path runs. Documents keeps
//!   the compiled shape beside the parsed document (`documents`), so a
//!   trusted text is neither parsed nor compiled again, and, its cost
//!   being that of its text alone, not counted again either.
//! - **Anything unusual goes to async-graphql**: [`Publish::prepare`] is
//!   side-effect free and returns `None` for any input the general path
//!   would refuse or treat with care (an unknown or missing field, a value
//!   of another type, too many events, a caller without WRITE, any input
//!   the resolver's checks refuse), and the caller runs the request
//!   through async-graphql, which produces the error exactly as before.
//! - **What happens after the write** (the store refusing the device, the
//!   server stopping) is the resolver's error, built the way async-graphql
//!   builds it: the message and code of `ApiError`, the root field's
//!   location and path, `data: null` (the fields are non-null).
//!
//! The end-to-end test `compiled_publishing` compares the two paths' answers
//! and errors byte for byte.

use async_graphql::{InputType, PathSegment, Response, Value as ConstValue, Variables};

use super::plan::PublishShape;
use crate::{
    AppState,
    config::Limits,
    graphql::{
        RequestContext,
        events::{EventInput, stored_or_error},
    },
    store::{NewEvent, Scope, entity::Permission},
};

/// A publishing document compiled, for one operation name.
#[derive(Debug)]
pub struct Publish {
    /// The operation the shape is of (`operationName`).
    pub operation_name: Option<String>,
    pub shape: PublishShape,
}

/// A publish ready to store: the caller's scope and its events.
pub struct Prepared {
    scope: Scope,
    events: Vec<NewEvent>,
}

impl Publish {
    /// `document`'s operation compiled, when it is a publish this path
    /// runs (not yet trusted: see the module's documentation).
    pub fn compile(
        document: &async_graphql::parser::types::ExecutableDocument,
        operation_name: Option<&str>,
    ) -> Option<Self> {
        let shape = super::plan::compile_publish(document, operation_name)?;
        Some(Publish {
            operation_name: operation_name.map(str::to_owned),
            shape,
        })
    }

    /// The request's operation compiled (from the document admission
    /// parsed), when it is a publish this path runs.
    pub fn compile_request(request: &mut async_graphql::Request) -> Option<Self> {
        // Moved out and back so the document can be borrowed beside it.
        let operation_name = request.operation_name.take();
        let compiled = request
            .parsed_query()
            .ok()
            .and_then(|document| Publish::compile(document, operation_name.as_deref()));
        request.operation_name = operation_name;
        compiled
    }

    /// The caller's events when everything about them is as the general
    /// path would accept it; `None` sends the request to async-graphql.
    pub fn prepare(
        &self,
        variables: &Variables,
        context: &RequestContext,
        limits: &Limits,
    ) -> Option<Prepared> {
        let caller = context.caller(Permission::Write).ok()?;
        let value = variables.get(&self.shape.variable)?;
        let events = if self.shape.list {
            let ConstValue::List(inputs) = value else {
                return None;
            };
            if inputs.is_empty() || inputs.len() > limits.batch_events {
                return None;
            }
            inputs
                .iter()
                .map(|input| new_event(input, limits))
                .collect::<Option<Vec<_>>>()?
        } else {
            vec![new_event(value, limits)?]
        };
        Some(Prepared {
            scope: caller.scope(),
            events,
        })
    }

    /// Stores the events and returns the `payload` of the answer, or the
    /// error response the resolver's error makes.
    pub async fn run(&self, prepared: Prepared, app: &AppState) -> Result<String, Box<Response>> {
        app.metrics.compiled_publishes.inc();
        let stored = app.ingest.publish(prepared.scope, prepared.events).await;
        // As the resolvers answer: `publishEvents` every stored event,
        // `publishEvent` the first (INTERNAL if there is none).
        let error = match stored_or_error(stored) {
            Ok(mut stored) if self.shape.list || !stored.is_empty() => {
                stored.truncate(if self.shape.list { stored.len() } else { 1 });
                let events: Vec<_> = stored.iter().map(|s| &*s.event).collect();
                return Ok(self.shape.render(&events));
            }
            Ok(_) => crate::graphql::error::ApiError::Internal,
            Err(err) => err,
        };
        let error = async_graphql::Error::from(error)
            .into_server_error(self.shape.pos)
            .with_path(vec![PathSegment::Field(self.shape.root.as_str().into())]);
        Err(Box::new(Response::from_errors(vec![error])))
    }
}

/// One `EventInput` as the resolver would receive and check it, when
/// nothing about it needs async-graphql's judgement.
fn new_event(value: &ConstValue, limits: &Limits) -> Option<NewEvent> {
    let ConstValue::Object(fields) = value else {
        return None;
    };
    for (name, value) in fields {
        let expected = match name.as_str() {
            "deviceId" | "service" => matches!(value, ConstValue::String(_)),
            // `JSON!`: anything but null.
            "payload" => !matches!(value, ConstValue::Null),
            "occurredAt" | "idempotencyKey" => {
                matches!(value, ConstValue::Null | ConstValue::String(_))
            }
            _ => false,
        };
        if !expected {
            return None;
        }
    }
    let required = ["deviceId", "service", "payload"];
    if !required.iter().all(|name| fields.contains_key(*name)) {
        return None;
    }
    // async-graphql's own conversion (the one the resolver's argument goes
    // through), then the resolver's own checks.
    let input = <EventInput as InputType>::parse(Some(value.clone())).ok()?;
    input.into_store(limits).ok()
}
