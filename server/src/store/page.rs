//! Keyset pagination for Relay connections.
//!
//! Every list is ordered by a unique, immutable key (an event's integer id, a
//! device's or command's UUIDv7), so a cursor is just a key and a page is a
//! range query on an index: no OFFSET, and rows added while a client pages do
//! not shift what it sees.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Value, sea_query::ExprTrait,
};

use super::StoreError;

/// Which slice of a list to return, in Relay terms. Forward (`first`/`after`)
/// walks the list in its natural order; backward (`last`/`before`) walks it from
/// the other end.
#[derive(Debug, Clone)]
pub struct PageArgs<K> {
    pub first: Option<u64>,
    pub after: Option<K>,
    pub last: Option<u64>,
    pub before: Option<K>,
}

/// One page of a list, in the list's natural order.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_previous_page: bool,
    pub has_next_page: bool,
}

/// The natural order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// Fetches one page of `query`, ordered by the unique `key` column.
///
/// `default_size` applies when neither `first` nor `last` is given.
pub async fn fetch_page<E, C, K, D>(
    db: &D,
    query: Select<E>,
    key: C,
    order: Order,
    args: PageArgs<K>,
    default_size: u64,
) -> Result<Page<E::Model>, StoreError>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ColumnTrait,
    K: Into<Value> + Clone,
    D: ConnectionTrait,
{
    // Comparisons in the list's natural direction: `ahead(k)` selects rows
    // that come after key k, `behind(k)` rows that come before it.
    let ahead = |k: K| match order {
        Order::Ascending => key.gt(k),
        Order::Descending => key.lt(k),
    };
    let behind = |k: K| match order {
        Order::Ascending => key.lt(k),
        Order::Descending => key.gt(k),
    };
    let (natural, reverse) = match order {
        Order::Ascending => (sea_orm::Order::Asc, sea_orm::Order::Desc),
        Order::Descending => (sea_orm::Order::Desc, sea_orm::Order::Asc),
    };

    let mut window = query.clone();
    if let Some(after) = args.after.clone() {
        window = window.filter(ahead(after));
    }
    if let Some(before) = args.before.clone() {
        window = window.filter(behind(before));
    }

    let backward = args.last.is_some() && args.first.is_none();
    let size = if backward { args.last } else { args.first }.unwrap_or(default_size);

    let mut rows = window
        .order_by(key, if backward { reverse } else { natural })
        .limit(size + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);

    // Whether anything lies beyond a boundary cursor, outside the window.
    let exists = |condition| {
        let query = query.clone().filter(condition);
        async move { Ok::<_, StoreError>(query.limit(1).count(db).await? > 0) }
    };

    if backward {
        rows.reverse();
        let has_next_page = match args.before {
            Some(before) => exists(sea_orm::Condition::all().add(behind(before).not())).await?,
            None => false,
        };
        Ok(Page {
            items: rows,
            has_previous_page: more,
            has_next_page,
        })
    } else {
        let has_previous_page = match args.after {
            Some(after) => exists(sea_orm::Condition::all().add(ahead(after).not())).await?,
            None => false,
        };
        Ok(Page {
            items: rows,
            has_previous_page,
            has_next_page: more,
        })
    }
}
