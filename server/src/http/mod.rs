//! The HTTP surface: GraphQL over HTTP and WebSocket on `/graphql`,
//! GraphiQL, health, metrics.
//!
//! `/graphql` follows the GraphQL-over-HTTP spec (see `graphql`): POST, or
//! GET for queries. A browser's GET without a query gets GraphiQL.
//!
//! The same URL upgrades to a WebSocket speaking `graphql-transport-ws` or
//! the legacy `graphql-ws` (see `ws`).
//!
//! Errors that happen before GraphQL runs (unreadable body, bad token) are
//! answered in the same shape as GraphQL errors, with `extensions.code`.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::{
    AppState,
    graphql::{FerriteSchema, error::ApiError, live, persisted::PersistedQueries},
    store::entity::Role,
};

/// GraphQL over HTTP: POST and GET, limits, response formats.
mod graphql;
/// The accept loop: connection caps, header timeouts, bounded shutdown.
pub mod serve;
/// Dashboard sign-in with the refresh token in an HttpOnly cookie.
mod session;
/// HTTPS and WSS on the listener, with certificate reloads.
pub mod tls;
/// GraphQL over WebSocket.
mod ws;

use graphql::{
    Format, Rendered, error_response, graphql_get, graphql_post, is_request_error, request_context,
    to_json_within, too_large_error,
};
pub use graphql::{decode_ws_message, request_from_body, request_from_query_string};

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
