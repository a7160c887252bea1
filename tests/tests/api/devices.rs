//! Devices: registration as an upsert, updates, tenant isolation, limits.

use ferrite_e2e::{Backend, TestApp, on_both_backends};
use serde_json::json;

on_both_backends!(
    registering_again_updates_the_same_device,
    two_owners_may_use_the_same_external_id,
    a_member_cannot_reach_another_members_device,
    an_unknown_or_malformed_device_id_is_refused,
    names_longer_than_the_limits_are_refused,
    update_disconnect_and_delete_a_device,
    devices_filter_and_page,
);

const REGISTER: &str = "mutation($i: RegisterDeviceInput!) { registerDevice(input: $i) { id externalId name type location attributes status } }";

async fn registering_again_updates_the_same_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let first = app
        .gql(
            Some(&admin),
            REGISTER,
            json!({"i": {"externalId": "t-1", "type": "thermostat", "location": "kitchen"}}),
        )
        .await;
    let first = &first.data()["registerDevice"];
    assert_eq!(first["name"], "t-1");
    assert_eq!(first["status"], "OFFLINE");
    assert_eq!(first["attributes"], json!({}));

    let second = app
        .gql(Some(&admin), REGISTER, json!({"i": {"externalId": "t-1", "name": "Kitchen thermostat", "attributes": {"unit": "C"}}}))
        .await;
    let second = &second.data()["registerDevice"];
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["name"], "Kitchen thermostat");
    // Fields left out keep their values.
    assert_eq!(second["type"], "thermostat");
    assert_eq!(second["location"], "kitchen");
    assert_eq!(second["attributes"], json!({"unit": "C"}));
    assert_eq!(app.device_count(&admin).await, 1);
}

async fn two_owners_may_use_the_same_external_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.create_member("alice").await;
    let bob = app.create_member("bob").await;
    let a = app.register_device(&alice, "sensor").await;
    let b = app.register_device(&bob, "sensor").await;
    assert_ne!(a, b);
    assert_eq!(app.device_count(&alice).await, 1);
    assert_eq!(app.device_count(&bob).await, 1);
    assert_eq!(app.device_count(&app.admin_token().await).await, 2);
}

async fn a_member_cannot_reach_another_members_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.create_member("alice").await;
    let mallory = app.create_member("mallory").await;
    let device = app.register_device(&alice, "door-lock").await;
    app.publish(&alice, &device, "locked", json!(true)).await;

    let attempts = [
        "query($id: ID!) { device(id: $id) { id } }",
        "mutation($id: ID!) { updateDevice(id: $id, input: {name: \"mine\"}) { id } }",
        "mutation($id: ID!) { disconnectDevice(id: $id) { id } }",
        "mutation($id: ID!) { deleteDevice(id: $id) }",
        "mutation($id: ID!) { publishEvent(input: {deviceId: $id, service: \"unlocked\", payload: true}) { id } }",
        "mutation($id: ID!) { publishEvents(inputs: [{deviceId: $id, service: \"unlocked\", payload: true}]) { id } }",
        "mutation($id: ID!) { sendCommand(input: {deviceId: $id, service: \"unlock\"}) { id } }",
    ];
    for query in attempts {
        let response = app.gql(Some(&mallory), query, json!({"id": device})).await;
        assert_eq!(response.error_code(), "NOT_FOUND", "{query}");
    }
    // Lists and filters do not leak either.
    let listed = app
        .gql(Some(&mallory), "query($id: ID!) { devices(filter: {ids: [$id]}) { totalCount nodes { id } } events(filter: {deviceIds: [$id]}) { totalCount } }", json!({"id": device}))
        .await;
    assert_eq!(listed.data()["devices"]["totalCount"], 0);
    assert_eq!(listed.data()["events"]["totalCount"], 0);

    // Alice's device is untouched.
    let seen = app
        .gql(
            Some(&alice),
            "query($id: ID!) { device(id: $id) { name status } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(
        seen.data()["device"],
        json!({"name": "door-lock", "status": "OFFLINE"})
    );
    assert_eq!(app.event_count(&alice).await, 1);
}

async fn an_unknown_or_malformed_device_id_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let query = "query($id: ID!) { device(id: $id) { id } }";
    assert_eq!(
        app.gql(Some(&admin), query, json!({"id": unknown}))
            .await
            .error_code(),
        "NOT_FOUND"
    );
    assert_eq!(
        app.gql(Some(&admin), query, json!({"id": "not-a-uuid"}))
            .await
            .error_code(),
        "BAD_USER_INPUT"
    );
    let publish = app
        .gql(Some(&admin), "mutation($id: ID!) { publishEvent(input: {deviceId: $id, service: \"t\", payload: 1}) { id } }", json!({"id": unknown}))
        .await;
    assert_eq!(publish.error_code(), "NOT_FOUND");
    assert_eq!(app.event_count(&admin).await, 0);
}

async fn names_longer_than_the_limits_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "ok").await;
    let too_long = [
        json!({"externalId": "x".repeat(129)}),
        json!({"externalId": ""}),
        json!({"externalId": "a\nb"}),
        json!({"externalId": "y", "name": "n".repeat(201)}),
        json!({"externalId": "y", "type": "t".repeat(65)}),
        json!({"externalId": "y", "location": "l".repeat(201)}),
        json!({"externalId": "y", "attributes": {"blob": "a".repeat(17 * 1024)}}),
    ];
    for input in too_long {
        let response = app.gql(Some(&admin), REGISTER, json!({"i": input})).await;
        assert_eq!(response.error_code(), "BAD_USER_INPUT", "{input}");
    }
    let update = app
        .gql(
            Some(&admin),
            "mutation($id: ID!, $n: String!) { updateDevice(id: $id, input: {name: $n}) { id } }",
            json!({"id": device, "n": "n".repeat(201)}),
        )
        .await;
    assert_eq!(update.error_code(), "BAD_USER_INPUT");
    let service = app
        .gql(Some(&admin), "mutation($id: ID!, $s: String!) { publishEvent(input: {deviceId: $id, service: $s, payload: 1}) { id } }", json!({"id": device, "s": "s".repeat(129)}))
        .await;
    assert_eq!(service.error_code(), "BAD_USER_INPUT");
    let key = app
        .gql(
            Some(&admin),
            "mutation($n: String!) { createApiKey(name: $n, permission: READ) { secret } }",
            json!({"n": "k".repeat(101)}),
        )
        .await;
    assert_eq!(key.error_code(), "BAD_USER_INPUT");
    // Only the first device exists, unchanged.
    let listed = app
        .gql(
            Some(&admin),
            "{ devices { totalCount nodes { name } } apiKeys { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed.data()["devices"],
        json!({"totalCount": 1, "nodes": [{"name": "ok"}]})
    );
    assert_eq!(listed.data()["apiKeys"], json!([]));
    assert_eq!(app.event_count(&admin).await, 0);
}

async fn update_disconnect_and_delete_a_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "relay").await;
    app.publish(&admin, &device, "on", json!({})).await;
    app.gql(
        Some(&admin),
        "mutation($id: ID!) { sendCommand(input: {deviceId: $id, service: \"off\"}) { id } }",
        json!({"id": device}),
    )
    .await
    .data();

    let updated = app
        .gql(Some(&admin), "mutation($id: ID!) { updateDevice(id: $id, input: {name: \"Relay\", location: \"garage\", attributes: {pins: 4}}) { name location attributes externalId } }", json!({"id": device}))
        .await;
    assert_eq!(
        updated.data()["updateDevice"],
        json!({"name": "Relay", "location": "garage", "attributes": {"pins": 4}, "externalId": "relay"})
    );
    let cleared = app
        .gql(Some(&admin), "mutation($id: ID!) { updateDevice(id: $id, input: {location: null}) { name location } }", json!({"id": device}))
        .await;
    assert_eq!(
        cleared.data()["updateDevice"],
        json!({"name": "Relay", "location": null})
    );

    let disconnected = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { disconnectDevice(id: $id) { status connectorId } }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(
        disconnected.data()["disconnectDevice"],
        json!({"status": "DISCONNECTED", "connectorId": null})
    );

    let deleted = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { deleteDevice(id: $id) }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(deleted.data()["deleteDevice"], device);
    // Its events and commands went with it.
    let after = app
        .gql(
            Some(&admin),
            "{ devices { totalCount } events { totalCount } commands { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        after.data(),
        &json!({"devices": {"totalCount": 0}, "events": {"totalCount": 0}, "commands": {"totalCount": 0}})
    );
    let again = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { deleteDevice(id: $id) }",
            json!({"id": device}),
        )
        .await;
    assert_eq!(again.error_code(), "NOT_FOUND");
}

async fn devices_filter_and_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    for (ext, kind, location) in [
        ("a", "thermostat", "kitchen"),
        ("b", "thermostat", "hall"),
        ("c", "switch", "kitchen"),
        ("d", "switch", "hall"),
        ("e", "relay", "garage"),
    ] {
        app.gql(
            Some(&admin),
            REGISTER,
            json!({"i": {"externalId": ext, "type": kind, "location": location}}),
        )
        .await
        .data();
    }
    let filtered = app
        .gql(Some(&admin), "{ devices(filter: {types: [\"thermostat\", \"switch\"], locations: [\"kitchen\"]}) { totalCount nodes { externalId } } }", json!({}))
        .await;
    assert_eq!(
        filtered.data()["devices"],
        json!({"totalCount": 2, "nodes": [{"externalId": "a"}, {"externalId": "c"}]})
    );
    let by_status = app
        .gql(
            Some(&admin),
            "{ devices(filter: {status: [ONLINE]}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(by_status.data()["devices"]["totalCount"], 0);

    // Oldest first, two at a time.
    let page = "query($after: String) { devices(first: 2, after: $after) { edges { cursor node { externalId } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let response = app.gql(Some(&admin), page, json!({"after": after})).await;
        let devices = &response.data()["devices"];
        for edge in devices["edges"].as_array().unwrap() {
            seen.push(edge["node"]["externalId"].as_str().unwrap().to_owned());
        }
        assert_eq!(devices["pageInfo"]["hasPreviousPage"], !after.is_null());
        if devices["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = devices["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);

    let too_many = app
        .gql(
            Some(&admin),
            "{ devices(first: 100000) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(too_many.error_code(), "BAD_USER_INPUT");
    let negative = app
        .gql(
            Some(&admin),
            "{ devices(first: -1) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(negative.error_code(), "BAD_USER_INPUT");
    let big_filter: Vec<String> = (0..101).map(|i| format!("ext-{i}")).collect();
    let filter = app
        .gql(
            Some(&admin),
            "query($e: [String!]) { devices(filter: {externalIds: $e}) { totalCount } }",
            json!({"e": big_filter}),
        )
        .await;
    assert_eq!(filter.error_code(), "BAD_USER_INPUT");
}
