//! What a subscription's selection compiles to, and how it renders.
//!
//! A plan is the root field's response key and a tree of response keys,
//! each naming a field of one of the object types a compiled subscription
//! streams: `Event`, `DeviceChange` with its `Device`, and `Command`. Only
//! fields the bus message itself holds are compiled; a field that would
//! need a query (`Event.device`) leaves the document to async-graphql.
//!
//! Rendering writes the JSON async-graphql would write for the same
//! selection, byte for byte: same key order, same scalar formats (`ID` and
//! `DateTime` as strings, RFC 3339 with the offset, enums by their GraphQL
//! name, `JSON` as the value itself).
//!
//! (Over 600 lines with its tests: compiling and rendering are one
//! contract — what is compiled is exactly what is rendered — and are kept
//! in one file so a change to either is read against the other.)

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use async_graphql::{
    InputType, Name, Pos, Positioned, Value as ConstValue, Variables,
    parser::types::{
        Directive, DocumentOperations, ExecutableDocument, FragmentDefinition, OperationDefinition,
        OperationType, Selection, SelectionSet,
    },
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    bus::DeviceChange,
    store::entity::{command, device, event},
};

/// An object type whose fields plans render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    Event,
    DeviceChange,
    Device,
    Command,
}

impl ObjectType {
    /// The type a compiled subscription root field streams.
    fn of_root(field: &str) -> Option<Self> {
        Some(match field {
            "events" => ObjectType::Event,
            "deviceChanged" => ObjectType::DeviceChange,
            "commands" | "commandUpdated" => ObjectType::Command,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ObjectType::Event => "Event",
            ObjectType::DeviceChange => "DeviceChange",
            ObjectType::Device => "Device",
            ObjectType::Command => "Command",
        }
    }

    /// What `name` is on this type, when a plan can render it.
    fn field(self, name: &str) -> Option<Field> {
        if name == "__typename" {
            return Some(Field::Leaf(Leaf::Typename(self)));
        }
        let leaf = match self {
            ObjectType::Event => Leaf::Event(match name {
                "id" => EventField::Id,
                "deviceId" => EventField::DeviceId,
                "service" => EventField::Service,
                "payload" => EventField::Payload,
                "occurredAt" => EventField::OccurredAt,
                "receivedAt" => EventField::ReceivedAt,
                "idempotencyKey" => EventField::IdempotencyKey,
                _ => return None,
            }),
            ObjectType::DeviceChange => match name {
                "kind" => Leaf::ChangeKind,
                "device" => return Some(Field::Object(ObjectField::ChangeDevice)),
                _ => return None,
            },
            ObjectType::Device => Leaf::Device(match name {
                "id" => DeviceField::Id,
                "externalId" => DeviceField::ExternalId,
                "name" => DeviceField::Name,
                "type" => DeviceField::Type,
                "location" => DeviceField::Location,
                "attributes" => DeviceField::Attributes,
                "status" => DeviceField::Status,
                "connectorId" => DeviceField::ConnectorId,
                "lastSeenAt" => DeviceField::LastSeenAt,
                "ownerId" => DeviceField::OwnerId,
                "createdAt" => DeviceField::CreatedAt,
                "updatedAt" => DeviceField::UpdatedAt,
                _ => return None,
            }),
            ObjectType::Command => Leaf::Command(match name {
                "id" => CommandField::Id,
                "deviceId" => CommandField::DeviceId,
                "service" => CommandField::Service,
                "payload" => CommandField::Payload,
                "status" => CommandField::Status,
                "result" => CommandField::Result,
                "createdAt" => CommandField::CreatedAt,
                "updatedAt" => CommandField::UpdatedAt,
                "expiresAt" => CommandField::ExpiresAt,
                "deliveredAt" => CommandField::DeliveredAt,
                "respondedAt" => CommandField::RespondedAt,
                _ => return None,
            }),
        };
        Some(Field::Leaf(leaf))
    }
}

/// A field a plan can render: a value, or an object to select from.
enum Field {
    Leaf(Leaf),
    Object(ObjectField),
}

/// A field whose value is an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectField {
    /// `DeviceChange.device`.
    ChangeDevice,
}

impl ObjectField {
    fn ty(self) -> ObjectType {
        match self {
            ObjectField::ChangeDevice => ObjectType::Device,
        }
    }
}

/// A field whose value is written as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leaf {
    Typename(ObjectType),
    Event(EventField),
    /// `DeviceChange.kind`.
    ChangeKind,
    Device(DeviceField),
    Command(CommandField),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventField {
    Id,
    DeviceId,
    Service,
    Payload,
    OccurredAt,
    ReceivedAt,
    IdempotencyKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceField {
    Id,
    ExternalId,
    Name,
    Type,
    Location,
    Attributes,
    Status,
    ConnectorId,
    LastSeenAt,
    OwnerId,
    CreatedAt,
    UpdatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandField {
    Id,
    DeviceId,
    Service,
    Payload,
    Status,
    Result,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    DeliveredAt,
    RespondedAt,
}

/// What one response key of a selection renders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Leaf(Leaf),
    Object(ObjectField, Fields),
}

/// A selection set: response keys in output order, each with what it renders.
pub type Fields = Vec<(String, Node)>;

/// What a plan is interned by: the subscription's response key, the type it
/// streams, and the selection on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub root: String,
    pub ty: ObjectType,
    pub fields: Fields,
}

/// What a plan renders: one item of a compiled subscription.
#[derive(Clone, Copy)]
pub enum Item<'a> {
    Event(&'a event::Model),
    Change(&'a DeviceChange),
    Device(&'a device::Model),
    Command(&'a command::Model),
}

/// How to serialise the items of one selection.
#[derive(Debug)]
pub struct Plan {
    /// Unique among the plans alive: the key of a bus message's renderings.
    pub id: u64,
    pub shape: Shape,
}

impl Plan {
    /// The `payload` of a `next` message carrying `item`, as async-graphql
    /// would serialise it: `{"data":{"<root>":{…}}}`.
    pub fn render(&self, item: Item<'_>) -> String {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"data\":{");
        push_key(&mut out, &self.shape.root);
        write_object(&mut out, &self.shape.fields, item);
        out.extend_from_slice(b"}}");
        String::from_utf8(out).expect("BUG: serde_json writes UTF-8")
    }
}

fn write_object(out: &mut Vec<u8>, fields: &Fields, item: Item<'_>) {
    for (at, (key, node)) in fields.iter().enumerate() {
        out.push(if at == 0 { b'{' } else { b',' });
        push_key(out, key);
        match node {
            Node::Leaf(leaf) => write_leaf(out, *leaf, item),
            Node::Object(ObjectField::ChangeDevice, fields) => {
                let Item::Change(change) = item else {
                    unreachable!("BUG: compile puts fields under their own type only")
                };
                write_object(out, fields, Item::Device(&change.device));
            }
        }
    }
    out.push(b'}');
}

fn write_leaf(out: &mut Vec<u8>, leaf: Leaf, item: Item<'_>) {
    match (leaf, item) {
        (Leaf::Typename(ty), _) => json(out, ty.name()),
        (Leaf::Event(field), Item::Event(event)) => write_event(out, field, event),
        (Leaf::ChangeKind, Item::Change(change)) => graphql_enum(out, &change.kind),
        (Leaf::Device(field), Item::Device(device)) => write_device(out, field, device),
        (Leaf::Command(field), Item::Command(command)) => write_command(out, field, command),
        _ => unreachable!("BUG: compile puts fields under their own type only"),
    }
}

fn write_event(out: &mut Vec<u8>, field: EventField, event: &event::Model) {
    match field {
        EventField::Id => id(out, event.id),
        EventField::DeviceId => id(out, event.device_id),
        EventField::Service => json(out, &event.service),
        EventField::Payload => json(out, &event.payload),
        EventField::OccurredAt => json(out, &event.occurred_at.map(timestamp)),
        EventField::ReceivedAt => json(out, &timestamp(event.received_at)),
        EventField::IdempotencyKey => json(out, &event.idempotency_key),
    }
}

fn write_device(out: &mut Vec<u8>, field: DeviceField, device: &device::Model) {
    match field {
        DeviceField::Id => id(out, device.id),
        DeviceField::ExternalId => json(out, &device.external_id),
        DeviceField::Name => json(out, &device.name),
        DeviceField::Type => json(out, &device.r#type),
        DeviceField::Location => json(out, &device.location),
        DeviceField::Attributes => json(out, &device.attributes),
        DeviceField::Status => graphql_enum(out, &device.status),
        DeviceField::ConnectorId => json(out, &device.connector_id),
        DeviceField::LastSeenAt => json(out, &device.last_seen_at.map(timestamp)),
        DeviceField::OwnerId => id(out, device.owner_id),
        DeviceField::CreatedAt => json(out, &timestamp(device.created_at)),
        DeviceField::UpdatedAt => json(out, &timestamp(device.updated_at)),
    }
}

fn write_command(out: &mut Vec<u8>, field: CommandField, command: &command::Model) {
    match field {
        CommandField::Id => id(out, command.id),
        CommandField::DeviceId => id(out, command.device_id),
        CommandField::Service => json(out, &command.service),
        CommandField::Payload => json(out, &command.payload),
        CommandField::Status => graphql_enum(out, &command.status),
        CommandField::Result => json(out, &command.result),
        CommandField::CreatedAt => json(out, &timestamp(command.created_at)),
        CommandField::UpdatedAt => json(out, &timestamp(command.updated_at)),
        CommandField::ExpiresAt => json(out, &timestamp(command.expires_at)),
        CommandField::DeliveredAt => json(out, &command.delivered_at.map(timestamp)),
        CommandField::RespondedAt => json(out, &command.responded_at.map(timestamp)),
    }
}

fn json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("BUG: writing JSON to a Vec cannot fail");
}

/// An `ID`: the id's text, as a string.
fn id(out: &mut Vec<u8>, id: impl ToString) {
    json(out, &id.to_string());
}

/// A `DateTime`, as [`super::super::scalars::Timestamp`] writes it.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339()
}

/// An enum by its GraphQL name, taken from the enum's own GraphQL type.
fn graphql_enum(out: &mut Vec<u8>, value: &impl InputType) {
    json(out, &value.to_value());
}

/// `"key":`. GraphQL names are ASCII letters, digits and underscores, but
/// they go through the JSON writer anyway.
fn push_key(out: &mut Vec<u8>, key: &str) {
    json(out, key);
    out.push(b':');
}

/// The plans in use, interned by shape. Cheap to clone.
#[derive(Clone, Default)]
pub struct Plans(Arc<PlansInner>);

#[derive(Default)]
struct PlansInner {
    next_id: AtomicU64,
    interned: Mutex<HashMap<Shape, Weak<Plan>>>,
}

impl Plans {
    pub fn intern(&self, shape: Shape) -> Arc<Plan> {
        let mut interned = self.0.interned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = interned.get(&shape).and_then(Weak::upgrade) {
            return plan;
        }
        // Forget plans nobody uses any more before the map grows.
        if interned.len() >= interned.capacity() {
            interned.retain(|_, plan| plan.strong_count() > 0);
        }
        let plan = Arc::new(Plan {
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            shape: shape.clone(),
        });
        interned.insert(shape, Arc::downgrade(&plan));
        plan
    }

    /// How many distinct plans are alive.
    #[cfg(test)]
    pub fn alive(&self) -> usize {
        let interned = self.0.interned.lock().unwrap();
        interned.values().filter(|p| p.strong_count() > 0).count()
    }
}

/// Fragments nested deeper than this are left to async-graphql (which
/// refuses cycles and enforces the depth limit).
const MAX_FRAGMENT_DEPTH: usize = 16;

/// The shape of `document`'s operation when it is a subscription a plan can
/// deliver, with the position of its root field (for error locations).
pub fn compile_document(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Option<(Shape, Pos)> {
    let operation = operation(document, operation_name)?;
    if operation.node.ty != OperationType::Subscription {
        return None;
    }
    let [root] = operation.node.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(root) = &root.node else {
        return None;
    };
    if !root.node.directives.is_empty() {
        return None;
    }
    let ty = ObjectType::of_root(&root.node.name.node)?;
    let fields = Collector {
        fragments: &document.fragments,
        variables,
    }
    .object(ty, &root.node.selection_set.node)?;
    let shape = Shape {
        root: root.node.response_key().node.to_string(),
        ty,
        fields,
    };
    Some((shape, root.pos))
}

/// The operation async-graphql would run.
fn operation<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), None) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        _ => None,
    }
}

/// A publishing mutation compiled: `publishEvent(input: $v)` or
/// `publishEvents(inputs: $v)`, the operation's only variable, with a
/// selection of `Event` a plan renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishShape {
    /// The root field's response key.
    pub root: String,
    /// `publishEvents`: a list in, a list out.
    pub list: bool,
    /// The variable holding the input.
    pub variable: Name,
    pub fields: Fields,
    /// Where the root field is in the document, for error locations.
    pub pos: Pos,
}

/// The shape of `document`'s operation when it is a publishing mutation
/// the compiled path can run, or `None`.
///
/// It does not validate the document against the schema: the caller runs
/// a document through async-graphql once before trusting its shape (see
/// `live::publish`). What it checks is what makes a validated document's
/// meaning independent of the variables' values: a mutation with one
/// variable (so `@skip`/`@include` can only take literals), declared as
/// the argument's non-null type without a default, passed whole as the
/// root field's only argument.
pub fn compile_publish(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<PublishShape> {
    let operation = &operation(document, operation_name)?.node;
    if operation.ty != OperationType::Mutation || !operation.directives.is_empty() {
        return None;
    }
    let [declared] = operation.variable_definitions.as_slice() else {
        return None;
    };
    let [root] = operation.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(root) = &root.node else {
        return None;
    };
    let field = &root.node;
    let (argument, list, ty) = match field.name.node.as_str() {
        "publishEvent" => ("input", false, "EventInput!"),
        "publishEvents" => ("inputs", true, "[EventInput!]!"),
        _ => return None,
    };
    let [(name, value)] = field.arguments.as_slice() else {
        return None;
    };
    let declared = &declared.node;
    let passed_whole =
        matches!(&value.node, async_graphql_value::Value::Variable(v) if *v == declared.name.node);
    if name.node != argument
        || !passed_whole
        || declared.var_type.node.to_string() != ty
        || declared.default_value.is_some()
        || !declared.directives.is_empty()
        || !field.directives.is_empty()
    {
        return None;
    }
    let fields = Collector {
        fragments: &document.fragments,
        variables: &Variables::default(),
    }
    .object(ObjectType::Event, &field.selection_set.node)?;
    Some(PublishShape {
        root: field.response_key().node.to_string(),
        list,
        variable: declared.name.node.clone(),
        fields,
        pos: root.pos,
    })
}

impl PublishShape {
    /// The response to a publish that stored `events`, as async-graphql
    /// would serialise it: `{"data":{"<root>":{…}}}`, or a list of them.
    pub fn render(&self, events: &[&event::Model]) -> String {
        let mut out = Vec::with_capacity(64 + 128 * events.len());
        out.extend_from_slice(b"{\"data\":{");
        push_key(&mut out, &self.root);
        if self.list {
            out.push(b'[');
        }
        for (at, event) in events.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            write_object(&mut out, &self.fields, Item::Event(event));
        }
        if self.list {
            out.push(b']');
        }
        out.extend_from_slice(b"}}");
        String::from_utf8(out).expect("BUG: serde_json writes UTF-8")
    }
}

/// Walks selection sets the way async-graphql executes them.
struct Collector<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    variables: &'a Variables,
}

impl Collector<'_> {
    /// The fields `selection` picks on `ty`; `None` when it is empty or
    /// holds anything a plan does not render.
    fn object(&self, ty: ObjectType, selection: &SelectionSet) -> Option<Fields> {
        let mut fields = Vec::new();
        self.collect(ty, selection, 0, &mut fields)?;
        (!fields.is_empty()).then_some(fields)
    }

    /// Adds the fields `selection` picks on `ty`, in async-graphql's order:
    /// fragments flattened in place, a response key's first occurrence
    /// wins.
    fn collect(
        &self,
        ty: ObjectType,
        selection: &SelectionSet,
        depth: usize,
        fields: &mut Fields,
    ) -> Option<()> {
        if depth > MAX_FRAGMENT_DEPTH {
            return None;
        }
        for item in &selection.items {
            if skipped(item.node.directives(), self.variables)? {
                continue;
            }
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if !field.arguments.is_empty() {
                        return None;
                    }
                    let inner = &field.selection_set.node;
                    let node = match ty.field(&field.name.node)? {
                        Field::Leaf(leaf) if inner.items.is_empty() => Node::Leaf(leaf),
                        Field::Object(object) => {
                            Node::Object(object, self.object(object.ty(), inner)?)
                        }
                        Field::Leaf(_) => return None,
                    };
                    let key = field.response_key().node.as_str();
                    match fields.iter_mut().find(|(seen, _)| seen == key) {
                        None => fields.push((key.to_owned(), node)),
                        Some((_, seen)) if *seen == node => {}
                        // Different fields under one key (async-graphql
                        // refuses the document), or an object field selected
                        // twice with different selections (async-graphql
                        // merges them; rare): left to async-graphql.
                        Some(_) => return None,
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let fragment = self.fragments.get(&spread.node.fragment_name.node)?;
                    if fragment.node.type_condition.node.on.node != ty.name() {
                        return None;
                    }
                    self.collect(ty, &fragment.node.selection_set.node, depth + 1, fields)?;
                }
                Selection::InlineFragment(inline) => {
                    let on = inline.node.type_condition.as_ref();
                    if on.is_some_and(|on| on.node.on.node != ty.name()) {
                        return None;
                    }
                    self.collect(ty, &inline.node.selection_set.node, depth + 1, fields)?;
                }
            }
        }
        Some(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str, variables: serde_json::Value) -> Option<Shape> {
        let document = async_graphql::parser::parse_query(query).ok()?;
        compile_document(&document, None, &Variables::from_json(variables)).map(|(s, _)| s)
    }

    /// The response keys of a compiled selection, nested ones after a dot.
    fn keys(query: &str, variables: serde_json::Value) -> Option<Vec<String>> {
        fn flatten(fields: &Fields, prefix: &str, out: &mut Vec<String>) {
            for (key, node) in fields {
                out.push(format!("{prefix}{key}"));
                if let Node::Object(_, inner) = node {
                    flatten(inner, &format!("{prefix}{key}."), out);
                }
            }
        }
        let mut out = Vec::new();
        flatten(&shape(query, variables)?.fields, "", &mut out);
        Some(out)
    }

    #[test]
    fn compiles_selections_with_aliases_fragments_and_directives() {
        let none = serde_json::json!({});
        assert_eq!(
            keys("subscription { events { id service } }", none.clone()).unwrap(),
            ["id", "service"]
        );

        let q = "subscription S($on: Boolean!) { e: events(after: \"0\") { \
                 n: id ...F @include(if: $on) ... on Event { service } ... { id } } } \
                 fragment F on Event { payload id }";
        assert_eq!(
            keys(q, serde_json::json!({"on": true})).unwrap(),
            ["n", "payload", "id", "service"]
        );
        assert_eq!(
            keys(q, serde_json::json!({"on": false})).unwrap(),
            ["n", "service", "id"]
        );
        // Missing or non-boolean variables count as false, as in async-graphql.
        assert_eq!(keys(q, none.clone()).unwrap(), ["n", "service", "id"]);

        let q = "subscription { c: deviceChanged(filter: {types: [\"t\"]}) { \
                 __typename kind device { ...D status @skip(if: true) } device { ...D } } } \
                 fragment D on Device { id name: externalId ... on Device { status } }";
        assert_eq!(
            keys(q, none.clone()).unwrap(),
            [
                "__typename",
                "kind",
                "device",
                "device.id",
                "device.name",
                "device.status"
            ]
        );
        let shape = shape(q, none.clone()).unwrap();
        assert_eq!(
            (shape.root.as_str(), shape.ty),
            ("c", ObjectType::DeviceChange)
        );

        for root in ["commands", "commandUpdated(id: \"x\")"] {
            let q = format!("subscription {{ {root} {{ id status result __typename }} }}");
            assert_eq!(
                keys(&q, none.clone()).unwrap(),
                ["id", "status", "result", "__typename"]
            );
        }
    }

    #[test]
    fn leaves_everything_else_to_async_graphql() {
        let none = |q: &str| shape(q, serde_json::json!({})).is_none();
        assert!(none("subscription { events { id device { id } } }"));
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
        // Object fields need a selection; leaves take none.
        assert!(none("subscription { deviceChanged { kind device } }"));
        assert!(none("subscription { deviceChanged { kind { x } } }"));
        assert!(none(
            "subscription { deviceChanged { device { id @skip(if: true) } } }"
        ));
        // One object under one key, selected twice differently: merged by
        // async-graphql.
        assert!(none(
            "subscription { deviceChanged { device { id } device { name } } }"
        ));
        // Fields of one type asked on another.
        assert!(none("subscription { deviceChanged { id } }"));
        assert!(none("subscription { commands { kind } }"));
        assert!(none("subscription { commands { ... on Event { id } } }"));
        assert!(none("subscription { somethingElse { id } }"));
    }

    #[test]
    fn identical_selections_share_a_plan() {
        let plans = Plans::default();
        let intern = |q: &str| plans.intern(shape(q, serde_json::json!({})).unwrap());
        let a = intern("subscription { events { id service } }");
        let b = intern("subscription   { events { id, service } }");
        let c = intern("subscription { events { service id } }");
        // Same fields, another type: another plan.
        let d = intern("subscription { events: commands { id service } }");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
        assert_eq!(plans.alive(), 3);
        drop((a, b));
        assert_eq!(plans.alive(), 2);
    }
}
