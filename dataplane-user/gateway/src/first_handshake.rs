//! When to (re)send a session's first handshake initiation.
//!
//! WireGuard retries an unanswered initiation after REKEY_TIMEOUT (5 s).
//! That suits a tunnel that was up and lost its peer, not one being set up:
//! both ends of a new peering start within the same second, and the
//! client's first initiation often reaches a server that is not listening
//! yet or does not have the client's key yet. It is then lost, and the
//! tunnel waits 5 s for nothing. So, until a session's first handshake
//! completes, initiations go out on a short exponential schedule (100 ms,
//! 200 ms, 400 ms, ... up to one a second, each shortened by up to a
//! quarter at random so two gateways do not stay in step), for a bounded
//! number of attempts; after that, WireGuard's own 5 s timer carries on.
//! An initiation is 148 bytes: even the fastest part of the schedule is a
//! handful of small datagrams.
//!
//! Every datapath of a dialing gateway follows this one schedule: the fast
//! datapath sends the initiations itself; for kernel WireGuard and the
//! embedded boringtun device, which keep their own 5 s timer and send an
//! initiation only when none is in flight, the gateway starts the
//! handshake over at each due time instead ([`crate::defguard`]: the peer
//! removed and added again, then one packet toward it).

use std::time::{Duration, Instant};

/// The first retry's delay; each following one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay of the schedule.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Initiations this schedule sends at most (the first one included), about
/// 12 s of trying; the protocol's own retries take over afterwards.
pub const MAX_ATTEMPTS: u32 = 16;

/// The first-handshake schedule of one WireGuard session.
#[derive(Clone, Debug)]
pub struct FirstHandshake {
    /// When the next initiation is due; `None` once the schedule is over
    /// (handshake done or attempts used up).
    next: Option<Instant>,
    /// Initiations sent on this schedule.
    sent: u32,
    /// State of a small xorshift generator for the jitter.
    jitter_state: u64,
}

impl FirstHandshake {
    /// A schedule whose first initiation is due at `first`.
    pub fn starting_at(first: Instant) -> Self {
        Self {
            next: Some(first),
            sent: 0,
            jitter_state: random_seed(),
        }
    }

    /// A schedule that sends nothing (a responder's session).
    pub fn inactive() -> Self {
        Self {
            next: None,
            sent: 0,
            jitter_state: 1,
        }
    }

    /// Whether an initiation is due at `now`. When it is, it counts as sent
    /// and the next one is scheduled.
    pub fn due(&mut self, now: Instant) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        if now < next {
            return false;
        }
        self.sent += 1;
        self.next = (self.sent < MAX_ATTEMPTS).then(|| now + self.delay_after(self.sent));
        true
    }

    /// The session's first handshake completed: nothing more to send.
    pub fn finish(&mut self) {
        self.next = None;
    }

    /// Whether the schedule may still send something.
    pub fn active(&self) -> bool {
        self.next.is_some()
    }

    /// When the next initiation is due, while the schedule runs.
    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// Initiations sent on this schedule so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// The delay after the `attempt`-th initiation (1-based): the nominal
    /// delay, shortened by up to a quarter.
    fn delay_after(&mut self, attempt: u32) -> Duration {
        let nominal = nominal_delay(attempt);
        let quarter = nominal / 4;
        let cut = self.next_random() % (quarter.as_micros() as u64 + 1);
        nominal - Duration::from_micros(cut)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty to keep two gateways out of step.
        let mut x = self.jitter_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter_state = x;
        x
    }
}

/// The delay after the `attempt`-th initiation (1-based), before jitter:
/// 100 ms, 200 ms, 400 ms, 800 ms, then [`MAX_DELAY`].
pub fn nominal_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (FIRST_DELAY * (1u32 << doublings)).min(MAX_DELAY)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    // RandomState is seeded randomly per process; never zero for xorshift.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5354_5241_4954);
    hasher.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instant the schedule sends at, stepping a clock by `tick` for `span`.
    fn sends(
        schedule: &mut FirstHandshake,
        start: Instant,
        tick: Duration,
        span: Duration,
    ) -> Vec<Duration> {
        let mut at = Vec::new();
        let mut now = start;
        while now <= start + span {
            if schedule.due(now) {
                at.push(now - start);
            }
            now += tick;
        }
        at
    }

    #[test]
    fn the_first_retries_come_far_sooner_than_rekey_timeout() {
        let start = Instant::now();
        let mut schedule = FirstHandshake::starting_at(start);
        let at = sends(
            &mut schedule,
            start,
            Duration::from_millis(1),
            Duration::from_secs(3),
        );
        assert_eq!(at.first(), Some(&Duration::ZERO), "the first goes at once");
        // WireGuard alone would retry after 5 s; here a server that becomes
        // ready within the first second is reached again within it.
        assert!(at.len() >= 4, "{at:?}");
        assert!(
            at[1] >= Duration::from_millis(75) && at[1] <= Duration::from_millis(100),
            "{at:?}"
        );
        assert!(at[3] <= Duration::from_millis(700), "{at:?}");
        // Exponential, then capped at one a second (jitter only shortens).
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(75) && gap <= MAX_DELAY,
                "{at:?}"
            );
        }
    }

    #[test]
    fn the_schedule_is_bounded_in_count_and_rate() {
        let start = Instant::now();
        let mut schedule = FirstHandshake::starting_at(start);
        let at = sends(
            &mut schedule,
            start,
            Duration::from_millis(5),
            Duration::from_secs(60),
        );
        assert_eq!(at.len(), MAX_ATTEMPTS as usize, "{at:?}");
        assert!(!schedule.active());
        assert!(
            *at.last().unwrap_or(&Duration::MAX) < Duration::from_secs(15),
            "{at:?}"
        );
        // Never more than 5 in any second (WireGuard's responders start
        // answering with cookies above 10 a second).
        for (i, t) in at.iter().enumerate() {
            let within = at[i..]
                .iter()
                .filter(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(
                within <= 5,
                "{within} initiations in the second after {t:?}: {at:?}"
            );
        }
    }

    #[test]
    fn a_finished_schedule_sends_nothing() {
        let start = Instant::now();
        let mut schedule = FirstHandshake::starting_at(start + Duration::from_millis(100));
        assert!(!schedule.due(start), "not before its time");
        assert!(schedule.due(start + Duration::from_millis(100)));
        schedule.finish();
        assert!(!schedule.due(start + Duration::from_secs(10)));
        assert_eq!(schedule.sent(), 1);
    }

    #[test]
    fn nominal_delays_double_up_to_the_cap() {
        let ms = |a| nominal_delay(a).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(40)],
            [100, 200, 400, 800, 1000, 1000]
        );
    }
}
