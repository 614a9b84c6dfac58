//! Heartbeat: when to send a WebSocket ping, and when a silent client is dead.
//!
//! Any frame from the client counts as a sign of life (browsers answer pings with pongs on their
//! own). After each ping the client has `timeout` to show one; the next ping follows `interval`
//! after the previous one.
//!
//! Owns one connection's heartbeat state; only that connection's writer changes it.

use std::time::{Duration, Instant};

/// The heartbeat's two periods, the same for every client (kept once, in the hub).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Periods {
    /// Time between pings.
    pub(crate) interval: Duration,
    /// Time allowed for an answer.
    pub(crate) timeout: Duration,
}

/// One client's heartbeat state: 24 bytes in every idle connection's writer, so the periods
/// are passed in rather than kept.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// When the next ping is due, or, while `awaiting`, when the unanswered ping was sent.
    at: Instant,
    /// Whether a ping is waiting for an answer.
    awaiting: bool,
}

/// What the writer should do at a deadline.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing yet.
    Wait,
    /// Send a ping now.
    Ping,
    /// The client did not answer in time.
    Dead,
}

impl Heartbeat {
    /// A schedule starting at `now`.
    pub(crate) fn new(now: Instant, p: Periods) -> Self {
        Self {
            at: now + p.interval,
            awaiting: false,
        }
    }

    /// The next moment [`Heartbeat::check`] has something to decide.
    pub(crate) fn deadline(&self, p: Periods) -> Instant {
        if self.awaiting {
            self.at + p.timeout
        } else {
            self.at
        }
    }

    /// Decides at `now`, given when the client was last heard from.
    pub(crate) fn check(&mut self, now: Instant, last_heard: Instant, p: Periods) -> Beat {
        if self.awaiting {
            let sent = self.at;
            if last_heard >= sent {
                self.awaiting = false;
                self.at = sent + p.interval;
            } else if now >= sent + p.timeout {
                return Beat::Dead;
            } else {
                return Beat::Wait;
            }
        }
        if now >= self.at {
            (self.at, self.awaiting) = (now, true);
            Beat::Ping
        } else {
            Beat::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_answer_and_death() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let p = Periods {
            interval: 10 * s,
            timeout: 3 * s,
        };
        let mut hb = Heartbeat::new(t0, p);
        assert_eq!(hb.check(t0 + 5 * s, t0, p), Beat::Wait);
        assert_eq!(hb.check(t0 + 10 * s, t0, p), Beat::Ping);
        assert_eq!(hb.deadline(p), t0 + 13 * s);
        // Answered at 11s: next ping at 20s.
        assert_eq!(hb.check(t0 + 13 * s, t0 + 11 * s, p), Beat::Wait);
        assert_eq!(hb.deadline(p), t0 + 20 * s);
        assert_eq!(hb.check(t0 + 20 * s, t0 + 11 * s, p), Beat::Ping);
        // Not answered.
        assert_eq!(hb.check(t0 + 22 * s, t0 + 11 * s, p), Beat::Wait);
        assert_eq!(hb.check(t0 + 23 * s, t0 + 11 * s, p), Beat::Dead);
    }
}
