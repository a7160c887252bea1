//! The HTTP surface: GraphQL over HTTP and WebSocket on `/graphql`,
//! GraphiQL, health, metrics.
//!
//! `/graphql` follows the GraphQL-over-HTTP spec: POST with an
//! `application/json` body, or GET with `query`, `variables`,
//! `operationName` and `extensions` in the query string (queries only; a
//! mutation over GET is refused with 405). Either may carry a persisted
//! query's hash instead of the query (`graphql::persisted`). Responses are `application/json` unless the client
//! accepts `application/graphql-response+json`, in which case a request that
//! does not parse or validate is answered with 400. A browser's GET without a
//! query gets GraphiQL.
//!
//! The same URL upgrades to a WebSocket speaking `graphql-transport-ws` or
//! the legacy `graphql-ws` (see `ws`).
//!
//! Errors that happen before GraphQL runs (unreadable body, bad token) are
//! answered in the same shape as GraphQL errors, with `extensions.code`.

use std::{net::SocketAddr, sync::Arc};

use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{
        ConnectInfo, RawQuery, State, WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection,
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::{
    AppState,
    auth::AuthError,
    config::Limits,
    graphql::{
        FerriteSchema, RequestContext, admission, error::ApiError, live,
        persisted::PersistedQueries,
    },
    store::entity::Role,
};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The accept loop: connection caps, header timeouts, bounded shutdown.
pub mod serve;
/// Dashboard sign-in with the refresh token in an HttpOnly cookie.
mod session;
/// HTTPS and WSS on the listener, with certificate reloads.
pub mod tls;
/// GraphQL over WebSocket.
mod ws;

/// What the handlers and sockets read. One allocation shared by every
/// request and socket: a clone per request or socket copies a pointer, not
/// the application's state (a heap profile of idle sockets showed the copy
/// in each socket's task).
#[derive(Clone)]
struct HttpState(Arc<HttpShared>);

impl std::ops::Deref for HttpState {
    type Target = HttpShared;

    fn deref(&self) -> &HttpShared {
        &self.0
    }
}

struct HttpShared {
    app: AppState,
    schema: FerriteSchema,
    /// Turns true when the server starts shutting down: sockets close.
    shutdown: watch::Receiver<bool>,
    /// Held by every open socket; the server waits until all are dropped.
    open_sockets: mpsc::Sender<()>,
    /// Compiled `events` subscriptions, shared by identical selections.
    plans: live::Plans,
    /// Automatic persisted queries, by hash.
    persisted: PersistedQueries,
    /// The built pages (`web/`): the dashboard, and GraphiQL for `/graphql`.
    pages: Router,
}

/// What the router needs to stop WebSocket connections on shutdown: hyper's
/// graceful shutdown does not track upgraded connections.
pub struct SocketShutdown {
    pub shutdown: watch::Receiver<bool>,
    pub open_sockets: mpsc::Sender<()>,
}

/// The router of every HTTP endpoint. Serve it with [`serve::serve`], which
/// gives each request the client's address (login throttling needs it).
pub fn router(app: AppState, schema: FerriteSchema, sockets: SocketShutdown) -> Router {
    let pages = dashboard();
    // Compressed (brotli or gzip, as the client's Accept-Encoding asks)
    // above 1 KB: a page of 500 events shrinks about tenfold, which is
    // what a mobile app on a metered link pays for.
    let graphql = get(graphql_get).post(graphql_post).layer(
        tower_http::compression::CompressionLayer::new()
            .no_deflate()
            .compress_when(tower_http::compression::predicate::SizeAbove::new(1024)),
    );
    let graphql = match cors(&app.config.http.cors_origins) {
        Some(cors) => graphql.layer(cors),
        None => graphql,
    };
    Router::new()
        .route("/graphql", graphql)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/auth/login", post(session::login))
        .route("/auth/refresh", post(session::refresh))
        .route("/auth/logout", post(session::logout))
        .fallback_service(pages.clone())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(HttpState(Arc::new(HttpShared {
            persisted: PersistedQueries::new(app.config.limits.persisted_queries_bytes),
            app,
            schema,
            shutdown: sockets.shutdown,
            open_sockets: sockets.open_sockets,
            plans: live::Plans::default(),
            pages,
        })))
}

/// CORS for `/graphql` when `http.cors_origins` names origins: preflights
/// answered for the methods and headers GraphQL clients send (Apollo's
/// and urql's included), cached by browsers for an hour. No credentials:
/// `/graphql` authenticates with the Authorization header, never cookies.
/// Not on `/auth/*`, whose cookie is for the dashboard's own origin.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Checked by `Config::validate`; one that still does not parse is
        // left out rather than allowing more.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("apollo-require-preflight"),
                HeaderName::from_static("x-apollo-operation-name"),
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// Whether a WebSocket upgrade may open: without `http.cors_origins`, or
/// without an `Origin` (gateways, scripts), always; else only from a
/// listed origin or the server's own (the dashboard). A page on another
/// site cannot open a socket in its visitors' name.
fn socket_origin_allowed(headers: &HeaderMap, origins: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if origins.is_empty()
        || origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((host, origin_host), (Some(host), Some(from)) if host.eq_ignore_ascii_case(from))
}

/// The dashboard (`web/`, built by `build.rs`): `index.html` for `/` and
/// every client-side route, hashed assets cached for a year (their names
/// change with their content), `index.html` revalidated every time so a new
/// release is picked up at once; brotli or gzip as the browser accepts.
/// Built once: memory-serve leaks what it serves, by design.
fn dashboard() -> Router {
    memory_serve::load!()
        .index_file(Some("/index.html"))
        .fallback(Some("/index.html"))
        .fallback_status(StatusCode::OK)
        .html_cache_control(memory_serve::CacheControl::NoCache)
        .cache_control(memory_serve::CacheControl::Long)
        // Off by default in debug builds; on, so the tests see what users get.
        .enable_brotli(true)
        .enable_gzip(true)
        .into_router()
        .layer(axum::middleware::from_fn(pages_only))
}

/// The dashboard answers a browser's page loads only: an unknown path asked
/// with another method, or as a WebSocket upgrade (a gateway with a wrong
/// URL), is a 404 it can report, not the dashboard's HTML.
async fn pages_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let page_load = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !request.headers().contains_key(header::UPGRADE);
    if !page_load {
        return StatusCode::NOT_FOUND.into_response();
    }
    next.run(request).await
}

/// The policy of every page this server sends: scripts, styles and
/// connections from this origin only (no inline script, nothing from a CDN),
/// never framed, no referrer leaves it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// GraphiQL's: the same, but its components set inline styles and its
/// stylesheet embeds fonts as `data:` URLs. Scripts stay this origin's only.
const GRAPHIQL_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// GraphiQL for a browser's `GET /graphql`: `web/graphiql.html`, built into
/// the binary with the dashboard (nothing from a CDN), served with the
/// dashboard's caching and compression and its own policy.
async fn graphiql(state: &HttpState, headers: HeaderMap) -> Response {
    let mut request = axum::http::Request::new(Body::empty());
    *request.uri_mut() = axum::http::Uri::from_static("/graphiql.html");
    *request.headers_mut() = headers;
    let Ok(mut page) = state.pages.clone().oneshot(request).await;
    page.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(GRAPHIQL_CONTENT_SECURITY_POLICY),
    );
    page
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the database answers too.
async fn readyz(State(state): State<HttpState>) -> Response {
    match state.app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

/// Prometheus / OpenMetrics text. It counts every tenant's traffic, so it
/// needs an ADMIN user's access token or API key, unless `metrics.public`
/// opens it (a scraper on a private network). Errors are JSON in the shape
/// of GraphQL's, like every error of this server.
async fn metrics(
    State(state): State<HttpState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !state.app.config.metrics.public {
        let context = match request_context(&state.app, &headers, client, Format::Json).await {
            Ok(context) => context,
            Err(refused) => return refused,
        };
        match context.principal {
            None => {
                return error_response(
                    Format::Json,
                    StatusCode::UNAUTHORIZED,
                    ApiError::Unauthenticated("send `Authorization: Bearer <token>` with an ADMIN user's access token or API key".into()),
                );
            }
            Some(principal) if principal.role != Role::Admin => {
                return error_response(
                    Format::Json,
                    StatusCode::FORBIDDEN,
                    ApiError::Forbidden(
                        "metrics cover every tenant: they are for ADMIN users".into(),
                    ),
                );
            }
            Some(_) => {}
        }
    }
    match state.app.metrics.render(&state.app.store).await {
        Ok(text) => {
            let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

/// Which media type the client wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `application/json`: status 200 for anything GraphQL answered.
    Json,
    /// `application/graphql-response+json`: 4xx for request errors.
    GraphqlResponse,
}

impl Format {
    fn of(headers: &HeaderMap) -> Format {
        let accepts = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(GRAPHQL_RESPONSE_JSON));
        if accepts {
            Format::GraphqlResponse
        } else {
            Format::Json
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::Json => "application/json",
            Format::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
        })
    }
}

/// An error response in GraphQL's shape.
fn error_response(format: Format, status: StatusCode, error: ApiError) -> Response {
    let body = json!({ "errors": [{ "message": error.message(), "extensions": { "code": error.code() } }] });
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, format.content_type());
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Authenticates the `Authorization` header, if any.
async fn request_context(
    app: &AppState,
    headers: &HeaderMap,
    client: SocketAddr,
    format: Format,
) -> Result<RequestContext, Response> {
    let mut context = RequestContext::anonymous(client.ip());
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(context);
    };
    let unauthorized = |message: &str| {
        error_response(
            format,
            StatusCode::UNAUTHORIZED,
            ApiError::Unauthenticated(message.into()),
        )
    };
    let token = value
        .to_str()
        .ok()
        .and_then(crate::auth::bearer_token)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    match app.auth.authenticate(token).await {
        Ok(principal) => {
            context.principal = Some(principal);
            Ok(context)
        }
        Err(AuthError::Unauthenticated(message)) => Err(unauthorized(message)),
        Err(err) => {
            tracing::error!(error = %err, "authentication failed");
            Err(error_response(
                format,
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiError::Internal,
            ))
        }
    }
}

/// Why a response could not be rendered.
enum Rendered {
    /// It would be larger than this many bytes.
    TooLarge(usize),
    Failed(serde_json::Error),
}

/// Serialises `value` as JSON, giving up as soon as it passes `limit`
/// bytes: an over-large response is never held whole as text.
fn to_json_within<T: serde::Serialize>(value: &T, limit: usize) -> Result<String, Rendered> {
    struct Bounded {
        text: Vec<u8>,
        limit: usize,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.text.len() + bytes.len() > self.limit {
                return Err(std::io::Error::other("over the response limit"));
            }
            self.text.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Bounded {
        text: Vec::new(),
        limit,
    };
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => Ok(String::from_utf8(out.text).expect("BUG: serde_json writes UTF-8")),
        Err(err) if err.is_io() => Err(Rendered::TooLarge(limit)),
        Err(err) => Err(Rendered::Failed(err)),
    }
}

fn too_large_message(limit: usize) -> String {
    format!(
        "the response would be larger than {limit} bytes (limits.response_bytes); \
         ask for fewer fields or smaller pages"
    )
}

/// [`too_large_message`] as a GraphQL error with its code, for a response
/// that is already under way (a subscription message).
fn too_large_error(limit: usize) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(too_large_message(limit), None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", "BAD_USER_INPUT");
    error
}

/// Whether a response is a "request error" in the spec's terms: errors
/// raised before execution (parse, validation) carry no path and leave no
/// data. Over HTTP it gets 400 (for graphql-response+json); on a socket,
/// an `error` message and no `complete`.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// Runs a request and encodes the response.
async fn execute(
    state: &HttpState,
    request: async_graphql::Request,
    context: RequestContext,
    format: Format,
) -> Response {
    let response = state.schema.execute(request.data(context)).await;
    if is_request_error(&response) {
        return request_error_response(format, &response.errors);
    }
    let body = match to_json_within(&response, state.app.config.limits.response_bytes) {
        Ok(body) => body,
        Err(Rendered::TooLarge(limit)) => {
            return error_response(
                format,
                StatusCode::OK,
                ApiError::bad_input(too_large_message(limit)),
            );
        }
        Err(Rendered::Failed(err)) => {
            tracing::error!(error = %err, "encoding a GraphQL response failed");
            return error_response(
                format,
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiError::Internal,
            );
        }
    };
    let mut http = body.into_response();
    http.headers_mut()
        .insert(header::CONTENT_TYPE, format.content_type());
    http
}

async fn graphql_post(
    State(state): State<HttpState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = Format::of(&headers);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json")
        && !content_type.starts_with(GRAPHQL_RESPONSE_JSON)
    {
        return error_response(
            format,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::bad_input("POST /graphql needs `Content-Type: application/json`"),
        );
    }
    let limit = state.app.config.limits.body_bytes;
    let body_timeout = std::time::Duration::from_secs(state.app.config.http.body_timeout_seconds);
    let read = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, limit)).await;
    let Ok(read) = read else {
        return error_response(
            format,
            StatusCode::REQUEST_TIMEOUT,
            ApiError::bad_input(format!(
                "the request body did not arrive within {} s",
                body_timeout.as_secs()
            )),
        );
    };
    let bytes: Bytes = match read {
        Ok(bytes) => bytes,
        Err(err) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                error_response(
                    format,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ApiError::bad_input(format!("the request body is larger than {limit} bytes")),
                )
            } else {
                error_response(
                    format,
                    StatusCode::BAD_REQUEST,
                    ApiError::bad_input("the request body could not be read"),
                )
            };
        }
    };
    let mut request = match request_from_body(&bytes, &state.app.config.limits) {
        Ok(request) => request,
        Err(BodyError::NoQuery) => return missing_query(format),
        Err(BodyError::Malformed(err)) => {
            return error_response(
                format,
                StatusCode::BAD_REQUEST,
                ApiError::bad_input(format!(
                    "the request body is not a GraphQL request \
                     (a JSON object with `query`, and optionally `variables` and `operationName`): {err}"
                )),
            );
        }
    };
    if let Some(refused) = refusal(&state, &mut request, format) {
        return refused;
    }
    let context = match request_context(&state.app, &headers, client, format).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    execute(&state, request, context, format).await
}

/// Fills in a persisted query from its hash (see `graphql::persisted`),
/// then checks the document's size, nesting and cost before anything else
/// looks into it (see `graphql::admission`), and remembers a query sent
/// with its hash once it passed. A refusal is answered as a request error.
fn refusal(
    state: &HttpState,
    request: &mut async_graphql::Request,
    format: Format,
) -> Option<Response> {
    let error = state
        .persisted
        .admit(request, &state.app.config.limits)
        .err()?;
    Some(request_error_response(format, &[error]))
}

/// A request that did not parse, validate or pass admission: its errors,
/// with 400 for `application/graphql-response+json` and 200 for
/// `application/json`, as the GraphQL-over-HTTP spec has it.
fn request_error_response(format: Format, errors: &[async_graphql::ServerError]) -> Response {
    let status = match format {
        Format::GraphqlResponse => StatusCode::BAD_REQUEST,
        Format::Json => StatusCode::OK,
    };
    let mut response = (status, json!({ "errors": errors }).to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, format.content_type());
    response
}

/// Why a POST body is not a GraphQL request.
pub enum BodyError {
    /// Not a JSON object of GraphQL's request shape (or nested too deep).
    Malformed(String),
    /// A request without a query.
    NoQuery,
}

/// Reads a `POST /graphql` body: its nesting is scanned before serde_json
/// builds anything, then it must be one JSON object (serde would also read
/// a struct from an array; batches are not supported) with a query, or
/// with a persisted query's hash in its place.
pub fn request_from_body(
    bytes: &[u8],
    limits: &Limits,
) -> Result<async_graphql::Request, BodyError> {
    admission::scan_json(bytes, limits.json_depth + admission::JSON_ENVELOPE_DEPTH)
        .map_err(BodyError::Malformed)?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BodyError::Malformed("expected a JSON object".to_owned()));
    }
    let request = serde_json::from_slice::<async_graphql::Request>(bytes)
        .map_err(|err| BodyError::Malformed(err.to_string()))?;
    if !has_query(&request) {
        return Err(BodyError::NoQuery);
    }
    Ok(request)
}

/// A query, or the hash of a persisted one.
fn has_query(request: &async_graphql::Request) -> bool {
    !request.query.trim().is_empty() || request.extensions.contains_key("persistedQuery")
}

/// Reads a `GET /graphql` query string: `query`, `operationName`, and
/// `variables` and `extensions` as JSON, whose nesting is scanned before
/// serde_json builds anything (as a POST body's is).
pub fn request_from_query_string(
    query_string: &str,
    limits: &Limits,
) -> Result<async_graphql::Request, BodyError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Params {
        #[serde(default)]
        query: String,
        operation_name: Option<String>,
        variables: Option<String>,
        extensions: Option<String>,
    }
    let params: Params = serde_urlencoded::from_str(query_string)
        .map_err(|err| BodyError::Malformed(err.to_string()))?;
    let json = |name: &str, text: Option<String>| -> Result<serde_json::Value, BodyError> {
        let Some(text) = text else {
            return Ok(serde_json::Value::Null);
        };
        admission::scan_json(
            text.as_bytes(),
            limits.json_depth + admission::JSON_ENVELOPE_DEPTH,
        )
        .and_then(|()| serde_json::from_str(&text).map_err(|err| err.to_string()))
        .map_err(|err| BodyError::Malformed(format!("`{name}` is not JSON: {err}")))
    };
    let mut request = async_graphql::Request::new(params.query);
    request.operation_name = params.operation_name;
    let variables = json("variables", params.variables)?;
    if !variables.is_null() {
        request.variables = async_graphql::Variables::from_json(variables);
    }
    if let serde_json::Value::Object(extensions) = json("extensions", params.extensions)? {
        for (name, value) in extensions {
            let value = async_graphql::Value::from_json(value)
                .map_err(|err| BodyError::Malformed(format!("`extensions`: {err}")))?;
            request.extensions.insert(name, value);
        }
    }
    if !has_query(&request) {
        return Err(BodyError::NoQuery);
    }
    Ok(request)
}

/// Decodes a WebSocket text message as a socket does (for the fuzzer).
#[doc(hidden)]
pub fn decode_ws_message(text: &str, limits: &Limits) {
    ws::decode(text, limits);
}

fn missing_query(format: Format) -> Response {
    error_response(
        format,
        StatusCode::BAD_REQUEST,
        ApiError::bad_input("the request has no `query`"),
    )
}

async fn graphql_get(
    State(state): State<HttpState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Ok(upgrade) = upgrade {
        if !socket_origin_allowed(&headers, &state.app.config.http.cors_origins) {
            return (
                StatusCode::FORBIDDEN,
                "this origin may not open a WebSocket here (http.cors_origins)",
            )
                .into_response();
        }
        return ws::upgrade(upgrade, state, client, &headers);
    }
    let format = Format::of(&headers);
    let query = query.unwrap_or_default();
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if query.is_empty() && wants_html {
        return graphiql(&state, headers).await;
    }
    let mut request = match request_from_query_string(&query, &state.app.config.limits) {
        Ok(request) => request,
        Err(BodyError::NoQuery) => return missing_query(format),
        Err(BodyError::Malformed(err)) => {
            return error_response(
                format,
                StatusCode::BAD_REQUEST,
                ApiError::bad_input(format!("the query string is not a GraphQL request: {err}")),
            );
        }
    };
    if let Some(refused) = refusal(&state, &mut request, format) {
        return refused;
    }
    if is_mutation(&mut request) {
        let mut response = error_response(
            format,
            StatusCode::METHOD_NOT_ALLOWED,
            ApiError::bad_input("mutations must be sent with POST"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let context = match request_context(&state.app, &headers, client, format).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    execute(&state, request, context, format).await
}

/// Whether the operation a request would run is a mutation. A query that
/// does not parse is not one; execution reports its syntax error.
fn is_mutation(request: &mut async_graphql::Request) -> bool {
    let operation_name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    match &document.operations {
        DocumentOperations::Single(op) => op.node.ty == OperationType::Mutation,
        DocumentOperations::Multiple(ops) => ops.iter().any(|(name, op)| {
            operation_name
                .as_deref()
                .is_none_or(|wanted| wanted == name.as_str())
                && op.node.ty == OperationType::Mutation
        }),
    }
}
