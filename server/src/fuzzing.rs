//! Entry points for the fuzz targets in `fuzz/`: each feeds client bytes
//! to the function the server itself runs on them. Not part of the API.

use crate::config::{Config, Limits};

/// A `POST /graphql` body, as the HTTP handler reads it: nesting scan,
/// JSON, the request object, a persisted query's hash, then admission
/// (size, nesting, parse, cost).
pub fn http_body(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok(request) = crate::http::request_from_body(bytes, &limits) {
        admit(request, &limits);
    }
}

/// A `GET /graphql` query string, read as the HTTP handler reads it, then
/// as a body is.
pub fn http_query_string(text: &str) {
    let limits = Limits::default();
    if let Ok(request) = crate::http::request_from_query_string(text, &limits) {
        admit(request, &limits);
    }
}

/// What both transports do with a request before running it, with one
/// persisted-query cache for the whole fuzzing run (so hashes registered by
/// one input are found by later ones), as small as a real one is large.
/// A publishing mutation is compiled, trusted (as if async-graphql had run
/// it) and its variables read as the compiled path reads them.
fn admit(mut request: async_graphql::Request, limits: &Limits) {
    use crate::graphql::{live::Publish, persisted::PersistedQueries};
    static CACHE: std::sync::OnceLock<PersistedQueries> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| PersistedQueries::new(64 * 1024));
    let publish = match cache.admit(&mut request, limits) {
        Ok(Some(trusted)) => trusted,
        Ok(None) => match Publish::compile_request(&mut request) {
            Some(publish) => {
                let publish = std::sync::Arc::new(publish);
                cache.trust(&request.query, publish.clone());
                publish
            }
            None => return,
        },
        Err(_) => return,
    };
    let _ = publish.prepare(&request.variables, &administrator(), limits);
}

/// A caller who may publish anything.
fn administrator() -> crate::graphql::RequestContext {
    use crate::{
        auth::{Credential, Principal},
        store::entity::{Permission, Role},
    };
    let mut context =
        crate::graphql::RequestContext::anonymous(std::net::Ipv4Addr::LOCALHOST.into());
    context.principal = Some(Principal {
        user_id: uuid::Uuid::nil(),
        username: "fuzz".into(),
        role: Role::Admin,
        permission: Permission::Admin,
        credential: Credential::Session,
        expires_at: None,
        epoch: 0,
    });
    context
}

/// A GraphQL document and variables, through admission.
pub fn document(query: &str, variables: &str) {
    let mut request = async_graphql::Request::new(query);
    if let Ok(variables) = serde_json::from_str::<serde_json::Value>(variables) {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    let _ = crate::graphql::admission::admit(&mut request, &Limits::default());
}

/// A WebSocket text message, as the socket decodes it; an operation then
/// goes through admission and, a publish, the compiled path's reading.
pub fn websocket_message(text: &str) {
    let limits = Limits::default();
    if let Some(request) = crate::http::decode_ws_message(text, &limits) {
        admit(request, &limits);
    }
}

/// A JSON payload, as `publishEvent` checks it.
pub fn json_payload(bytes: &[u8]) {
    let limits = Limits::default();
    if crate::graphql::admission::scan_json(bytes, limits.json_depth).is_err() {
        return;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = crate::graphql::check_json("payload", &value, &limits);
    }
}

/// A `telemetry` field path.
pub fn telemetry_field(field: &str) {
    crate::graphql::check_telemetry_field(field);
}

/// A `ferrite.toml`, parsed and validated.
pub fn config(text: &str) {
    let _ = Config::from_toml_str(text);
}
