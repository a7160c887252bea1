//! Relay connections: one page of a list, with a cursor per item.
//!
//! async-graphql's own `Connection` type carries no description, so a
//! client reading the schema would meet `DeviceConnection` unexplained.
//! This one has the same fields in the same order (`pageInfo`, `edges`,
//! `nodes`, `totalCount`) and reuses async-graphql's `Edge` and `PageInfo`.

use std::borrow::Cow;

use async_graphql::{
    Object, OutputType, TypeName,
    connection::{Edge, EmptyFields, PageInfo},
};

use super::{
    input::{CursorKind, encode_cursor},
    totals::TotalCount,
};
use crate::store::Page;

/// A page of `N`, named `{N}Connection` in the schema.
pub struct Connection<N: OutputType> {
    edges: Vec<Edge<String, N, EmptyFields>>,
    has_previous_page: bool,
    has_next_page: bool,
    total: TotalCount,
}

/// One page of a list: its items (`nodes`, or `edges` with a cursor
/// each), whether there is more before or after it (`pageInfo`), and, when
/// asked for, how many items match in all (`totalCount`). Ask for the next
/// page with `after: pageInfo.endCursor`.
#[Object(name_type)]
impl<N: OutputType> Connection<N> {
    /// Whether there are items before and after this page, and the
    /// cursors to ask for them.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_previous_page: self.has_previous_page,
            has_next_page: self.has_next_page,
            start_cursor: self.edges.first().map(|edge| edge.cursor.clone()),
            end_cursor: self.edges.last().map(|edge| edge.cursor.clone()),
        }
    }

    /// The page's items, each with its cursor.
    async fn edges(&self) -> &[Edge<String, N, EmptyFields>] {
        &self.edges
    }

    /// The page's items, without cursors.
    async fn nodes(&self) -> Vec<&N> {
        self.edges.iter().map(|edge| &edge.node).collect()
    }

    #[graphql(flatten)]
    async fn total(&self) -> &TotalCount {
        &self.total
    }
}

impl<N: OutputType> TypeName for Connection<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Connection", N::type_name()).into()
    }
}

/// Turns a store page into a Relay connection.
pub fn connection<M, N: OutputType>(
    page: Page<M>,
    kind: CursorKind,
    key: impl Fn(&M) -> String,
    node: impl Fn(M) -> N,
    total: TotalCount,
) -> Connection<N> {
    let edges = page
        .items
        .into_iter()
        .map(|item| Edge::new(encode_cursor(kind, key(&item)), node(item)))
        .collect();
    Connection {
        edges,
        has_previous_page: page.has_previous_page,
        has_next_page: page.has_next_page,
        total,
    }
}
