//! The error codes clients see, and how every lower-layer error maps to one.
//!
//! Each error carries `extensions.code`, one of DESIGN.md's codes. Internal
//! failures are logged once here with their cause chain and shown to the
//! client only as "internal error".

use std::sync::Arc;

use async_graphql::{
    ErrorExtensions, Response, ServerError, Value,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe},
    futures_util::stream::{BoxStream, StreamExt},
};

use crate::{auth::AuthError, service::AccountError, store::StoreError};

/// An error a resolver returns.
///
/// Deliberately not `Display`: async-graphql converts any `Display` error into
/// its own error type without a code, and that conversion must not be
/// reachable by accident. `From<ApiError>` below is the only way out.
#[derive(Debug, Clone)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    BadInput(String),
    Conflict(String),
    RateLimited {
        message: String,
        retry_after_seconds: u64,
    },
    /// The gap signal of the events subscription: retention deleted events
    /// the client asked to resume from.
    EventsPruned {
        pruned_through: i64,
    },
    /// An automatic persisted query's hash this node does not know: the
    /// client sends the query again with its hash (Apollo's protocol, whose
    /// clients look for this exact message).
    PersistedQueryNotFound,
    Internal,
}

impl ApiError {
    /// What the client reads.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Unauthenticated(msg)
            | ApiError::Forbidden(msg)
            | ApiError::NotFound(msg)
            | ApiError::BadInput(msg)
            | ApiError::Conflict(msg)
            | ApiError::RateLimited { message: msg, .. } => msg,
            ApiError::EventsPruned { .. } => {
                "events after `after` were deleted by retention; resuming with the oldest event still stored"
            }
            ApiError::PersistedQueryNotFound => "PersistedQueryNotFound",
            ApiError::Internal => "internal error",
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::BadInput(_) => "BAD_USER_INPUT",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::EventsPruned { .. } => "EVENTS_PRUNED",
            ApiError::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            ApiError::Internal => "INTERNAL",
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError::BadInput(message.into())
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// Logs an internal error with its cause chain and hides it.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "internal error");
        ApiError::Internal
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("record"),
            StoreError::Conflict(msg) => ApiError::Conflict(msg.to_owned()),
            StoreError::Forbidden(msg) => ApiError::Forbidden(msg.to_owned()),
            StoreError::Database(_) => ApiError::internal(&err),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::Invalid(msg) => ApiError::bad_input(msg),
            AccountError::Forbidden(msg) => ApiError::Forbidden(msg),
            AccountError::Auth(err) => err.into(),
            AccountError::Store(err) => err.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Unauthenticated(msg) => ApiError::Unauthenticated(msg.to_owned()),
            AuthError::Forbidden(msg) => ApiError::Forbidden(msg.to_owned()),
            AuthError::RateLimited {
                retry_after_seconds,
            } => ApiError::RateLimited {
                message: err.to_string(),
                retry_after_seconds,
            },
            AuthError::Store(store) => store.into(),
            AuthError::Unavailable | AuthError::Internal(_) => ApiError::internal(&err),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        async_graphql::Error::new(err.message()).extend_with(|_, ext| {
            ext.set("code", err.code());
            match &err {
                ApiError::RateLimited {
                    retry_after_seconds,
                    ..
                } => ext.set("retryAfterSeconds", *retry_after_seconds),
                ApiError::EventsPruned { pruned_through } => {
                    ext.set("prunedThrough", pruned_through.to_string())
                }
                _ => {}
            }
        })
    }
}

/// The result type of every resolver.
pub type ApiResult<T> = Result<T, ApiError>;

/// Fills in `extensions.code` on errors async-graphql raises itself (a
/// query that does not parse or validate, an argument of the wrong type):
/// they are all the client's input, so `BAD_USER_INPUT`.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn with_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        add_code(error);
    }
    response
}

pub(super) fn add_code(error: &mut ServerError) {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|ext| ext.get("code").is_some());
    if !has_code {
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", Value::from("BAD_USER_INPUT"));
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        with_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(with_codes).boxed()
    }
}

/// Names the missing thing in a store's "not found".
pub trait OrNotFound<T> {
    fn or_not_found(self, what: &str) -> ApiResult<T>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, what: &str) -> ApiResult<T> {
        self.map_err(|err| match err {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        })
    }
}

impl<T> OrNotFound<T> for Result<T, AccountError> {
    fn or_not_found(self, what: &str) -> ApiResult<T> {
        self.map_err(|err| match err {
            AccountError::Store(StoreError::NotFound) => ApiError::not_found(what),
            other => other.into(),
        })
    }
}
