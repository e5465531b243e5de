//! The bounded buffer of an out-bridge: messages wait here until the remote acknowledges them
//! (PUBACK), so nothing accepted locally is lost while the remote is down — up to
//! `maxMessages` / `maxAge`, beyond which the oldest messages are dropped and counted. Pure: the
//! clock is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One message waiting for the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Position in the buffer's sequence (increasing, never reused).
    pub seq: u64,
    /// Remote (mapped) topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS towards the remote (0 or 1).
    pub qos: u8,
    /// Retain flag towards the remote.
    pub retain: bool,
    /// When it entered the buffer.
    pub at: Instant,
}

/// Messages in arrival order with the limits.
#[derive(Debug)]
pub struct Buffer {
    items: VecDeque<Item>,
    next_seq: u64,
    max_messages: usize,
    max_age: Duration,
}

impl Buffer {
    /// An empty buffer.
    pub fn new(max_messages: u64, max_age: Duration) -> Self {
        Self {
            items: VecDeque::new(),
            next_seq: 0,
            max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX).max(1),
            max_age,
        }
    }

    /// New limits; returns how many messages the tighter limits dropped.
    pub fn set_limits(&mut self, max_messages: u64, max_age: Duration, now: Instant) -> u64 {
        self.max_messages = usize::try_from(max_messages).unwrap_or(usize::MAX).max(1);
        self.max_age = max_age;
        let mut dropped = self.expire(now);
        while self.items.len() > self.max_messages {
            self.items.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Appends a message; when full, the oldest is dropped first. Returns how many were dropped.
    pub fn push(
        &mut self,
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
        now: Instant,
    ) -> u64 {
        let mut dropped = self.expire(now);
        while self.items.len() >= self.max_messages {
            self.items.pop_front();
            dropped += 1;
        }
        self.items.push_back(Item {
            seq: self.next_seq,
            topic,
            payload,
            qos,
            retain,
            at: now,
        });
        self.next_seq += 1;
        dropped
    }

    /// Drops messages older than the age limit; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        while self
            .items
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.at) > self.max_age)
        {
            self.items.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Removes the message `seq` (acknowledged by the remote). `false` when it is no longer
    /// buffered (dropped meanwhile).
    pub fn remove(&mut self, seq: u64) -> bool {
        match self.items.binary_search_by_key(&seq, |i| i.seq) {
            Ok(at) => {
                self.items.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The first buffered message with a sequence number ≥ `seq`.
    pub fn first_from(&self, seq: u64) -> Option<&Item> {
        let at = self.items.partition_point(|i| i.seq < seq);
        self.items.get(at)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The capacity.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(b: &mut Buffer, n: u64, now: Instant) -> u64 {
        (0..n)
            .map(|i| b.push(format!("t/{i}"), Bytes::new(), 1, false, now))
            .sum()
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts() {
        let now = Instant::now();
        let mut b = Buffer::new(3, Duration::from_secs(60));
        assert_eq!(push(&mut b, 5, now), 2);
        assert_eq!(b.len(), 3);
        assert_eq!(b.first_from(0).unwrap().topic, "t/2");
    }

    #[test]
    fn acks_remove_by_sequence_and_resend_starts_anywhere() {
        let now = Instant::now();
        let mut b = Buffer::new(10, Duration::from_secs(60));
        push(&mut b, 4, now);
        assert!(b.remove(1));
        assert!(!b.remove(1));
        assert_eq!(b.first_from(1).unwrap().seq, 2);
        assert_eq!(b.first_from(0).unwrap().seq, 0);
        assert!(b.first_from(4).is_none());
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn old_messages_expire_and_count() {
        let t0 = Instant::now();
        let mut b = Buffer::new(10, Duration::from_secs(5));
        push(&mut b, 2, t0);
        assert_eq!(b.expire(t0 + Duration::from_secs(5)), 0);
        assert_eq!(
            b.push(
                "x".into(),
                Bytes::new(),
                1,
                false,
                t0 + Duration::from_secs(6)
            ),
            2
        );
        assert_eq!(b.len(), 1);
        assert_eq!(
            b.set_limits(10, Duration::from_secs(1), t0 + Duration::from_secs(8)),
            1
        );
        assert!(b.is_empty());
    }
}
