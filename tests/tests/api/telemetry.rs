//! `telemetry`: buckets computed from real events on both backends, the time
//! an event counts at, what counts as a value, and every argument refused.

use chrono::{DateTime, TimeDelta, Utc};
use ferrite_e2e::{Backend, TestApp, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    telemetry_summarises_a_field_per_bucket,
    telemetry_reads_booleans_bare_payloads_and_odd_keys,
    an_event_without_occurred_at_counts_when_it_was_received,
    telemetry_refuses_bad_arguments_and_other_tenants_devices,
);

const TELEMETRY: &str =
    "query($d: ID!, $s: String!, $f: String!, $from: DateTime!, $to: DateTime!, $b: Int!) {
    telemetry(deviceId: $d, service: $s, field: $f, from: $from, to: $to, bucketSeconds: $b) {
        start end count min max avg sum first last
    }
}";

/// 2026-01-01T00:00:00Z plus `seconds` (fractions allowed).
fn t(seconds: f64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + TimeDelta::microseconds((seconds * 1e6).round() as i64)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn publish(
    app: &TestApp,
    token: &str,
    device: &str,
    service: &str,
    at: Option<f64>,
    payload: Value,
) {
    let mut input = json!({"deviceId": device, "service": service, "payload": payload});
    if let Some(at) = at {
        input["occurredAt"] = json!(rfc3339(t(at)));
    }
    app.gql(
        Some(token),
        "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
        json!({ "i": input }),
    )
    .await
    .data();
}

async fn telemetry(
    app: &TestApp,
    token: &str,
    device: &str,
    service: &str,
    field: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    bucket_seconds: i64,
) -> ferrite_e2e::GqlResponse {
    app.gql(
        Some(token),
        TELEMETRY,
        json!({
            "d": device, "s": service, "f": field,
            "from": rfc3339(from), "to": rfc3339(to), "b": bucket_seconds,
        }),
    )
    .await
}

async fn buckets(
    app: &TestApp,
    token: &str,
    device: &str,
    service: &str,
    field: &str,
    span: (DateTime<Utc>, DateTime<Utc>),
    bucket_seconds: i64,
) -> Vec<Value> {
    telemetry(app, token, device, service, field, span, bucket_seconds)
        .await
        .data()["telemetry"]
        .as_array()
        .expect("a list")
        .clone()
}

/// A bucket's times, as instants (the server may write them differently).
fn span_of(bucket: &Value) -> (DateTime<Utc>, DateTime<Utc>) {
    let parse = |field: &str| {
        DateTime::parse_from_rfc3339(bucket[field].as_str().expect("a time"))
            .unwrap()
            .with_timezone(&Utc)
    };
    (parse("start"), parse("end"))
}

/// count, min, max, sum, first, last of a bucket.
fn figures(bucket: &Value) -> (u64, Value, Value, Value, Value, Value) {
    (
        bucket["count"].as_u64().expect("a count"),
        bucket["min"].clone(),
        bucket["max"].clone(),
        bucket["sum"].clone(),
        bucket["first"].clone(),
        bucket["last"].clone(),
    )
}

async fn telemetry_summarises_a_field_per_bucket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "climate-1").await;
    let neighbour = app.register_device(&admin, "climate-2").await;
    let reading = |value: Value| json!({"env": {"t": value}, "unit": "°C"});

    // Bucket [0 s, 60 s): published out of order; the last microsecond
    // belongs to it.
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(0.0),
        reading(json!(1.5)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(59.999999),
        reading(json!(-2.25)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(30.0),
        reading(json!(0.5)),
    )
    .await;
    // Bucket [60 s, 120 s): two events at the same instant, told apart by id.
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(60.0),
        reading(json!(4)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(60.0),
        reading(json!(8)),
    )
    .await;
    // Bucket [120 s, 150.5 s), cut short by `to`: a number as large as JSON
    // integers get, and values that are not numbers, which do not count.
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(150.0),
        reading(json!(u64::MAX)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(130.0),
        reading(json!("n/a")),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(131.0),
        reading(json!(null)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(132.0),
        reading(json!({"v": 1})),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(133.0),
        reading(json!([1, 2])),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(134.0),
        json!({"env": 5}),
    )
    .await;
    publish(&app, &admin, &device, "climate", Some(135.0), json!("21.5")).await;
    // Outside: before `from`, at `to` (exclusive), another service, another
    // device.
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(-0.000001),
        reading(json!(100)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "climate",
        Some(150.5),
        reading(json!(100)),
    )
    .await;
    publish(
        &app,
        &admin,
        &device,
        "power",
        Some(10.0),
        reading(json!(100)),
    )
    .await;
    publish(
        &app,
        &admin,
        &neighbour,
        "climate",
        Some(10.0),
        reading(json!(100)),
    )
    .await;
    let stored = app.event_count(&admin).await;

    let found = buckets(
        &app,
        &admin,
        &device,
        "climate",
        "env.t",
        (t(0.0), t(150.5)),
        60,
    )
    .await;
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(span_of(&found[0]), (t(0.0), t(60.0)));
    assert_eq!(span_of(&found[1]), (t(60.0), t(120.0)));
    assert_eq!(span_of(&found[2]), (t(120.0), t(150.5)));

    assert_eq!(
        figures(&found[0]),
        (
            3,
            json!(-2.25),
            json!(1.5),
            json!(-0.25),
            json!(1.5),
            json!(-2.25)
        )
    );
    assert_eq!(found[0]["avg"], json!(-0.25 / 3.0));
    assert_eq!(
        figures(&found[1]),
        (
            2,
            json!(4.0),
            json!(8.0),
            json!(12.0),
            json!(4.0),
            json!(8.0)
        )
    );
    assert_eq!(found[1]["avg"], json!(6.0));
    let huge = json!(u64::MAX as f64);
    assert_eq!(
        figures(&found[2]),
        (
            1,
            huge.clone(),
            huge.clone(),
            huge.clone(),
            huge.clone(),
            huge
        )
    );

    // The same events in one bucket, and in buckets of a second where most
    // are empty: count 0 and nothing else.
    let whole = buckets(
        &app,
        &admin,
        &device,
        "climate",
        "env.t",
        (t(0.0), t(150.5)),
        3600,
    )
    .await;
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0]["count"], 6);
    assert_eq!(span_of(&whole[0]), (t(0.0), t(150.5)));
    let seconds = buckets(
        &app,
        &admin,
        &device,
        "climate",
        "env.t",
        (t(0.0), t(150.5)),
        1,
    )
    .await;
    assert_eq!(seconds.len(), 151);
    let counts: Vec<(usize, u64)> = seconds
        .iter()
        .enumerate()
        .filter(|(_, b)| b["count"] != 0)
        .map(|(i, b)| (i, b["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [(0, 1), (30, 1), (59, 1), (60, 2), (150, 1)]);
    assert_eq!(
        figures(&seconds[1]),
        (
            0,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null
        )
    );
    assert_eq!(seconds[1]["avg"], Value::Null);

    // Another service of the same device is its own series.
    let power = buckets(
        &app,
        &admin,
        &device,
        "power",
        "env.t",
        (t(0.0), t(60.0)),
        60,
    )
    .await;
    assert_eq!(figures(&power[0]).0, 1);
    assert_eq!(power[0]["sum"], json!(100.0));

    // Reading changed nothing.
    assert_eq!(app.event_count(&admin).await, stored);
}

async fn telemetry_reads_booleans_bare_payloads_and_odd_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "switch").await;

    for (at, on) in [
        (0.0, true),
        (10.0, false),
        (20.0, true),
        (70.0, true),
        (71.0, false),
    ] {
        publish(&app, &admin, &device, "state", Some(at), json!({"on": on})).await;
    }
    // A boolean counts as 1 or 0: the average is the share of readings
    // that were on.
    let on = buckets(&app, &admin, &device, "state", "on", (t(0.0), t(120.0)), 60).await;
    assert_eq!(
        figures(&on[0]),
        (
            3,
            json!(0.0),
            json!(1.0),
            json!(2.0),
            json!(1.0),
            json!(1.0)
        )
    );
    assert_eq!(on[0]["avg"], json!(2.0 / 3.0));
    assert_eq!(
        figures(&on[1]),
        (
            2,
            json!(0.0),
            json!(1.0),
            json!(1.0),
            json!(1.0),
            json!(0.0)
        )
    );

    // `""` is the payload itself; a payload that is an object is skipped.
    publish(&app, &admin, &device, "kwh", Some(0.0), json!(3)).await;
    publish(&app, &admin, &device, "kwh", Some(61.0), json!(5.5)).await;
    publish(&app, &admin, &device, "kwh", Some(62.0), json!({"kwh": 1})).await;
    let kwh = buckets(&app, &admin, &device, "kwh", "", (t(0.0), t(120.0)), 60).await;
    assert_eq!(
        (kwh[0]["count"].clone(), kwh[0]["sum"].clone()),
        (json!(1), json!(3.0))
    );
    assert_eq!(
        (kwh[1]["count"].clone(), kwh[1]["sum"].clone()),
        (json!(1), json!(5.5))
    );

    // Keys with spaces, symbols, digits only, and a path three deep; the
    // keys reach the database as parameters, so quotes in them cannot, and
    // SQL in them is a key like any other.
    publish(
        &app,
        &admin,
        &device,
        "odd",
        Some(1.0),
        json!({"temp °C": 20.5, "0": 7, "a": {"b": {"c": -1}}, "x' OR '1'='1": 9}),
    )
    .await;
    for (field, sum) in [
        ("temp °C", 20.5),
        ("0", 7.0),
        ("a.b.c", -1.0),
        ("x' OR '1'='1", 9.0),
    ] {
        let found = buckets(&app, &admin, &device, "odd", field, (t(0.0), t(60.0)), 60).await;
        assert_eq!(found[0]["sum"], json!(sum), "field {field:?}");
    }
    let missing = buckets(
        &app,
        &admin,
        &device,
        "odd",
        "a.b.c.d",
        (t(0.0), t(60.0)),
        60,
    )
    .await;
    assert_eq!(missing[0]["count"], 0);
}

async fn an_event_without_occurred_at_counts_when_it_was_received(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    let before = Utc::now() - TimeDelta::seconds(1);
    publish(&app, &admin, &device, "kwh", None, json!({"v": 7})).await;
    // A gateway's buffered reading from the new year's first minute, sent now.
    publish(&app, &admin, &device, "kwh", Some(1.0), json!({"v": 2})).await;
    let after = Utc::now() + TimeDelta::seconds(1);

    let now = buckets(&app, &admin, &device, "kwh", "v", (before, after), 3600).await;
    assert_eq!(
        (now[0]["count"].clone(), now[0]["sum"].clone()),
        (json!(1), json!(7.0))
    );
    let then = buckets(&app, &admin, &device, "kwh", "v", (t(0.0), t(60.0)), 60).await;
    assert_eq!(
        (then[0]["count"].clone(), then[0]["sum"].clone()),
        (json!(1), json!(2.0))
    );
}

async fn telemetry_refuses_bad_arguments_and_other_tenants_devices(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.telemetry_buckets = 10).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    publish(&app, &admin, &device, "kwh", Some(1.0), json!({"v": 2})).await;
    let stored = app.event_count(&admin).await;
    let span = (t(0.0), t(60.0));

    let refused = [
        (
            "bucketSeconds 0",
            telemetry(&app, &admin, &device, "kwh", "v", span, 0).await,
        ),
        (
            "bucketSeconds < 0",
            telemetry(&app, &admin, &device, "kwh", "v", span, -60).await,
        ),
        (
            "to = from",
            telemetry(&app, &admin, &device, "kwh", "v", (t(0.0), t(0.0)), 60).await,
        ),
        (
            "to < from",
            telemetry(&app, &admin, &device, "kwh", "v", (t(60.0), t(0.0)), 60).await,
        ),
        (
            "11 buckets",
            telemetry(&app, &admin, &device, "kwh", "v", (t(0.0), t(10.5)), 1).await,
        ),
        (
            "a year in seconds",
            telemetry(&app, &admin, &device, "kwh", "v", (t(0.0), t(3.2e7)), 1).await,
        ),
        (
            "empty key",
            telemetry(&app, &admin, &device, "kwh", "a..b", span, 60).await,
        ),
        (
            "quote in key",
            telemetry(&app, &admin, &device, "kwh", "a\"b", span, 60).await,
        ),
        (
            "nine keys",
            telemetry(&app, &admin, &device, "kwh", "a.b.c.d.e.f.g.h.i", span, 60).await,
        ),
        (
            "empty service",
            telemetry(&app, &admin, &device, "", "v", span, 60).await,
        ),
        (
            "garbage id",
            telemetry(&app, &admin, "not-a-uuid", "kwh", "v", span, 60).await,
        ),
    ];
    for (what, response) in refused {
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{what}: {:?}",
            response.body
        );
        assert!(!response.error_message().is_empty(), "{what}");
    }
    let limit = telemetry(&app, &admin, &device, "kwh", "v", (t(0.0), t(10.0)), 1).await;
    assert_eq!(
        limit.data()["telemetry"].as_array().unwrap().len(),
        10,
        "the limit itself is allowed"
    );

    // Not a date, not an integer: refused by the schema.
    for variables in [
        json!({"d": device, "s": "kwh", "f": "v", "from": "yesterday", "to": rfc3339(t(60.0)), "b": 60}),
        json!({"d": device, "s": "kwh", "f": "v", "from": rfc3339(t(0.0)), "to": rfc3339(t(60.0)), "b": 1.5}),
        json!({"d": device, "s": "kwh", "f": "v", "from": rfc3339(t(0.0)), "to": rfc3339(t(60.0)), "b": 1e12}),
    ] {
        let response = app.gql(Some(&admin), TELEMETRY, variables).await;
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{:?}",
            response.body
        );
    }

    // Unknown devices and other members' devices look the same: NOT_FOUND.
    let unknown = uuid::Uuid::new_v4().to_string();
    let response = telemetry(&app, &admin, &unknown, "kwh", "v", span, 60).await;
    assert_eq!(response.error_code(), "NOT_FOUND");
    let member = app.create_member("mallory").await;
    let response = telemetry(&app, &member, &device, "kwh", "v", span, 60).await;
    assert_eq!(response.error_code(), "NOT_FOUND");
    let own = app.register_device(&member, "meter").await;
    publish(&app, &member, &own, "kwh", Some(2.0), json!({"v": 40})).await;
    let mine = buckets(&app, &member, &own, "kwh", "v", span, 60).await;
    assert_eq!(mine[0]["sum"], json!(40.0), "a member reads its own device");
    let response = app
        .gql(
            None,
            TELEMETRY,
            json!({"d": device, "s": "kwh", "f": "v", "from": rfc3339(t(0.0)), "to": rfc3339(t(60.0)), "b": 60}),
        )
        .await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");

    // Nothing was changed by any of it.
    assert_eq!(app.event_count(&admin).await, stored + 1);
    let admins = buckets(&app, &admin, &device, "kwh", "v", span, 60).await;
    assert_eq!(admins[0]["sum"], json!(2.0));
}
