//! Introspection that agrees with `schema.graphql`.
//!
//! async-graphql answers `__schema { description }` with the description
//! of the `__Schema` meta-type itself ("A GraphQL Schema defines the
//! capabilities of a GraphQL server…"), so a client that prints the
//! introspected schema (GraphiQL, GraphQL Code Generator, `get-graphql-schema`)
//! gains a schema description the SDL does not have. The schema has none:
//! this extension answers null there, and leaves every other field alone.
//! The end-to-end check is `web/e2e/schema.test.mjs`, which compares what
//! graphql-js builds from the live introspection with `schema.graphql`.

use std::sync::Arc;

use async_graphql::{
    ServerResult, Value,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo},
};

/// `__schema { description }` is null: the schema has no description.
pub struct NoSchemaDescription;

impl ExtensionFactory for NoSchemaDescription {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NoSchemaDescription)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for NoSchemaDescription {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.parent_type == "__Schema" && info.name == "description" {
            return Ok(Some(Value::Null));
        }
        next.run(ctx, info).await
    }
}
