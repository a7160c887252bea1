//! The live device changes one subscriber sees, lossless: the ring while
//! it keeps up; after it lagged, every device it may see (as UPDATED) and
//! every one deleted since it was last in step (as DELETED, from the
//! store's tombstones), then the ring again. The `deviceChanged`
//! subscription serves this stream.

use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{Bus, DeviceChange, DeviceChangeKind, device_matches};
use crate::store::{self, Scope, Store, StoreError};

/// Rows read per query while a lagging subscriber resyncs.
const RESYNC_PAGE: u64 = 500;

/// How far back, before the moment a subscriber was last in step, a resync
/// looks for deletions: covers the clocks of several nodes disagreeing.
const DELETION_MARGIN: chrono::Duration = chrono::Duration::seconds(10);

/// The live device changes a subscriber with `scope` and `filter` sees.
pub fn device_changes(
    store: Store,
    bus: Bus,
    scope: Scope,
    filter: store::DeviceFilter,
) -> impl Stream<Item = Result<Arc<DeviceChange>, StoreError>> + Send + 'static {
    async_stream::try_stream! {
        let mut ring = bus.subscribe_devices();
        // Every change committed before this moment has been delivered
        // (give or take `DELETION_MARGIN`).
        let mut in_step_at = store::now();
        loop {
            match ring.recv().await {
                Ok(change) => {
                    in_step_at = store::now();
                    if device_matches(scope, &filter, &change.device) {
                        yield change;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let resync_at = store::now();
                    let mut after = None;
                    loop {
                        // Boxed, as below: an idle subscription should not
                        // keep room for a store query (kilobytes) in its state.
                        let page = Box::pin(store
                            .list_devices(scope, &filter, store::PageArgs { first: Some(RESYNC_PAGE), after, last: None, before: None }, RESYNC_PAGE))
                            .await?;
                        after = page.items.last().map(|d| d.id);
                        for device in page.items {
                            yield Arc::new(DeviceChange::new(DeviceChangeKind::Updated, device));
                        }
                        if !page.has_next_page {
                            break;
                        }
                    }
                    let mut after = 0;
                    loop {
                        let page = Box::pin(store
                            .deleted_devices_since(scope, in_step_at - DELETION_MARGIN, after, RESYNC_PAGE))
                            .await?;
                        let full = page.len() as u64 == RESYNC_PAGE;
                        for (id, device) in page {
                            after = id;
                            if device_matches(scope, &filter, &device) {
                                yield Arc::new(DeviceChange::new(DeviceChangeKind::Deleted, device));
                            }
                        }
                        if !full {
                            break;
                        }
                    }
                    in_step_at = resync_at;
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;
    use crate::store::{
        DeviceRegistration,
        entity::{Role, device},
    };

    async fn register(store: &Store, owner: uuid::Uuid, external_id: &str) -> device::Model {
        store
            .register_device(owner, DeviceRegistration::of(external_id))
            .await
            .unwrap()
            .0
    }

    /// A subscriber whose ring overflowed gets the devices that remain as
    /// UPDATED and the ones deleted meanwhile as DELETED (real SQLite).
    #[tokio::test]
    async fn a_lagging_subscriber_is_told_about_deletions_it_missed() {
        let (_dir, store) = Store::temporary().await;
        let owner = store
            .create_user("owner", "x".into(), Role::Member)
            .await
            .unwrap()
            .id;
        let other = store
            .create_user("other", "x".into(), Role::Member)
            .await
            .unwrap()
            .id;
        let kept = register(&store, owner, "kept").await;
        let doomed = register(&store, owner, "doomed").await;
        let foreign = register(&store, other, "foreign").await;
        let bus = Bus::new(2, Default::default());
        let mut changes = Box::pin(device_changes(
            store.clone(),
            bus.clone(),
            Scope::Owner(owner),
            store::DeviceFilter::default(),
        ));
        // The first poll joins the ring.
        assert!(changes.next().now_or_never().is_none());

        store
            .delete_device(doomed.id, Scope::Owner(owner))
            .await
            .unwrap();
        store
            .delete_device(foreign.id, Scope::Owner(other))
            .await
            .unwrap();
        // Five changes into a ring of two: the subscriber lags.
        for _ in 0..5 {
            bus.publish_device(DeviceChangeKind::Updated, kept.clone());
        }

        let mut seen = Vec::new();
        for _ in 0..2 {
            let change = changes.next().await.unwrap().unwrap();
            seen.push((change.kind, change.device.external_id.clone()));
        }
        assert_eq!(
            seen,
            [
                (DeviceChangeKind::Updated, "kept".to_owned()),
                (DeviceChangeKind::Deleted, "doomed".to_owned()),
            ]
        );
        // Then live again: the ring's newest messages, nothing of `other`'s.
        let next = changes.next().await.unwrap().unwrap();
        assert_eq!(
            (next.kind, next.device.id),
            (DeviceChangeKind::Updated, kept.id)
        );

        // Tombstones are forgotten after their time.
        assert_eq!(
            store
                .prune_device_tombstones(store::now() + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            2
        );
    }
}
