//! The stages of this node's own cluster writes, timed by the cluster thread: waiting
//! to be sent, totem's delivery back to the writer, and the majority's confirmation.
//! Pure bookkeeping over instants the caller passes in; the core says which requests a
//! message carries (`Node::requests_in`), so nothing here depends on how it batches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Requests and messages tracked at most; beyond it tracking starts over (the figures
/// skip what was in flight then), so a core that never answered cannot grow it.
const MAX_TRACKED: usize = 65_536;

/// How long one answered write spent in each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    /// From the request to its answer.
    pub total: Duration,
    /// Request to multicast, multicast to own delivery, delivery to answer; `None`
    /// for a write answered without its message being timed (refused before it was
    /// sent, or sent before tracking started over).
    pub split: Option<(Duration, Duration, Duration)>,
}

#[derive(Debug)]
struct Msg {
    sent: Instant,
    delivered: Option<Instant>,
    /// Its requests not answered yet; the entry goes with the last one.
    left: usize,
}

/// Open requests and the own messages carrying them.
#[derive(Debug, Default)]
pub struct WriteStages {
    requests: HashMap<u64, (Instant, Option<u64>)>,
    msgs: HashMap<u64, Msg>,
}

impl WriteStages {
    /// Request `req` reached the cluster thread at `now`.
    pub fn requested(&mut self, req: u64, now: Instant) {
        if self.requests.len() >= MAX_TRACKED {
            *self = Self::default();
        }
        self.requests.insert(req, (now, None));
    }

    /// Own message `seq`, carrying `reqs`, was multicast at `now`. A request sent
    /// again (its first message was lost in a membership change) moves to this one.
    pub fn sent(&mut self, seq: u64, reqs: &[u64], now: Instant) {
        if reqs.is_empty() {
            return;
        }
        if self.msgs.len() >= MAX_TRACKED {
            *self = Self::default();
        }
        let mut left = 0;
        for r in reqs {
            let Some((_, m)) = self.requests.get_mut(r) else {
                continue;
            };
            if let Some(old) = m.replace(seq) {
                self.release(old);
            }
            left += 1;
        }
        if left > 0 {
            self.msgs.insert(
                seq,
                Msg {
                    sent: now,
                    delivered: None,
                    left,
                },
            );
        }
    }

    /// Own message `seq` was delivered back here at `now`.
    pub fn delivered(&mut self, seq: u64, now: Instant) {
        if let Some(m) = self.msgs.get_mut(&seq) {
            m.delivered.get_or_insert(now);
        }
    }

    /// Request `req` was answered at `now`: its stages, if it was being timed.
    pub fn answered(&mut self, req: u64, now: Instant) -> Option<Stages> {
        let (at, seq) = self.requests.remove(&req)?;
        let split = seq.and_then(|s| {
            let m = self.msgs.get(&s)?;
            let d = m.delivered?;
            debug_assert!(at <= m.sent && m.sent <= d && d <= now, "stages in order");
            Some((m.sent - at, d - m.sent, now.saturating_duration_since(d)))
        });
        if let Some(s) = seq {
            self.release(s);
        }
        Some(Stages {
            total: now.saturating_duration_since(at),
            split,
        })
    }

    /// Requests and messages tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        (self.requests.len(), self.msgs.len())
    }

    fn release(&mut self, seq: u64) {
        if let Some(m) = self.msgs.get_mut(&seq) {
            m.left -= 1;
            if m.left == 0 {
                self.msgs.remove(&seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// A split of (queued, delivery, confirmation) milliseconds.
    fn split_ms(q: u64, d: u64, c: u64) -> Option<(Duration, Duration, Duration)> {
        let m = Duration::from_millis;
        Some((m(q), m(d), m(c)))
    }

    #[test]
    fn a_batch_is_split_into_its_stages_and_forgotten_once_answered() {
        let t0 = Instant::now();
        let mut w = WriteStages::default();
        w.requested(1, t0);
        w.requested(2, ms(t0, 1));
        w.sent(7, &[1, 2], ms(t0, 3));
        w.delivered(7, ms(t0, 4));
        let a = w.answered(1, ms(t0, 6)).expect("timed");
        assert_eq!(a.total, Duration::from_millis(6));
        assert_eq!(a.split, split_ms(3, 1, 2));
        assert_eq!(
            w.tracked(),
            (1, 1),
            "the message waits for its second request"
        );
        let b = w.answered(2, ms(t0, 6)).expect("timed");
        assert_eq!(b.split.map(|s| s.0), Some(Duration::from_millis(2)));
        assert_eq!(w.tracked(), (0, 0));
        assert_eq!(w.answered(2, ms(t0, 7)), None, "answered once");
    }

    #[test]
    fn a_refused_or_untimed_write_has_only_a_total() {
        let t0 = Instant::now();
        let mut w = WriteStages::default();
        w.requested(1, t0);
        let a = w.answered(1, ms(t0, 1)).expect("timed");
        assert_eq!((a.total, a.split), (Duration::from_millis(1), None));
        // Sent but answered before its own delivery (it failed when the group changed).
        w.requested(2, t0);
        w.sent(3, &[2], ms(t0, 1));
        assert_eq!(w.answered(2, ms(t0, 5)).and_then(|s| s.split), None);
        assert_eq!(w.tracked(), (0, 0));
        // A message with requests this tracker never saw is not kept.
        w.sent(4, &[99], t0);
        assert_eq!(w.tracked(), (0, 0));
    }

    #[test]
    fn a_write_sent_again_counts_from_its_second_message() {
        let t0 = Instant::now();
        let mut w = WriteStages::default();
        w.requested(1, t0);
        w.requested(2, t0);
        w.sent(5, &[1, 2], ms(t0, 1));
        // The configuration changed: message 5 was lost and both went out again as 6.
        w.sent(6, &[1, 2], ms(t0, 10));
        assert_eq!(w.tracked(), (2, 1), "the lost message is released");
        w.delivered(5, ms(t0, 11));
        w.delivered(6, ms(t0, 12));
        let a = w.answered(1, ms(t0, 13)).expect("timed");
        assert_eq!(a.split, split_ms(10, 2, 1));
    }

    #[test]
    fn tracking_is_bounded() {
        let t0 = Instant::now();
        let mut w = WriteStages::default();
        for r in 0..(MAX_TRACKED as u64 + 10) {
            w.requested(r, t0);
        }
        assert!(w.tracked().0 <= MAX_TRACKED);
        assert_eq!(
            w.answered(0, t0),
            None,
            "forgotten when tracking started over"
        );
    }
}
