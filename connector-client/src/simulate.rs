//! The simulated gateway of `ferrite-connector run`: devices from the
//! configuration file that publish, follow each other and answer commands,
//! so anyone can watch the platform work without hardware.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{
    Command, Connector, Error, Event, EventFilter,
    config::{DeviceKind, SimulatedDevice},
};

/// Runs the devices until `shutdown` resolves or the session fails for
/// good (returned as the error).
pub async fn run(
    connector: Connector,
    devices: Vec<SimulatedDevice>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    for device in &devices {
        match connector.register(device.spec()).await {
            Ok(registered) => tracing::info!(
                device = %device.id,
                id = %registered.id,
                status = ?registered.status,
                "registered"
            ),
            // Offline: the session registers it as soon as it connects.
            Err(Error::Timeout(_)) => tracing::warn!(
                device = %device.id,
                "not registered yet (server unreachable); will be on connect"
            ),
            Err(error) => return Err(error),
        }
    }
    // Relay states, shared by the command loop and the relays' reports.
    let relays: Arc<Mutex<HashMap<String, bool>>> = Arc::new(Mutex::new(
        devices
            .iter()
            .filter(|device| device.kind == DeviceKind::Relay)
            .map(|device| (device.id.clone(), false))
            .collect(),
    ));
    let kinds: HashMap<String, DeviceKind> = devices
        .iter()
        .map(|device| (device.id.clone(), device.kind))
        .collect();

    let mut tasks = JoinSet::new();
    for device in devices {
        let connector = connector.clone();
        match device.kind {
            DeviceKind::Thermometer => {
                tasks.spawn(thermometer(connector, device));
            }
            DeviceKind::Switch => {
                tasks.spawn(switch(connector, device));
            }
            DeviceKind::Lamp => {
                tasks.spawn(lamp(connector, device));
            }
            DeviceKind::Relay => {}
        }
    }
    let commands = connector.commands().await?;
    tasks.spawn(answer_commands(connector.clone(), commands, kinds, relays));

    let outcome = tokio::select! {
        // Ctrl-C / SIGTERM.
        _ = shutdown => Ok(()),
        // Refused for good (e.g. a revoked key).
        error = connector.closed() => Err(error),
    };
    tasks.abort_all();
    outcome
}

/// A uniform number in [0, 1).
fn random() -> f64 {
    getrandom::u32().unwrap_or(0) as f64 / (u32::MAX as f64 + 1.0)
}

/// Queues one event; a full outbox or a stopped connector is logged.
async fn report(connector: &Connector, device: &str, service: &str, payload: Value) {
    let event = Event::new(device, service, payload);
    if let Err(error) = connector.queue(vec![event]).await {
        tracing::warn!(%error, device, service, "event not queued");
    }
}

async fn thermometer(connector: Connector, device: SimulatedDevice) {
    let mut celsius = 18.0 + 6.0 * random();
    let mut tick = tokio::time::interval(device.interval());
    loop {
        tick.tick().await;
        celsius = (celsius + (random() - 0.5) * 0.6).clamp(-30.0, 60.0);
        let rounded = (celsius * 100.0).round() / 100.0;
        tracing::debug!(device = %device.id, rounded, "temperature");
        report(
            &connector,
            &device.id,
            "temperature",
            json!({"celsius": rounded}),
        )
        .await;
    }
}

async fn switch(connector: Connector, device: SimulatedDevice) {
    let mut on = false;
    let mut tick = tokio::time::interval(device.interval());
    loop {
        tick.tick().await;
        on = !on;
        tracing::debug!(device = %device.id, on, "toggled");
        report(&connector, &device.id, "state", json!({"on": on})).await;
    }
}

/// Follows a switch through an event subscription: the platform, not the
/// gateway, tells the lamp what the switch did.
async fn lamp(connector: Connector, device: SimulatedDevice) {
    let switch = device
        .follows
        .clone()
        .expect("BUG: the configuration checks that a lamp follows a switch");
    // The switch's platform id is known once it is registered.
    let switch_id = loop {
        if let Some(id) = connector.platform_id(&switch).await {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let filter = EventFilter::new()
        .device_ids([switch_id])
        .services(["state"]);
    let mut events = match connector.subscribe_events(filter, None).await {
        Ok(events) => events,
        Err(error) => {
            tracing::error!(%error, device = %device.id, "cannot follow the switch");
            return;
        }
    };
    let mut on = None;
    while let Some(event) = events.recv().await {
        let Ok(event) = event else { continue };
        let Some(switch_on) = event.payload.get("on").and_then(Value::as_bool) else {
            continue;
        };
        if on != Some(switch_on) {
            on = Some(switch_on);
            tracing::info!(device = %device.id, on = switch_on, "following {switch}");
            let state = json!({"on": switch_on, "following": event.id});
            report(&connector, &device.id, "state", state).await;
        }
    }
}

async fn answer_commands(
    connector: Connector,
    mut commands: crate::Commands,
    kinds: HashMap<String, DeviceKind>,
    relays: Arc<Mutex<HashMap<String, bool>>>,
) {
    while let Some(command) = commands.recv().await {
        let outcome = execute(&command, kinds.get(&command.device).copied(), &relays);
        tracing::info!(
            command = %command.id,
            device = %command.device,
            service = %command.service,
            ok = outcome.is_ok(),
            "command"
        );
        let state = outcome.as_ref().ok().cloned();
        if let Err(error) = connector.respond(&command.id, outcome).await {
            tracing::warn!(%error, command = %command.id, "answer not confirmed");
        }
        if let Some(state) = state.filter(|_| command.service == "set") {
            report(&connector, &command.device, "state", state).await;
        }
    }
}

/// What a simulated device does with a command: `Ok(result)` or
/// `Err(reason)`.
fn execute(
    command: &Command,
    kind: Option<DeviceKind>,
    relays: &Mutex<HashMap<String, bool>>,
) -> Result<Value, Value> {
    match kind {
        Some(DeviceKind::Relay) => {}
        Some(kind) => return Err(json!({"error": format!("a {kind:?} takes no commands")})),
        None => return Err(json!({"error": "unknown device"})),
    }
    let mut relays = relays
        .lock()
        .expect("BUG: the relay lock is never poisoned");
    let state = relays.entry(command.device.clone()).or_default();
    match command.service.as_str() {
        "set" => match command.payload.get("on").and_then(Value::as_bool) {
            Some(on) => {
                *state = on;
                Ok(json!({"on": on}))
            }
            None => Err(json!({"error": "set needs a payload like {\"on\": true}"})),
        },
        "get" => Ok(json!({"on": *state})),
        other => Err(json!({"error": format!("unknown service {other:?}; try set or get")})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(service: &str, payload: Value) -> Command {
        Command {
            id: "c".into(),
            device_id: "id".into(),
            device: "pump".into(),
            service: service.into(),
            payload,
            expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_relay_answers_set_and_get_and_refuses_the_rest() {
        let relays = Mutex::new(HashMap::new());
        let relay = Some(DeviceKind::Relay);
        assert_eq!(
            execute(&command("set", json!({"on": true})), relay, &relays),
            Ok(json!({"on": true}))
        );
        assert_eq!(
            execute(&command("get", Value::Null), relay, &relays),
            Ok(json!({"on": true}))
        );
        assert!(execute(&command("set", json!("on")), relay, &relays).is_err());
        assert!(execute(&command("explode", Value::Null), relay, &relays).is_err());
        assert!(
            execute(
                &command("set", json!({"on": true})),
                Some(DeviceKind::Switch),
                &relays
            )
            .is_err()
        );
        assert!(execute(&command("set", json!({"on": true})), None, &relays).is_err());
    }
}
