//! The bounded queue between the sampling loop and the uploader, so that a slow or absent server costs memory up
//! to a fixed bound and never stalls sampling.
//!
//! Bounded by encoded bytes (what the memory really is) and by age (a window hours late is worth less than the
//! memory). When a new window does not fit, the oldest are dropped: recent profiles matter more, and the newest
//! window is the one most likely to show what is going on now. The oldest of the service holding the most bytes
//! goes first, so that a service whose processes flood the queue (many windows, crash after crash) loses its own
//! history rather than the other services' windows. The window being sent is never evicted under the
//! sender's feet: it counts toward the bound, and leaves when delivered, rejected or too old.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::protocol::Request;

/// One service's window, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct Upload {
    pub service: String,
    pub request: Request,
}

impl Upload {
    fn bytes(&self) -> usize {
        self.request.body.len()
    }
}

struct Entry {
    id: u64,
    upload: Upload,
    enqueued: Instant,
}

pub(crate) struct Queue {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
    max_age: Duration,
    /// The entry the uploader is sending or retrying.
    in_flight: Option<u64>,
    next_id: u64,
    /// Windows dropped because the queue was full or they grew too old.
    dropped: u64,
}

impl Queue {
    pub(crate) fn new(max_bytes: usize, max_age: Duration) -> Self {
        Self { entries: VecDeque::new(), bytes: 0, max_bytes, max_age, in_flight: None, next_id: 0, dropped: 0 }
    }

    /// Adds a window, dropping expired windows and then the oldest ones until it fits; a window larger than the
    /// whole bound is dropped itself. Returns how many windows were dropped.
    pub(crate) fn push(&mut self, upload: Upload, now: Instant) -> usize {
        let before = self.dropped;
        self.expire(now);
        if upload.bytes() > self.max_bytes {
            self.dropped += 1;
            return (self.dropped - before) as usize;
        }
        while self.bytes + upload.bytes() > self.max_bytes {
            let Some(index) = self.eviction_candidate(&upload) else { break };
            self.remove_at(index);
            self.dropped += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += upload.bytes();
        self.entries.push_back(Entry { id, upload, enqueued: now });
        (self.dropped - before) as usize
    }

    /// The oldest window, marked as being sent (windows too old are dropped first); `None` when empty or while
    /// another window is in flight.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(u64, Upload)> {
        if self.in_flight.is_some() {
            return None;
        }
        self.expire(now);
        let entry = self.entries.front()?;
        self.in_flight = Some(entry.id);
        Some((entry.id, entry.upload.clone()))
    }

    /// The window was delivered, or refused for good: it leaves the queue.
    pub(crate) fn finish(&mut self, id: u64) {
        if self.in_flight == Some(id) {
            self.in_flight = None;
        }
        if let Some(index) = self.entries.iter().position(|e| e.id == id) {
            self.remove_at(index);
        }
    }

    /// The attempt failed: true if the window stays for another attempt, false if it was dropped as too old.
    pub(crate) fn retry(&mut self, id: u64, now: Instant) -> bool {
        let Some(index) = self.entries.iter().position(|e| e.id == id) else {
            self.in_flight = None;
            return false;
        };
        if now.duration_since(self.entries[index].enqueued) > self.max_age {
            self.in_flight = None;
            self.remove_at(index);
            self.dropped += 1;
            return false;
        }
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded bytes held, the window in flight included.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The window to drop for room: the oldest of the service that holds the most bytes (the new window
    /// counted), so that one service's flood of windows costs its own history, not the other services'; when
    /// that is the new window alone, the oldest window.
    fn eviction_candidate(&self, incoming: &Upload) -> Option<usize> {
        let evictable = |e: &Entry| Some(e.id) != self.in_flight;
        let mut held: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for entry in self.entries.iter().filter(|e| evictable(e)) {
            *held.entry(entry.upload.service.as_str()).or_default() += entry.upload.bytes();
        }
        *held.entry(incoming.service.as_str()).or_default() += incoming.bytes();
        let most = held.values().copied().max()?;
        self.entries
            .iter()
            .position(|e| evictable(e) && held.get(e.upload.service.as_str()) == Some(&most))
            .or_else(|| self.entries.iter().position(evictable))
    }

    /// Drops queued windows older than the age bound, except the one in flight (its sender checks it).
    fn expire(&mut self, now: Instant) {
        while let Some(index) = self
            .entries
            .iter()
            .position(|e| Some(e.id) != self.in_flight && now.duration_since(e.enqueued) > self.max_age)
        {
            self.remove_at(index);
            self.dropped += 1;
        }
    }

    fn remove_at(&mut self, index: usize) {
        if let Some(entry) = self.entries.remove(index) {
            self.bytes -= entry.upload.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn upload(service: &str, bytes: usize) -> Upload {
        Upload {
            service: service.into(),
            request: Request {
                url: "https://example.com/push".parse().unwrap(),
                content_type: "application/proto".into(),
                body: Bytes::from(vec![0u8; bytes]),
            },
        }
    }

    fn services(queue: &Queue) -> Vec<&str> {
        queue.entries.iter().map(|e| e.upload.service.as_str()).collect()
    }

    #[test]
    fn full_queue_drops_the_oldest_windows_and_counts_them() {
        let now = Instant::now();
        let mut queue = Queue::new(100, Duration::from_secs(60));
        assert_eq!(queue.push(upload("a", 40), now), 0);
        assert_eq!(queue.push(upload("b", 40), now), 0);
        assert_eq!(queue.bytes(), 80);
        assert_eq!(queue.push(upload("c", 40), now), 1);
        assert_eq!(services(&queue), ["b", "c"]);
        // Needs both older windows gone.
        assert_eq!(queue.push(upload("d", 90), now), 2);
        assert_eq!(services(&queue), ["d"]);
        assert_eq!((queue.bytes(), queue.dropped()), (90, 3));
        // Larger than the bound: dropped itself, the queue is untouched.
        assert_eq!(queue.push(upload("huge", 101), now), 1);
        assert_eq!(services(&queue), ["d"]);
        assert_eq!(queue.dropped(), 4);
    }

    #[test]
    fn a_flooding_service_drops_its_own_windows_not_the_others() {
        let now = Instant::now();
        let mut queue = Queue::new(100, Duration::from_secs(60));
        queue.push(upload("quiet", 20), now);
        for _ in 0..20 {
            queue.push(upload("noisy", 20), now);
        }
        assert_eq!(services(&queue), ["quiet", "noisy", "noisy", "noisy", "noisy"]);
        assert_eq!(queue.dropped(), 16);
    }

    #[test]
    fn the_window_in_flight_is_never_evicted_but_counts() {
        let now = Instant::now();
        let mut queue = Queue::new(100, Duration::from_secs(60));
        queue.push(upload("a", 60), now);
        let (id, sent) = queue.next(now).unwrap();
        assert_eq!(sent.service, "a");
        assert!(queue.next(now).is_none(), "one window in flight at a time");
        queue.push(upload("b", 30), now);
        assert_eq!(queue.push(upload("c", 30), now), 1);
        assert_eq!(services(&queue), ["a", "c"]);
        assert_eq!(queue.bytes(), 90);
        queue.finish(id);
        assert_eq!(services(&queue), ["c"]);
        assert_eq!(queue.next(now).unwrap().1.service, "c");
    }

    #[test]
    fn windows_expire_by_age_including_the_one_being_retried() {
        let start = Instant::now();
        let mut queue = Queue::new(1000, Duration::from_secs(10));
        queue.push(upload("a", 1), start);
        queue.push(upload("b", 1), start + Duration::from_secs(5));
        let (id, _) = queue.next(start).unwrap();
        assert!(queue.retry(id, start + Duration::from_secs(9)));
        // Too old: the retried window goes, and so does nothing else yet.
        assert!(!queue.retry(id, start + Duration::from_secs(11)));
        assert_eq!(services(&queue), ["b"]);
        assert_eq!(queue.dropped(), 1);
        // `next` drops what expired while waiting.
        assert!(queue.next(start + Duration::from_secs(16)).is_none());
        assert!(queue.is_empty());
        assert_eq!((queue.dropped(), queue.bytes()), (2, 0));
    }

    #[test]
    fn finish_and_retry_deliver_each_window_once_in_order() {
        let now = Instant::now();
        let mut queue = Queue::new(1000, Duration::from_secs(60));
        for name in ["a", "b", "c"] {
            queue.push(upload(name, 10), now);
        }
        let mut delivered = Vec::new();
        let mut failures = 2;
        while let Some((id, upload)) = queue.next(now) {
            loop {
                if failures > 0 {
                    failures -= 1;
                    assert!(queue.retry(id, now));
                    continue;
                }
                delivered.push(upload.service.clone());
                queue.finish(id);
                break;
            }
        }
        assert_eq!(delivered, ["a", "b", "c"]);
        assert_eq!((queue.len(), queue.bytes(), queue.dropped()), (0, 0, 0));
    }
}
