//! Heartbeat: when to send a WebSocket ping, and when a silent client is dead.
//!
//! Any frame from the client counts as a sign of life (browsers answer pings with pongs on their
//! own). After each ping the client has `timeout` to show one; the next ping follows `interval`
//! after the previous one.

use std::time::{Duration, Instant};

/// One client's heartbeat schedule.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// Time between pings.
    interval: Duration,
    /// Time allowed for an answer.
    timeout: Duration,
    /// When the next ping is due (while not waiting for an answer).
    next_ping: Instant,
    /// When the unanswered ping was sent.
    awaiting_since: Option<Instant>,
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
    pub(crate) fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            next_ping: now + interval,
            awaiting_since: None,
        }
    }

    /// The next moment [`Heartbeat::check`] has something to decide.
    pub(crate) fn deadline(&self) -> Instant {
        match self.awaiting_since {
            Some(sent) => sent + self.timeout,
            None => self.next_ping,
        }
    }

    /// Decides at `now`, given when the client was last heard from.
    pub(crate) fn check(&mut self, now: Instant, last_heard: Instant) -> Beat {
        if let Some(sent) = self.awaiting_since {
            if last_heard >= sent {
                self.awaiting_since = None;
                self.next_ping = sent + self.interval;
            } else if now >= sent + self.timeout {
                return Beat::Dead;
            } else {
                return Beat::Wait;
            }
        }
        if now >= self.next_ping {
            self.awaiting_since = Some(now);
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
        let mut hb = Heartbeat::new(t0, 10 * s, 3 * s);
        assert_eq!(hb.check(t0 + 5 * s, t0), Beat::Wait);
        assert_eq!(hb.check(t0 + 10 * s, t0), Beat::Ping);
        assert_eq!(hb.deadline(), t0 + 13 * s);
        // Answered at 11s: next ping at 20s.
        assert_eq!(hb.check(t0 + 13 * s, t0 + 11 * s), Beat::Wait);
        assert_eq!(hb.deadline(), t0 + 20 * s);
        assert_eq!(hb.check(t0 + 20 * s, t0 + 11 * s), Beat::Ping);
        // Not answered.
        assert_eq!(hb.check(t0 + 22 * s, t0 + 11 * s), Beat::Wait);
        assert_eq!(hb.check(t0 + 23 * s, t0 + 11 * s), Beat::Dead);
    }
}
