//! Dashboard sessions: `login`, `refresh` and `logout` with the refresh
//! token kept in a cookie that page script cannot read.
//!
//! The GraphQL mutations hand the refresh token to the caller, which suits
//! programs. A browser page that held it in script would lose the whole
//! session to one XSS, so the dashboard signs in here instead:
//!
//! - `POST /auth/login` `{"username", "password"}` → the access token, its
//!   expiry and the user as JSON; the refresh token as the cookie
//!   `ferrite_refresh` (`HttpOnly; SameSite=Strict; Path=/auth`, `Secure`
//!   when the request came over HTTPS, directly or through a proxy saying
//!   `X-Forwarded-Proto: https`).
//! - `POST /auth/refresh` → rotates the cookie and answers new tokens like
//!   login; 204 without a body when the request has no session cookie. Each refresh token works once (a replay revokes the session),
//!   so the dashboard refreshes once for all its tabs (a Web Lock).
//! - `POST /auth/logout` → revokes the session and clears the cookie.
//!
//! These call the same [`crate::auth::Auth`] functions as the mutations:
//! the same login throttle, metrics and rotation rules.
//!
//! CSRF: the cookie is `SameSite=Strict` and scoped to `/auth`, so no other
//! site's page makes the browser send it, and it never rides along on
//! `/graphql` requests (those authenticate with the in-memory access
//! token). On top, every request here must carry `Ferrite-Session: 1` and
//! `Content-Type: application/json` — neither can be sent cross-origin
//! without a CORS preflight, which this server never grants for `/auth` —
//! and an `Origin` header, when present, must name this host.

use std::net::SocketAddr;

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde_json::json;

use super::{Format, HttpState, error_response};
use crate::{
    auth::{AuthError, SessionTokens},
    graphql::error::ApiError,
    store::entity::Role,
};

/// The refresh token's cookie.
pub const REFRESH_COOKIE: &str = "ferrite_refresh";
/// The header every session request carries (see the CSRF notes above).
pub const SESSION_HEADER: &str = "ferrite-session";
/// The login body is two short strings; anything larger is refused unread.
const BODY_LIMIT: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<HttpState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = cross_site_refusal(&headers) {
        return refused;
    }
    let bytes = match read_body(&state, body).await {
        Ok(bytes) => bytes,
        Err(refused) => return *refused,
    };
    let Ok(LoginBody { username, password }) = serde_json::from_slice(&bytes) else {
        return bad_request("send {\"username\": \"…\", \"password\": \"…\"}");
    };
    let outcome = state
        .app
        .auth
        .login(client.ip(), &username, &password)
        .await;
    answer(&state, &headers, outcome)
}

pub async fn refresh(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = cross_site_refusal(&headers) {
        return refused;
    }
    let Some(token) = refresh_cookie(&headers) else {
        // Nothing to refresh is not an error: a page opened before any
        // sign-in asks, and learns it must sign in.
        return StatusCode::NO_CONTENT.into_response();
    };
    let outcome = state.app.auth.refresh(&token).await;
    answer(&state, &headers, outcome)
}

pub async fn logout(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = cross_site_refusal(&headers) {
        return refused;
    }
    let ended = match refresh_cookie(&headers) {
        Some(token) => match state.app.auth.logout(&token).await {
            Ok(ended) => ended,
            Err(err) => return auth_error(&headers, err),
        },
        None => false,
    };
    let mut response = json_response(StatusCode::OK, json!({ "signedOut": ended }));
    set_cookie(&mut response, removal(&headers));
    response
}

/// The checks every session request passes before anything is read.
fn cross_site_refusal(headers: &HeaderMap) -> Option<Response> {
    let marked = headers
        .get(SESSION_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !marked || !json {
        return Some(error_response(
            Format::Json,
            StatusCode::BAD_REQUEST,
            ApiError::bad_input(
                "session requests need `Ferrite-Session: 1` and `Content-Type: application/json`",
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, host)| host.as_bytes());
        if host.is_none() || origin_host != host {
            return Some(error_response(
                Format::Json,
                StatusCode::FORBIDDEN,
                ApiError::Forbidden(
                    "session requests are accepted from this server's own pages only".into(),
                ),
            ));
        }
    }
    None
}

async fn read_body(state: &HttpState, body: Body) -> Result<Bytes, Box<Response>> {
    let timeout = std::time::Duration::from_secs(state.app.config.http.body_timeout_seconds);
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(Box::new(bad_request(&format!(
            "the body could not be read or is larger than {BODY_LIMIT} bytes"
        )))),
        Err(_) => Err(Box::new(error_response(
            Format::Json,
            StatusCode::REQUEST_TIMEOUT,
            ApiError::bad_input("the request body did not arrive in time"),
        ))),
    }
}

/// New tokens: the access token in the body, the refresh token in the
/// cookie. A failure clears the cookie when it is the session's fault.
fn answer(
    state: &HttpState,
    headers: &HeaderMap,
    outcome: Result<SessionTokens, AuthError>,
) -> Response {
    let tokens = match outcome {
        Ok(tokens) => tokens,
        Err(err) => return auth_error(headers, err),
    };
    let body = json!({
        "accessToken": tokens.access_token,
        "expiresAt": tokens.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "user": {
            "id": tokens.user.id.to_string(),
            "username": tokens.user.username,
            "role": match tokens.user.role {
                Role::Admin => "ADMIN",
                Role::Member => "MEMBER",
            },
        },
    });
    let mut response = json_response(StatusCode::OK, body);
    let max_age = state.app.config.refresh_token_ttl_seconds;
    let cookie = base(headers, tokens.refresh_token)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .build();
    set_cookie(&mut response, cookie);
    response
}

fn auth_error(headers: &HeaderMap, err: AuthError) -> Response {
    let api = ApiError::from(err);
    let status = match &api {
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::BadInput(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut error = json!({ "message": api.message(), "extensions": { "code": api.code() } });
    if let ApiError::RateLimited {
        retry_after_seconds,
        ..
    } = &api
    {
        error["extensions"]["retryAfterSeconds"] = json!(retry_after_seconds);
    }
    let mut response = json_response(status, json!({ "errors": [error] }));
    if status == StatusCode::UNAUTHORIZED {
        // The session is over (expired, replayed, revoked): forget it.
        set_cookie(&mut response, removal(headers));
    }
    response
}

fn bad_request(message: &str) -> Response {
    error_response(
        Format::Json,
        StatusCode::BAD_REQUEST,
        ApiError::bad_input(message),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Tokens: never kept by a cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The refresh token from the request's cookies, if any.
fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == REFRESH_COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether the browser reached this server over HTTPS.
fn over_https(headers: &HeaderMap) -> bool {
    // Only ever adds `Secure`: a client lying about it loses its own cookie.
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn base(headers: &HeaderMap, value: String) -> cookie::CookieBuilder<'static> {
    Cookie::build((REFRESH_COOKIE, value))
        .path("/auth")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_https(headers))
}

fn removal(headers: &HeaderMap) -> Cookie<'static> {
    let mut cookie = base(headers, String::new()).build();
    cookie.make_removal();
    cookie
}

fn set_cookie(response: &mut Response, cookie: Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
