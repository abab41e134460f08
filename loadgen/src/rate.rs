//! Open-loop pacing. Message `i` of a producer is intended to be sent at
//! `start + i / rate`; the generator sends every message whose intended time has come, and
//! latency is measured from the intended time, so a stall (in the broker, the network or the
//! generator itself) shows up in the latency of every message it delayed instead of being
//! hidden by sending fewer messages (coordinated omission).

#[derive(Debug, Clone)]
pub struct Pacer {
    start_us: u64,
    /// Microseconds between intended sends.
    period_us: f64,
    next: u64,
}

impl Pacer {
    /// `rate` messages per second (> 0) starting at `start_us`.
    pub fn new(start_us: u64, rate: f64) -> Pacer {
        Pacer { start_us, period_us: 1e6 / rate, next: 0 }
    }

    /// Intended send time of message `i`.
    pub fn intended_us(&self, i: u64) -> u64 {
        self.start_us + (i as f64 * self.period_us) as u64
    }

    /// Intended time of the next message.
    pub fn next_at(&self) -> u64 {
        self.intended_us(self.next)
    }

    /// The next message's intended time if it is due at `now_us` (and moves past it).
    pub fn due(&mut self, now_us: u64) -> Option<u64> {
        let t = self.next_at();
        if t <= now_us {
            self.next += 1;
            Some(t)
        } else {
            None
        }
    }

    /// Messages scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate() {
        let p = Pacer::new(1_000, 4.0);
        assert_eq!(p.intended_us(0), 1_000);
        assert_eq!(p.intended_us(1), 251_000);
        assert_eq!(p.intended_us(4), 1_001_000);
        // Fractional periods do not drift: 3 per second, message 3000 is exactly 1000 s later.
        let p = Pacer::new(0, 3.0);
        assert_eq!(p.intended_us(3000), 1_000_000_000);
    }

    #[test]
    fn due_releases_each_message_once_at_its_time() {
        let mut p = Pacer::new(100, 1000.0); // every 1 ms
        assert_eq!(p.due(99), None);
        assert_eq!(p.due(100), Some(100));
        assert_eq!(p.due(100), None);
        assert_eq!(p.next_at(), 1100);
    }

    /// After a stall the generator catches up with the intended times of every message it
    /// missed, so each of them is charged the time it should have been sent.
    #[test]
    fn a_stall_keeps_the_intended_times() {
        let mut p = Pacer::new(0, 1000.0);
        let now = 10_500; // stalled until 10.5 ms
        let mut times = Vec::new();
        while let Some(t) = p.due(now) {
            times.push(t);
        }
        assert_eq!(times, (0..=10).map(|i| i * 1000).collect::<Vec<_>>());
        assert_eq!(p.scheduled(), 11);
        let latencies: Vec<u64> = times.iter().map(|t| now - t).collect();
        assert_eq!(latencies[0], 10_500);
        assert_eq!(latencies[10], 500);
    }
}
