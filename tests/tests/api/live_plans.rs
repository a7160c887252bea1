//! Compiled subscriptions (`graphql::live`) send, byte for byte, what
//! async-graphql sends for the same selection: `events`, `deviceChanged`,
//! `commands` and `commandUpdated`, each beside the same subscription
//! executed by async-graphql.

use std::time::Duration;

use ferrite_e2e::{
    Backend, TestApp, odd_payloads, on_both_backends,
    ws::{Inbox, RawSocket, next_json, next_text, send_json},
};
use serde_json::{Value, json};

on_both_backends!(
    subscriptions_send_events_exactly_as_queries_render_them,
    device_and_command_subscriptions_send_exactly_what_async_graphql_sends,
);

/// Selection sets of `Event` (with the variables they declare) that the
/// server delivers without executing them per event (scalar fields,
/// aliases, fragments, `@skip`/`@include`), and one it executes
/// (`device`).
const SELECTIONS: &[(&str, &str, &str)] = &[
    (
        "",
        "{ id deviceId service payload occurredAt receivedAt idempotencyKey __typename }",
        "",
    ),
    ("", "{ a: payload b: id t: __typename }", ""),
    // The same again: a second subscriber sharing the first one's rendering.
    ("", "{ a: payload b: id t: __typename }", ""),
    (
        "$on: Boolean!",
        "{ ...F id ... on Event { service } ... @include(if: $on) { receivedAt } ... @skip(if: $on) { occurredAt } }",
        "fragment F on Event { payload id }",
    ),
    (
        "$off: Boolean",
        "{ id @include(if: $off) service @skip(if: $off) payload id ... { id } }",
        "",
    ),
    // Executed: async-graphql orders fields as they resolve (`device` reads
    // the store), so only the values are compared.
    ("", "{ id device { externalId } payload }", ""),
];

/// The selection of `SELECTIONS` that async-graphql executes.
const EXECUTED: usize = 5;

/// The object inside a response text: what follows `"<key>":` after
/// `"data":{`, up to the closing braces of `data` and the response.
fn data_object<'a>(text: &'a str, key: &str, closing: &str) -> &'a str {
    let start = format!("\"data\":{{\"{key}\":");
    let at = text
        .find(&start)
        .unwrap_or_else(|| panic!("no {start} in {text}"));
    text[at + start.len()..]
        .strip_suffix(closing)
        .unwrap_or_else(|| panic!("{text} does not end with {closing}"))
}

async fn subscriptions_send_events_exactly_as_queries_render_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "odd-payloads").await;
    let payloads = odd_payloads();
    let publish_all = |round: &'static str| {
        let (app, admin, device, payloads) = (&app, &admin, &device, payloads.clone());
        async move {
            let inputs: Vec<Value> = payloads
                .iter()
                .enumerate()
                .map(|(n, payload)| {
                    let mut input =
                        json!({"deviceId": device, "service": "odd", "payload": payload});
                    if n % 2 == 0 {
                        input["occurredAt"] = json!("2026-01-02T03:04:05.678+02:00");
                        input["idempotencyKey"] = json!(format!("{round}-{n}"));
                    }
                    input
                })
                .collect();
            let published = app
                .gql(
                    Some(admin),
                    "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                    json!({"i": inputs}),
                )
                .await;
            assert!(published.body.get("errors").is_none(), "{}", published.body);
        }
    };
    // Stored before anyone subscribes: replayed from the store.
    publish_all("stored").await;

    let mut socket = app.raw_socket("graphql-transport-ws").await;
    send_json(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {admin}")}}),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    let variables = json!({"on": true, "off": false, "after": "0"});
    for (n, (declared, selection, fragments)) in SELECTIONS.iter().enumerate() {
        let declared = if declared.is_empty() {
            "$after: ID".to_owned()
        } else {
            format!("$after: ID, {declared}")
        };
        let query = format!(
            "subscription({declared}) {{ ev: events(after: $after) {selection} }} {fragments}"
        );
        send_json(
            &mut socket,
            json!({"type": "subscribe", "id": format!("s{n}"),
                   "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }
    // Each subscription replays the stored events, then gets the ones
    // published now live.
    let mut received = Vec::new();
    let per_round = SELECTIONS.len() * payloads.len();
    while received.len() < per_round {
        received.push(next_text(&mut socket).await);
    }
    publish_all("live").await;
    while received.len() < 2 * per_round {
        received.push(next_text(&mut socket).await);
    }

    for text in &received {
        let message: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(message["type"], "next", "{text}");
        let n: usize = message["id"].as_str().unwrap()[1..].parse().unwrap();
        let event = &message["payload"]["data"]["ev"];
        let id = event
            .get("id")
            .or_else(|| event.get("b"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("every selection asks for the id: {text}"));
        let (declared, selection, fragments) = SELECTIONS[n];
        let declared = if declared.is_empty() {
            "$id: ID!".to_owned()
        } else {
            format!("$id: ID!, {declared}")
        };
        let query = format!("query({declared}) {{ event(id: $id) {selection} }} {fragments}");
        let mut query_variables = json!({"id": id});
        if declared.contains("$on") {
            query_variables["on"] = variables["on"].clone();
        }
        if declared.contains("$off") {
            query_variables["off"] = variables["off"].clone();
        }
        let expected = app.gql_text(&admin, &query, query_variables).await;
        let (sent, rendered) = (
            data_object(text, "ev", "}}}"),
            data_object(&expected, "event", "}}"),
        );
        let context =
            format!("selection {n} `{selection}`: subscription {text} vs query {expected}");
        if n == EXECUTED {
            let parse = |text| serde_json::from_str::<Value>(text).expect("JSON");
            assert_eq!(parse(sent), parse(rendered), "{context}");
        } else {
            assert_eq!(sent, rendered, "{context}");
        }
    }
}

/// Selection sets of `DeviceChange` the server delivers without executing
/// them per change (with the variables they declare).
const DEVICE_SELECTIONS: &[(&str, &str, &str)] = &[
    (
        "",
        "{ kind __typename device { id externalId name type location attributes status \
         connectorId lastSeenAt ownerId createdAt updatedAt __typename } }",
        "",
    ),
    (
        "",
        "{ k: kind d: device { ...D } device { name } }",
        "fragment D on Device { n: name id ... on Device { status } }",
    ),
    // The same again: a second subscriber sharing the first one's rendering.
    (
        "",
        "{ k: kind d: device { ...D } device { name } }",
        "fragment D on Device { n: name id ... on Device { status } }",
    ),
    (
        "$on: Boolean!",
        "{ ... @include(if: $on) { kind } device { id location @skip(if: $on) attributes \
         ... on Device @skip(if: $on) { name } ... on Device { lastSeenAt } } }",
        "",
    ),
];

/// Selection sets of `Command` the server delivers without executing them.
const COMMAND_SELECTIONS: &[(&str, &str, &str)] = &[
    (
        "",
        "{ id deviceId service payload status result createdAt updatedAt expiresAt \
         deliveredAt respondedAt __typename }",
        "",
    ),
    (
        "$on: Boolean!",
        "{ s: status ...C r: result @include(if: $on) id @skip(if: $on) ... { id } }",
        "fragment C on Command { payload status }",
    ),
];

/// Subscribes operation `id` on `socket`: `root` (a subscription field with
/// its arguments) with the selection, declaring `$on` and `extra` as given.
/// `executed`: with `@skip(if: false)` on the root field, which the server
/// leaves to async-graphql to execute, the reference to compare with.
async fn subscribe_selection(
    socket: &mut RawSocket,
    id: &str,
    root: &str,
    (declared, selection, fragments): (&str, &str, &str),
    extra: &str,
    variables: &Value,
    executed: bool,
) {
    let declared: Vec<&str> = [declared, extra]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
    let declared = if declared.is_empty() {
        String::new()
    } else {
        format!("({})", declared.join(", "))
    };
    let directive = if executed { " @skip(if: false)" } else { "" };
    let query = format!("subscription{declared} {{ {root}{directive} {selection} }} {fragments}");
    send_json(
        socket,
        json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}}),
    )
    .await;
}

/// Runs a mutation over a raw session as operation `id`; returns its data.
async fn mutate(
    socket: &mut RawSocket,
    inbox: &mut Inbox,
    id: &str,
    query: &str,
    variables: Value,
) -> Value {
    send_json(
        socket,
        json!({"type": "subscribe", "id": id, "payload": {"query": query, "variables": variables}}),
    )
    .await;
    inbox
        .read_until(socket, |inbox| inbox.completed.contains(id))
        .await;
    let response: Value = serde_json::from_str(&inbox.of(id)[0]).expect("JSON");
    assert!(response.get("errors").is_none(), "{response}");
    response["data"].clone()
}

/// `deviceChanged`, `commands` and `commandUpdated` are delivered compiled
/// (see `events` above); what they send must be, byte for byte, what
/// async-graphql sends for the same selection: each compiled subscription
/// runs beside the same one executed by async-graphql, through every kind
/// of change, with awkward text and JSON.
async fn device_and_command_subscriptions_send_exactly_what_async_graphql_sends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let variables = json!({"on": true});
    let odd = json!({
        "text": "quote \" backslash \\ newline \n crab \u{1F980} bell \u{7} </script>",
        "negative zero": -0.0, "big": u64::MAX, "huge": 1.5e300, "list": [1, null, {"k": []}],
    });

    // Devices.
    let mut watcher = app.raw_session(&admin, None).await;
    let mut watched = Inbox::default();
    let mut ids = Vec::new();
    for (n, selection) in DEVICE_SELECTIONS.iter().enumerate() {
        for (id, executed) in [(format!("c{n}"), false), (format!("x{n}"), true)] {
            subscribe_selection(
                &mut watcher,
                &id,
                "d: deviceChanged",
                *selection,
                "",
                &variables,
                executed,
            )
            .await;
            ids.push(id);
        }
    }
    // A subscription is live once it reports a change.
    for attempt in 0.. {
        assert!(
            attempt < 40,
            "the subscriptions never became live: {watched:?}"
        );
        app.register_device(&admin, &format!("probe-{attempt}"))
            .await;
        watched
            .read_for(&mut watcher, Duration::from_millis(300))
            .await;
        if ids.iter().all(|id| !watched.of(id).is_empty()) {
            break;
        }
    }
    // From here on every subscription sees every change.
    let start = app.register_device(&admin, "start").await;

    let mut gateway = app.raw_session(&admin, Some("gateway-\u{e9}")).await;
    let mut answers = Inbox::default();
    let registered = mutate(
        &mut gateway,
        &mut answers,
        "register",
        "mutation($a: JSON) { registerDevice(input: {externalId: \"s\u{e9}nsor \\\"1\\\"\", \
         type: \"thermo\", location: \"lab <2>\", attributes: $a}) { id status } }",
        json!({"a": odd}),
    )
    .await;
    assert_eq!(registered["registerDevice"]["status"], "ONLINE");
    let device = registered["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let updated = app
        .gql(
            Some(&admin),
            "mutation($id: ID!, $n: String, $a: JSON) { updateDevice(id: $id, input: \
             {name: $n, location: null, attributes: $a}) { id } }",
            json!({"id": device, "n": "say \"hi\" \\ \u{1F321} \u{2028}", "a": [1.5, -0.0, {}]}),
        )
        .await;
    assert!(updated.body.get("errors").is_none(), "{}", updated.body);
    for mutation in [
        "mutation($id: ID!) { disconnectDevice(id: $id) { id } }",
        "mutation($id: ID!) { deleteDevice(id: $id) }",
    ] {
        let done = app.gql(Some(&admin), mutation, json!({"id": device})).await;
        assert!(done.body.get("errors").is_none(), "{}", done.body);
    }
    let end = app.register_device(&admin, "end").await;
    watched
        .read_until(&mut watcher, |inbox| {
            ids.iter()
                .all(|id| inbox.of(id).iter().any(|p| p.contains(&end)))
        })
        .await;

    for (n, (_, selection, _)) in DEVICE_SELECTIONS.iter().enumerate() {
        let since_start = |id: String| -> Vec<String> {
            let payloads = watched.of(&id);
            let first = payloads
                .iter()
                .position(|p| p.contains(&start))
                .unwrap_or_else(|| panic!("{id} never saw the start: {payloads:?}"));
            payloads[first..].to_vec()
        };
        let (compiled, executed) = (since_start(format!("c{n}")), since_start(format!("x{n}")));
        assert_eq!(compiled, executed, "selection {n}: {selection}");
        // start, REGISTERED, UPDATED, STATUS, DELETED, end.
        assert_eq!(compiled.len(), 6, "{compiled:#?}");
    }
    let kinds: Vec<Value> = watched.of("c0")[watched.of("c0").len() - 6..]
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap()["data"]["d"]["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "REGISTERED",
            "REGISTERED",
            "UPDATED",
            "STATUS",
            "DELETED",
            "REGISTERED"
        ]
    );

    // Commands: two for the gateway's device, queued before it subscribes,
    // and one for a device no gateway hosts, which expires.
    let relay = mutate(
        &mut gateway,
        &mut answers,
        "relay",
        "mutation { registerDevice(input: {externalId: \"relay\"}) { id } }",
        json!({}),
    )
    .await["registerDevice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let orphan = app.register_device(&admin, "orphan").await;
    let send = |device: String, payload: Value, timeout: i64| {
        let (app, admin) = (&app, &admin);
        async move {
            let sent = app
                .gql(
                    Some(admin),
                    "mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }",
                    json!({"i": {"deviceId": device, "service": "s\u{e9}t \"x\"", "payload": payload,
                                 "timeoutSeconds": timeout}}),
                )
                .await;
            sent.data()["sendCommand"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let succeeding = send(relay.clone(), odd.clone(), 300).await;
    let failing = send(relay.clone(), json!(null), 300).await;
    let expiring = send(orphan, json!([true]), 4).await;
    let commands = [&succeeding, &failing, &expiring];

    let mut ids = Vec::new();
    for (c, command) in commands.iter().enumerate() {
        let vars = json!({"on": true, "id": command});
        for (n, selection) in COMMAND_SELECTIONS.iter().enumerate() {
            for (id, executed) in [(format!("c{c}-{n}"), false), (format!("x{c}-{n}"), true)] {
                subscribe_selection(
                    &mut watcher,
                    &id,
                    "c: commandUpdated(id: $id)",
                    *selection,
                    "$id: ID!",
                    &vars,
                    executed,
                )
                .await;
                ids.push(id);
            }
        }
    }
    // Each starts with the command as it is (PENDING): wait for all before
    // anything changes.
    watched
        .read_until(&mut watcher, |inbox| {
            ids.iter().all(|id| !inbox.of(id).is_empty())
        })
        .await;

    // The gateway takes its two queued commands, each compared with what a
    // query renders (nothing changes them until they are answered).
    subscribe_selection(
        &mut gateway,
        "work",
        "w: commands",
        COMMAND_SELECTIONS[0],
        "",
        &json!({}),
        false,
    )
    .await;
    answers
        .read_until(&mut gateway, |inbox| inbox.of("work").len() == 2)
        .await;
    for payload in answers.of("work") {
        let command: Value = serde_json::from_str(payload).unwrap();
        let id = command["data"]["w"]["id"].clone();
        let query = format!(
            "query($id: ID!) {{ command(id: $id) {} }}",
            COMMAND_SELECTIONS[0].1
        );
        let expected = app.gql_text(&admin, &query, json!({"id": id})).await;
        assert_eq!(
            data_object(payload, "w", "}}"),
            data_object(&expected, "command", "}}")
        );
        assert_eq!(command["data"]["w"]["status"], "DELIVERED");
    }
    let respond = "mutation($id: ID!, $ok: Boolean!, $r: JSON) { respondCommand(id: $id, success: $ok, result: $r) { id } }";
    mutate(
        &mut gateway,
        &mut answers,
        "ok",
        respond,
        json!({"id": succeeding, "ok": true, "r": odd}),
    )
    .await;
    mutate(
        &mut gateway,
        &mut answers,
        "fail",
        respond,
        json!({"id": failing, "ok": false, "r": null}),
    )
    .await;

    // Every commandUpdated completes once its command is final.
    watched
        .read_until(&mut watcher, |inbox| {
            ids.iter().all(|id| inbox.completed.contains(id))
        })
        .await;
    for (c, command) in commands.iter().enumerate() {
        for n in 0..COMMAND_SELECTIONS.len() {
            let (compiled, executed) = (
                watched.of(&format!("c{c}-{n}")),
                watched.of(&format!("x{c}-{n}")),
            );
            assert_eq!(compiled, executed, "command {command}, selection {n}");
        }
        let statuses: Vec<Value> = watched
            .of(&format!("c{c}-0"))
            .iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap()["data"]["c"]["status"].clone())
            .collect();
        let expected: &[&str] = match c {
            0 => &["PENDING", "DELIVERED", "SUCCEEDED"],
            1 => &["PENDING", "DELIVERED", "FAILED"],
            _ => &["PENDING", "EXPIRED"],
        };
        assert_eq!(statuses, expected, "command {command}");
    }
}
