//! GraphQL over HTTP on `/graphql` (the GraphQL-over-HTTP spec): POST
//! with an `application/json` body, or GET with `query`, `variables`,
//! `operationName` and `extensions` in the query string (queries only; a
//! mutation over GET is refused with 405). Either may carry a persisted
//! query's hash instead of the query (`graphql::persisted`).
//!
//! Every request is bounded before it is parsed (body size, JSON nesting,
//! then the document's admission in `graphql::admission`) and its answer
//! before it is sent (`limits.max_response_bytes`). Responses are
//! `application/json` unless the client accepts
//! `application/graphql-response+json`, in which case a request that does
//! not parse or validate is answered with 400.

use std::{net::SocketAddr, sync::Arc};

use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::{
    body::{Body, Bytes},
    extract::{
        ConnectInfo, RawQuery, State, WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection,
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{HttpState, graphiql, socket_origin_allowed, ws};
use crate::{
    AppState,
    auth::AuthError,
    config::Limits,
    graphql::{RequestContext, admission, error::ApiError, live},
};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// Which media type the client wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
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
pub(super) fn error_response(format: Format, status: StatusCode, error: ApiError) -> Response {
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
pub(super) async fn request_context(
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
pub(super) enum Rendered {
    /// It would be larger than this many bytes.
    TooLarge(usize),
    Failed(serde_json::Error),
}

/// Serialises `value` as JSON, giving up as soon as it passes `limit`
/// bytes: an over-large response is never held whole as text.
pub(super) fn to_json_within<T: serde::Serialize>(
    value: &T,
    limit: usize,
) -> Result<String, Rendered> {
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
pub(super) fn too_large_error(limit: usize) -> async_graphql::ServerError {
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
pub(super) fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// Runs a request and encodes the response.
async fn execute(
    state: &HttpState,
    mut request: async_graphql::Request,
    context: RequestContext,
    format: Format,
) -> Response {
    // A publish the compiled path could run once trusted (see
    // `graphql::live::publish`): trusted if it parses and validates.
    let candidate = live::Publish::compile_request(&mut request)
        .map(|publish| (request.query.clone(), Arc::new(publish)));
    let response = state.schema.execute(request.data(context)).await;
    if is_request_error(&response) {
        return request_error_response(format, &response.errors);
    }
    if let Some((text, publish)) = candidate {
        state.persisted.trust(&text, publish);
    }
    encode(state, &response, format)
}

/// A response async-graphql executed, as JSON within the response limit.
fn encode(state: &HttpState, response: &async_graphql::Response, format: Format) -> Response {
    let body = match to_json_within(response, state.app.config.limits.response_bytes) {
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
    with_content_type(body.into_response(), format)
}

fn with_content_type(mut http: Response, format: Format) -> Response {
    http.headers_mut()
        .insert(header::CONTENT_TYPE, format.content_type());
    http
}

pub(super) async fn graphql_post(
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
    // A persisted query's hash is resolved, and the document's size,
    // nesting and cost checked, before anything else looks into it (see
    // `graphql::persisted`). A publish async-graphql has run before comes
    // back compiled.
    let trusted = match state
        .persisted
        .admit(&mut request, &state.app.config.limits)
    {
        Ok(trusted) => trusted,
        Err(refused) => return request_error_response(format, &[refused]),
    };
    let context = match request_context(&state.app, &headers, client, format).await {
        Ok(context) => context,
        Err(response) => return response,
    };
    if let Some(publish) = trusted {
        let limits = &state.app.config.limits;
        if let Some(prepared) = publish.prepare(&request.variables, &context, limits) {
            return publish_compiled(&state, &publish, prepared, format).await;
        }
    }
    execute(&state, request, context, format).await
}

/// Runs a trusted publish on the compiled path (`graphql::live::publish`),
/// answered as [`execute`] answers it.
async fn publish_compiled(
    state: &HttpState,
    publish: &live::Publish,
    prepared: live::Prepared,
    format: Format,
) -> Response {
    let limit = state.app.config.limits.response_bytes;
    match publish.run(prepared, &state.app).await {
        Ok(body) if body.len() <= limit => with_content_type(body.into_response(), format),
        Ok(_) => error_response(
            format,
            StatusCode::OK,
            ApiError::bad_input(too_large_message(limit)),
        ),
        Err(response) => encode(state, &response, format),
    }
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
pub fn decode_ws_message(text: &str, limits: &Limits) -> Option<async_graphql::Request> {
    ws::decode(text, limits)
}

fn missing_query(format: Format) -> Response {
    error_response(
        format,
        StatusCode::BAD_REQUEST,
        ApiError::bad_input("the request has no `query`"),
    )
}

pub(super) async fn graphql_get(
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
    // A persisted query's hash is resolved, and the document's size,
    // nesting and cost checked, before anything else looks into it.
    if let Err(refused) = state
        .persisted
        .admit(&mut request, &state.app.config.limits)
    {
        return request_error_response(format, &[refused]);
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
