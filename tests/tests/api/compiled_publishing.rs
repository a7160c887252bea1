//! The compiled publishing path (`graphql::live::publish`) answers, byte
//! for byte, what async-graphql answers for the same operation: the same
//! data for the same stored event, the same errors for the same input, on
//! the socket and over HTTP.
//!
//! A document's first run goes through async-graphql and makes it trusted;
//! later runs of the same text take the compiled path. So "the general
//! path" here is the same document with trailing spaces added, a text the
//! server has not seen (with the same error locations), and
//! `ferrite_compiled_publishes_total` tells which calls the compiled path
//! answered: exactly those expected, and none of the inputs it leaves to
//! the schema.

use ferrite_e2e::{
    Backend, TestApp, metric_sample, odd_payloads, on_both_backends,
    ws::{RawSocket, next_text, payload_text, send_json},
};
use serde_json::{Value, json};

on_both_backends!(
    compiled_publishes_answer_exactly_what_async_graphql_answers,
    compiled_publishes_over_http_answer_exactly_what_async_graphql_answers,
    an_answer_over_the_response_limit_is_refused_as_async_graphql_refuses_it,
);

/// A publishing document the compiled path runs.
struct Document {
    query: &'static str,
    operation_name: Option<&'static str>,
    variable: &'static str,
    /// The root field's response key.
    key: &'static str,
    /// Its `Event` selection, and the fragments that selection uses.
    selection: &'static str,
    fragments: &'static str,
    /// `publishEvents`.
    list: bool,
}

const DOCUMENTS: &[Document] = &[
    Document {
        query: "mutation($i: EventInput!) { publishEvent(input: $i) \
                { id deviceId service payload occurredAt receivedAt idempotencyKey __typename } }",
        operation_name: None,
        variable: "i",
        key: "publishEvent",
        selection: "{ id deviceId service payload occurredAt receivedAt idempotencyKey __typename }",
        fragments: "",
        list: false,
    },
    // Aliases, fragments, literal @include/@skip, and another operation
    // beside it, chosen by name.
    Document {
        query: "mutation Pub($e: EventInput!) { p: publishEvent(input: $e) { ...F n: id \
                ... on Event { service } ... @include(if: true) { receivedAt } \
                ... @skip(if: true) { occurredAt } t: __typename } } \
                fragment F on Event { payload id } query Other { __typename }",
        operation_name: Some("Pub"),
        variable: "e",
        key: "p",
        selection: "{ ...F n: id ... on Event { service } ... @include(if: true) { receivedAt } \
                    ... @skip(if: true) { occurredAt } t: __typename }",
        fragments: "fragment F on Event { payload id }",
        list: false,
    },
    // The connector's own document.
    Document {
        query: "mutation($events: [EventInput!]!) { publishEvents(inputs: $events) \
                { id receivedAt idempotencyKey } }",
        operation_name: None,
        variable: "events",
        key: "publishEvents",
        selection: "{ id receivedAt idempotencyKey }",
        fragments: "",
        list: true,
    },
];

impl Document {
    /// The request for one call, with `value` as its variable. `spaces`
    /// trailing spaces make a text the server has not seen: async-graphql
    /// answers its first run.
    fn request(&self, value: Value, spaces: usize) -> Value {
        let mut request = json!({
            "query": format!("{}{}", self.query, " ".repeat(spaces)),
            "variables": { self.variable: value },
        });
        if let Some(name) = self.operation_name {
            request["operationName"] = json!(name);
        }
        request
    }

    /// `inputs` as this document's variable: the list, or its one input.
    fn value(&self, mut inputs: Vec<Value>) -> Value {
        if self.list {
            Value::Array(inputs)
        } else {
            assert_eq!(inputs.len(), 1);
            inputs.remove(0)
        }
    }

    /// Batches of new events with odd payloads and idempotency keys made
    /// of `round`: one per payload, or one of them all for a list.
    fn batches(&self, device: &str, round: &str) -> Vec<Value> {
        let inputs: Vec<Value> = odd_payloads()
            .into_iter()
            .enumerate()
            .map(|(n, payload)| {
                let mut input = json!({"deviceId": device, "service": "odd", "payload": payload,
                       "idempotencyKey": format!("{}-{round}-{n}", self.key)});
                input["occurredAt"] = match n % 3 {
                    0 => json!("2026-01-02T03:04:05.678+02:00"),
                    1 => Value::Null,
                    _ => return input,
                };
                input
            })
            .collect();
        if self.list {
            vec![Value::Array(inputs)]
        } else {
            inputs
        }
    }
}

fn plain(device: &str) -> Value {
    json!({"deviceId": device, "service": "s", "payload": 1})
}

/// Inputs that are wrong, each with whether the compiled path answers it
/// (the write's own errors) or leaves it to the schema.
fn bad_inputs(device: &str) -> Vec<(&'static str, Value, bool)> {
    let with = |field: &str, value: Value| {
        let mut input = plain(device);
        input[field] = value;
        input
    };
    let without = |field: &str| {
        let mut input = plain(device);
        input.as_object_mut().unwrap().remove(field);
        input
    };
    let deep = (0..66).fold(json!(1), |inner, _| json!([inner]));
    vec![
        (
            "an unknown device",
            with("deviceId", json!("00000000-0000-4000-8000-000000000000")),
            true,
        ),
        ("not a device id", with("deviceId", json!("nope")), false),
        (
            "a number as the device id",
            with("deviceId", json!(5)),
            false,
        ),
        ("an empty service", with("service", json!("")), false),
        (
            "a service too long",
            with("service", json!("s".repeat(129))),
            false,
        ),
        (
            "a service that is a number",
            with("service", json!(7)),
            false,
        ),
        ("an unknown field", with("colour", json!("red")), false),
        ("a null payload", with("payload", Value::Null), false),
        ("no service", without("service"), false),
        ("no payload", without("payload"), false),
        (
            "not a timestamp",
            with("occurredAt", json!("yesterday")),
            false,
        ),
        (
            "an idempotency key too long",
            with("idempotencyKey", json!("k".repeat(129))),
            false,
        ),
        ("a payload nested too deep", with("payload", deep), false),
        (
            "a payload over the 64 KiB limit",
            with("payload", json!("p".repeat(200 * 1024))),
            false,
        ),
        ("a string", json!("event"), false),
    ]
}

/// Runs one operation on `socket` and returns the message that answers it
/// (`next` or `error`), after reading the `complete` of a `next`.
async fn ws_run(socket: &mut RawSocket, request: Value) -> String {
    send_json(
        socket,
        json!({"type": "subscribe", "id": "op", "payload": request}),
    )
    .await;
    let answer = next_text(socket).await;
    if answer.starts_with("{\"type\":\"next\"") {
        let complete: Value = serde_json::from_str(&next_text(socket).await).unwrap();
        assert_eq!(complete, json!({"type": "complete", "id": "op"}));
    }
    answer
}

/// `ferrite_compiled_publishes_total`.
async fn compiled_count(app: &TestApp, admin: &str) -> f64 {
    let (_, text) = app.scrape_metrics(Some(admin)).await;
    metric_sample(&text, "ferrite_compiled_publishes_total").expect("the counter")
}

/// What follows `{"data":{"<key>":`, up to the closing braces.
fn data_of<'a>(text: &'a str, key: &str) -> &'a str {
    let start = format!("{{\"data\":{{\"{key}\":");
    text.strip_prefix(&start)
        .and_then(|rest| rest.strip_suffix("}}"))
        .unwrap_or_else(|| panic!("{text} is not {start}…}}}}"))
}

/// Counts texts, so each general-path call gets one the server has not seen.
#[derive(Default)]
struct Fresh(usize);

impl Fresh {
    fn next(&mut self) -> usize {
        self.0 += 1;
        self.0
    }
}

async fn compiled_publishes_answer_exactly_what_async_graphql_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "compiled").await;
    let mut socket = app.raw_session(&admin, None).await;
    let mut fresh = Fresh::default();
    let mut expected = 0.0;
    let start = compiled_count(&app, &admin).await;

    for document in DOCUMENTS {
        let d = document.key;
        // The first run: async-graphql answers, and the text is trusted.
        let first = document.request(document.value(vec![plain(&device)]), 0);
        let first = ws_run(&mut socket, first).await;
        assert!(first.starts_with("{\"type\":\"next\""), "{first}");
        assert!(!first.contains("errors"), "{first}");

        // New events, as the compiled path renders them, against the same
        // stored events queried through async-graphql.
        for batch in document.batches(&device, "new") {
            let answer = ws_run(&mut socket, document.request(batch, 0)).await;
            expected += 1.0;
            let data = data_of(payload_text(&answer), document.key);
            let parsed: Value = serde_json::from_str(data).unwrap();
            let events = match parsed {
                Value::Array(events) => events,
                event => vec![event],
            };
            let mut queried = Vec::new();
            for event in &events {
                let id = event.get("id").or_else(|| event.get("n")).expect("an id");
                let query = format!(
                    "query($id: ID!) {{ event(id: $id) {} }} {}",
                    document.selection, document.fragments
                );
                let text = app.gql_text(&admin, &query, json!({"id": id})).await;
                queried.push(data_of(&text, "event").to_owned());
            }
            let queried = if document.list {
                format!("[{}]", queried.join(","))
            } else {
                queried.concat()
            };
            assert_eq!(
                data, queried,
                "{d}: the publish's answer against the query's"
            );
        }

        // The same publishes again, idempotent retries: the same bytes
        // from async-graphql and from the compiled path.
        for batch in document.batches(&device, "new") {
            let by_schema =
                ws_run(&mut socket, document.request(batch.clone(), fresh.next())).await;
            let compiled = ws_run(&mut socket, document.request(batch, 0)).await;
            expected += 1.0;
            assert_eq!(compiled, by_schema, "{d}: a retry");
        }

        // Wrong input: the same errors, whichever path answers. In a list,
        // the wrong input comes second.
        for (what, input, compiled_answers) in bad_inputs(&device) {
            let value = if document.list {
                json!([plain(&device), input])
            } else {
                input
            };
            let by_schema =
                ws_run(&mut socket, document.request(value.clone(), fresh.next())).await;
            let compiled = ws_run(&mut socket, document.request(value, 0)).await;
            assert!(
                compiled.contains("\"errors\"") || compiled.contains("\"type\":\"error\""),
                "{d}, {what}: {compiled}"
            );
            assert_eq!(compiled, by_schema, "{d}: {what}");
            if compiled_answers {
                expected += 1.0;
            }
        }
        assert_eq!(
            compiled_count(&app, &admin).await - start,
            expected,
            "{d}: the calls the compiled path answered"
        );
    }

    // What only a list has: none, too many, and one object in its place
    // (coerced to a list of one by GraphQL, left to the schema).
    let list = &DOCUMENTS[2];
    let too_many: Vec<Value> = (0..1001).map(|_| plain(&device)).collect();
    let mut keyed = plain(&device);
    keyed["idempotencyKey"] = json!("coerced");
    for (what, value) in [
        ("no events", json!([])),
        ("1001 events", json!(too_many)),
        ("an object", keyed),
    ] {
        let by_schema = ws_run(&mut socket, list.request(value.clone(), fresh.next())).await;
        let compiled = ws_run(&mut socket, list.request(value, 0)).await;
        assert_eq!(compiled, by_schema, "publishEvents: {what}");
    }

    // Callers: a READ key may not publish (left to the schema); a member's
    // publish to the administrator's device finds no such device (answered).
    let document = &DOCUMENTS[0];
    let reader = app.create_api_key(&admin, "READ").await;
    let member = app.create_member("member").await;
    for (who, token, compiled_answers) in
        [("a READ key", reader, false), ("a member", member, true)]
    {
        let mut socket = app.raw_session(&token, None).await;
        let value = plain(&device);
        let by_schema = ws_run(&mut socket, document.request(value.clone(), fresh.next())).await;
        let compiled = ws_run(&mut socket, document.request(value, 0)).await;
        assert!(compiled.contains("\"errors\""), "{who}: {compiled}");
        assert_eq!(compiled, by_schema, "{who}");
        if compiled_answers {
            expected += 1.0;
        }
    }
    assert_eq!(compiled_count(&app, &admin).await - start, expected);
}

async fn compiled_publishes_over_http_answer_exactly_what_async_graphql_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "compiled").await;
    let mut fresh = Fresh::default();
    let mut expected = 0.0;
    let start = compiled_count(&app, &admin).await;
    for document in DOCUMENTS {
        let d = document.key;
        let first = document.request(document.value(vec![plain(&device)]), 0);
        let first = app.post_request_text(&admin, &first).await;
        assert!(first.starts_with("{\"data\":"), "{first}");
        let mut values = document.batches(&device, "http");
        values.extend(bad_inputs(&device).into_iter().map(|(_, input, _)| {
            if document.list { json!([input]) } else { input }
        }));
        for (n, value) in values.into_iter().enumerate() {
            // The first call of a batch stores it; the second is a retry.
            let compiled = |value| document.request(value, 0);
            if n < document.batches(&device, "http").len() {
                let stored = app
                    .post_request_text(&admin, &compiled(value.clone()))
                    .await;
                expected += 1.0;
                assert!(stored.starts_with("{\"data\":{"), "{d}: {stored}");
            }
            let by_schema = app
                .post_request_text(&admin, &document.request(value.clone(), fresh.next()))
                .await;
            let answer = app.post_request_text(&admin, &compiled(value)).await;
            assert_eq!(answer, by_schema, "{d}: call {n}");
        }
    }
    // The stored batches' retries and the unknown devices were answered
    // on the compiled path; nothing else.
    for document in DOCUMENTS {
        expected += document.batches(&device, "http").len() as f64 + 1.0;
    }
    assert_eq!(compiled_count(&app, &admin).await - start, expected);
}

/// A publish stored, whose answer (the payload selected back) is larger
/// than `limits.response_bytes`: the same refusal from both paths, on the
/// socket and over HTTP.
async fn an_answer_over_the_response_limit_is_refused_as_async_graphql_refuses_it(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |config| config.limits.response_bytes = 4096).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "compiled").await;
    let document = &DOCUMENTS[0];
    let mut input = plain(&device);
    input["payload"] = json!("p".repeat(8 * 1024));
    input["idempotencyKey"] = json!("large");
    let mut socket = app.raw_session(&admin, None).await;
    let start = compiled_count(&app, &admin).await;

    // Stored (and the text trusted) by the first run; then a retry each way.
    let first = ws_run(&mut socket, document.request(input.clone(), 0)).await;
    assert!(first.contains("limits.response_bytes"), "{first}");
    let by_schema = ws_run(&mut socket, document.request(input.clone(), 1)).await;
    let compiled = ws_run(&mut socket, document.request(input.clone(), 0)).await;
    assert_eq!(compiled, by_schema);

    let by_schema = app
        .post_request_text(&admin, &document.request(input.clone(), 2))
        .await;
    let compiled = app
        .post_request_text(&admin, &document.request(input, 0))
        .await;
    assert_eq!(compiled, by_schema);
    assert!(compiled.contains("limits.response_bytes"), "{compiled}");
    assert_eq!(compiled_count(&app, &admin).await - start, 2.0);
}
