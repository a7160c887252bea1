//! `telemetry`: buckets computed from real events on both backends, the time
//! an event counts at, what counts as a value, and every argument refused.

use chrono::{DateTime, TimeDelta, Utc};
use ferrite_e2e::{
    Backend, GqlResponse, TestApp, on_both_backends,
    ws::{Op, next_item},
};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(
    telemetry_summarises_a_field_per_bucket,
    telemetry_reads_booleans_bare_payloads_and_odd_keys,
    an_event_without_occurred_at_counts_when_it_was_received,
    telemetry_refuses_bad_arguments_and_other_tenants_devices,
    as_of_splits_history_from_the_live_tail_with_no_seam,
);

const TELEMETRY: &str =
    "query($d: ID!, $s: String!, $f: String!, $from: DateTime!, $to: DateTime!, $b: Int!) {
    telemetry(deviceId: $d, service: $s, field: $f, from: $from, to: $to, bucketSeconds: $b) {
        start end count min max avg sum first last
    }
}";

type Span = (DateTime<Utc>, DateTime<Utc>);

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

/// One caller looking at one device: publishes its events and asks for
/// its telemetry.
struct Series<'a> {
    app: &'a TestApp,
    token: &'a str,
    device: &'a str,
}

impl Series<'_> {
    /// Publishes an event that occurred `at` seconds into the year (or, with
    /// `None`, without `occurredAt`).
    async fn publish(&self, service: &str, at: Option<f64>, payload: Value) {
        let mut input = json!({"deviceId": self.device, "service": service, "payload": payload});
        if let Some(at) = at {
            input["occurredAt"] = json!(rfc3339(t(at)));
        }
        self.app
            .gql(
                Some(self.token),
                "mutation($i: EventInput!) { publishEvent(input: $i) { id } }",
                json!({ "i": input }),
            )
            .await
            .data();
    }

    async fn telemetry(&self, service: &str, field: &str, span: Span, bucket: i64) -> GqlResponse {
        let variables = json!({
            "d": self.device, "s": service, "f": field,
            "from": rfc3339(span.0), "to": rfc3339(span.1), "b": bucket,
        });
        self.app.gql(Some(self.token), TELEMETRY, variables).await
    }

    async fn buckets(&self, service: &str, field: &str, span: Span, bucket: i64) -> Vec<Value> {
        let response = self.telemetry(service, field, span, bucket).await;
        response.data()["telemetry"]
            .as_array()
            .expect("a list")
            .clone()
    }
}

/// A bucket's times, as instants (the server may write them differently).
fn span_of(bucket: &Value) -> Span {
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

/// count and sum of a bucket.
fn count_and_sum(bucket: &Value) -> (Value, Value) {
    (bucket["count"].clone(), bucket["sum"].clone())
}

async fn telemetry_summarises_a_field_per_bucket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "climate-1").await;
    let neighbour = app.register_device(&admin, "climate-2").await;
    let series = Series {
        app: &app,
        token: &admin,
        device: &device,
    };
    let reading = |value: Value| json!({"env": {"t": value}, "unit": "°C"});

    let events = [
        // Bucket [0 s, 60 s): published out of order; its last microsecond
        // belongs to it.
        ("climate", 0.0, reading(json!(1.5))),
        ("climate", 59.999999, reading(json!(-2.25))),
        ("climate", 30.0, reading(json!(0.5))),
        // Bucket [60 s, 120 s): two events at one instant, told apart by id.
        ("climate", 60.0, reading(json!(4))),
        ("climate", 60.0, reading(json!(8))),
        // Bucket [120 s, 150.5 s), cut short by `to`: a number as large as
        // JSON integers get, and values that are not numbers, which do not
        // count.
        ("climate", 150.0, reading(json!(u64::MAX))),
        ("climate", 130.0, reading(json!("n/a"))),
        ("climate", 131.0, reading(json!(null))),
        ("climate", 132.0, reading(json!({"v": 1}))),
        ("climate", 133.0, reading(json!([1, 2]))),
        ("climate", 134.0, json!({"env": 5})),
        ("climate", 135.0, json!("21.5")),
        // Outside: before `from`, at `to` (exclusive), another service.
        ("climate", -0.000001, reading(json!(100))),
        ("climate", 150.5, reading(json!(100))),
        ("power", 10.0, reading(json!(100))),
    ];
    for (service, at, payload) in events {
        series.publish(service, Some(at), payload).await;
    }
    let other_device = Series {
        device: &neighbour,
        ..series
    };
    other_device
        .publish("climate", Some(10.0), reading(json!(100)))
        .await;
    let stored = app.event_count(&admin).await;

    let span = (t(0.0), t(150.5));
    let found = series.buckets("climate", "env.t", span, 60).await;
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
    let whole = series.buckets("climate", "env.t", span, 3600).await;
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0]["count"], 6);
    assert_eq!(span_of(&whole[0]), span);
    let seconds = series.buckets("climate", "env.t", span, 1).await;
    assert_eq!(seconds.len(), 151);
    let counts: Vec<(usize, u64)> = seconds
        .iter()
        .enumerate()
        .filter(|(_, b)| b["count"] != 0)
        .map(|(i, b)| (i, b["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [(0, 1), (30, 1), (59, 1), (60, 2), (150, 1)]);
    let null = Value::Null;
    assert_eq!(
        figures(&seconds[1]),
        (
            0,
            null.clone(),
            null.clone(),
            null.clone(),
            null.clone(),
            null
        )
    );
    assert_eq!(seconds[1]["avg"], Value::Null);

    // Another service of the same device is its own series.
    let power = series
        .buckets("power", "env.t", (t(0.0), t(60.0)), 60)
        .await;
    assert_eq!(count_and_sum(&power[0]), (json!(1), json!(100.0)));

    // Reading changed nothing.
    assert_eq!(app.event_count(&admin).await, stored);
}

async fn telemetry_reads_booleans_bare_payloads_and_odd_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "switch").await;
    let series = Series {
        app: &app,
        token: &admin,
        device: &device,
    };
    let minutes = (t(0.0), t(120.0));

    for (at, on) in [
        (0.0, true),
        (10.0, false),
        (20.0, true),
        (70.0, true),
        (71.0, false),
    ] {
        series.publish("state", Some(at), json!({"on": on})).await;
    }
    // A boolean counts as 1 or 0: the average is the share of readings
    // that were on.
    let on = series.buckets("state", "on", minutes, 60).await;
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
    series.publish("kwh", Some(0.0), json!(3)).await;
    series.publish("kwh", Some(61.0), json!(5.5)).await;
    series.publish("kwh", Some(62.0), json!({"kwh": 1})).await;
    let kwh = series.buckets("kwh", "", minutes, 60).await;
    assert_eq!(count_and_sum(&kwh[0]), (json!(1), json!(3.0)));
    assert_eq!(count_and_sum(&kwh[1]), (json!(1), json!(5.5)));

    // Keys with spaces, symbols, digits only, and a path three deep; the
    // keys reach the database as parameters, so SQL in a key is a key like
    // any other.
    let odd = json!({"temp °C": 20.5, "0": 7, "a": {"b": {"c": -1}}, "x' OR '1'='1": 9});
    series.publish("odd", Some(1.0), odd).await;
    let minute = (t(0.0), t(60.0));
    for (field, sum) in [
        ("temp °C", 20.5),
        ("0", 7.0),
        ("a.b.c", -1.0),
        ("x' OR '1'='1", 9.0),
    ] {
        let found = series.buckets("odd", field, minute, 60).await;
        assert_eq!(found[0]["sum"], json!(sum), "field {field:?}");
    }
    let missing = series.buckets("odd", "a.b.c.d", minute, 60).await;
    assert_eq!(missing[0]["count"], 0);

    // Values that add up past the largest double: no sum or average, the
    // rest as usual (not an error).
    series.publish("big", Some(1.0), json!(1e308)).await;
    series.publish("big", Some(2.0), json!(1e308)).await;
    let big = series.buckets("big", "", minute, 60).await;
    assert_eq!(
        figures(&big[0]),
        (
            2,
            json!(1e308),
            json!(1e308),
            Value::Null,
            json!(1e308),
            json!(1e308)
        )
    );
    assert_eq!(big[0]["avg"], Value::Null);
}

async fn an_event_without_occurred_at_counts_when_it_was_received(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    let series = Series {
        app: &app,
        token: &admin,
        device: &device,
    };
    let before = Utc::now() - TimeDelta::seconds(1);
    series.publish("kwh", None, json!({"v": 7})).await;
    // A gateway's buffered reading from the year's first minute, sent now.
    series.publish("kwh", Some(1.0), json!({"v": 2})).await;
    let after = Utc::now() + TimeDelta::seconds(1);

    let now = series.buckets("kwh", "v", (before, after), 3600).await;
    assert_eq!(count_and_sum(&now[0]), (json!(1), json!(7.0)));
    let then = series.buckets("kwh", "v", (t(0.0), t(60.0)), 60).await;
    assert_eq!(count_and_sum(&then[0]), (json!(1), json!(2.0)));
}

async fn telemetry_refuses_bad_arguments_and_other_tenants_devices(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.limits.telemetry_buckets = 10).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter").await;
    let series = Series {
        app: &app,
        token: &admin,
        device: &device,
    };
    series.publish("kwh", Some(1.0), json!({"v": 2})).await;
    let stored = app.event_count(&admin).await;
    let span = (t(0.0), t(60.0));

    let refused = [
        ("bucketSeconds 0", "kwh", "v", span, 0),
        ("bucketSeconds < 0", "kwh", "v", span, -60),
        ("to = from", "kwh", "v", (t(0.0), t(0.0)), 60),
        ("to < from", "kwh", "v", (t(60.0), t(0.0)), 60),
        ("11 buckets", "kwh", "v", (t(0.0), t(10.5)), 1),
        ("a year in seconds", "kwh", "v", (t(0.0), t(3.2e7)), 1),
        ("an empty key", "kwh", "a..b", span, 60),
        ("a quote in a key", "kwh", "a\"b", span, 60),
        ("nine keys", "kwh", "a.b.c.d.e.f.g.h.i", span, 60),
        ("an empty service", "", "v", span, 60),
    ];
    for (what, service, field, span, bucket) in refused {
        let response = series.telemetry(service, field, span, bucket).await;
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{what}: {:?}",
            response.body
        );
        assert!(!response.error_message().is_empty(), "{what}");
    }
    let garbage_id = Series {
        device: "not-a-uuid",
        ..series
    };
    let response = garbage_id.telemetry("kwh", "v", span, 60).await;
    assert_eq!(response.error_code(), "BAD_USER_INPUT");
    let at_the_limit = series.buckets("kwh", "v", (t(0.0), t(10.0)), 1).await;
    assert_eq!(at_the_limit.len(), 10, "the limit itself is allowed");

    // Not a date, not an integer, not an Int: refused by the schema.
    let (from, to) = (rfc3339(t(0.0)), rfc3339(t(60.0)));
    for variables in [
        json!({"d": device, "s": "kwh", "f": "v", "from": "yesterday", "to": to, "b": 60}),
        json!({"d": device, "s": "kwh", "f": "v", "from": from, "to": to, "b": 1.5}),
        json!({"d": device, "s": "kwh", "f": "v", "from": from, "to": to, "b": 1e12}),
    ] {
        let response = app.gql(Some(&admin), TELEMETRY, variables).await;
        assert_eq!(
            response.error_code(),
            "BAD_USER_INPUT",
            "{:?}",
            response.body
        );
    }
    let variables = json!({"d": device, "s": "kwh", "f": "v", "from": from, "to": to, "b": 60});
    let response = app.gql(None, TELEMETRY, variables).await;
    assert_eq!(response.error_code(), "UNAUTHENTICATED");

    // Unknown devices and other members' devices look the same: NOT_FOUND.
    let unknown = uuid::Uuid::new_v4().to_string();
    let unknown = Series {
        device: &unknown,
        ..series
    };
    let response = unknown.telemetry("kwh", "v", span, 60).await;
    assert_eq!(response.error_code(), "NOT_FOUND");
    let member = app.create_member("mallory").await;
    let snooping = Series {
        token: &member,
        ..series
    };
    let response = snooping.telemetry("kwh", "v", span, 60).await;
    assert_eq!(response.error_code(), "NOT_FOUND");
    let own = app.register_device(&member, "meter").await;
    let own = Series {
        device: &own,
        ..snooping
    };
    own.publish("kwh", Some(2.0), json!({"v": 40})).await;
    let mine = own.buckets("kwh", "v", span, 60).await;
    assert_eq!(mine[0]["sum"], json!(40.0), "a member reads its own device");

    // None of it changed anything but the member's one event.
    assert_eq!(app.event_count(&admin).await, stored + 1);
    let admins = series.buckets("kwh", "v", span, 60).await;
    assert_eq!(admins[0]["sum"], json!(2.0));
}

/// A chart's recipe (DESIGN, Dashboard): take the newest event id, read
/// `telemetry(asOf:)` and subscribe with `after:` that id. Events published
/// before the cut count in the buckets only; events after it arrive on the
/// subscription only, including those published between the two requests.
async fn as_of_splits_history_from_the_live_tail_with_no_seam(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let device = app.register_device(&admin, "meter-1").await;
    let series = Series {
        app: &app,
        token: &admin,
        device: &device,
    };
    for value in [1, 2, 3] {
        series
            .publish("power", Some(f64::from(value)), json!({"w": value}))
            .await;
    }
    let response = app
        .gql(
            Some(&admin),
            "{ events(first: 1) { nodes { id } } }",
            json!({}),
        )
        .await;
    let cut = response.data()["events"]["nodes"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    // Published after the cut, before the chart reads its history.
    series.publish("power", Some(4.0), json!({"w": 4})).await;

    let span = (t(0.0), t(60.0));
    let query = "query($d: ID!, $from: DateTime!, $to: DateTime!, $asOf: ID) {
        telemetry(deviceId: $d, service: \"power\", field: \"w\", from: $from, to: $to,
                  bucketSeconds: 60, asOf: $asOf) { count sum }
    }";
    let buckets = |as_of: Value| {
        let variables = json!({
            "d": device, "from": rfc3339(span.0), "to": rfc3339(span.1), "asOf": as_of,
        });
        let app = &app;
        let admin = &admin;
        async move {
            let response = app.gql(Some(admin), query, variables).await;
            count_and_sum(&response.data()["telemetry"][0])
        }
    };
    assert_eq!(buckets(json!(cut)).await, (json!(3), json!(6.0)));
    assert_eq!(buckets(Value::Null).await, (json!(4), json!(10.0)));
    assert_eq!(buckets(json!("0")).await, (json!(0), Value::Null));

    let client = app.ws_client(&admin, None).await.expect("a socket");
    let mut tail = client
        .subscribe(Op::new(
            "subscription($d: ID!, $after: ID) { events(filter: {deviceIds: [$d]}, after: $after) { payload } }",
            json!({"d": device, "after": cut}),
        ))
        .await
        .expect("subscribed");
    assert_eq!(
        next_item(&mut tail).await["data"]["events"]["payload"],
        json!({"w": 4})
    );
    series.publish("power", Some(5.0), json!({"w": 5})).await;
    assert_eq!(
        next_item(&mut tail).await["data"]["events"]["payload"],
        json!({"w": 5})
    );
    let nothing_more =
        tokio::time::timeout(std::time::Duration::from_millis(300), tail.next()).await;
    assert!(
        nothing_more.is_err(),
        "an event came twice: {nothing_more:?}"
    );

    let refused = app
        .gql(
            Some(&admin),
            query,
            json!({"d": device, "from": rfc3339(span.0), "to": rfc3339(span.1), "asOf": "-1"}),
        )
        .await;
    assert_eq!(refused.error_code(), "BAD_USER_INPUT");
}
