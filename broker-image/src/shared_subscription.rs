//! MQTT 5 shared subscriptions (`$share/<group>/<filter>`): rmqtt 0.24 ships the mechanism but
//! leaves it off (`is_supported() == false`) unless a strategy is installed. Ours is round-robin
//! over the group's online members, falling back to an offline member (whose session queues).

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};

/// Round-robin shared-subscription strategy.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

/// One candidate member as rmqtt presents it.
type Member = (
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
);

#[async_trait]
impl SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher_id: &Id,
        _topic: &TopicName,
        members: &[Member],
    ) -> Option<(usize, IsOnline)> {
        if members.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let online = |i: usize| members[i].4.unwrap_or(true);
        (0..members.len())
            .map(|k| (start + k) % members.len())
            .find(|&i| online(i))
            .map(|i| (i, true))
            .or(Some((start % members.len(), false)))
    }
}
