//! Rate-limited log lines for what a misbehaving or hostile client can repeat at will (bad
//! frames, bad requests, refused connections): the first of each kind in a window is logged
//! in full; the rest are counted, and the count is logged once the window closes ("… and N
//! more in the last 10 s"). Fuzzing a broker must not fill its disk with log.
//!
//! One per data shard (`Cell`/`RefCell`, this executor only); `flush` runs on the shard's
//! timer every window, so a flood that stops is still reported.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use tracing::warn;

/// The kinds of line limited, each with its own window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    BadFrame,
    BadRequest,
    SlowRequest,
    RefusedConnection,
    AcceptFailed,
}

impl LogKind {
    const ALL: [LogKind; 5] = [
        LogKind::BadFrame,
        LogKind::BadRequest,
        LogKind::SlowRequest,
        LogKind::RefusedConnection,
        LogKind::AcceptFailed,
    ];

    fn what(self) -> &'static str {
        match self {
            LogKind::BadFrame => "connections closed for a bad frame",
            LogKind::BadRequest => "connections closed for a bad request",
            LogKind::SlowRequest => "connections closed for a request that did not arrive in time",
            LogKind::RefusedConnection => "connections refused at a connection limit",
            LogKind::AcceptFailed => "accepts that failed (out of descriptors?)",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Window {
    /// When the window's first line was logged; `None` when no window is open.
    opened: Option<Instant>,
    suppressed: u64,
}

pub struct LogLimiter {
    window: Duration,
    windows: RefCell<[Window; LogKind::ALL.len()]>,
}

impl LogLimiter {
    pub fn new(window: Duration) -> Self {
        Self { window, windows: RefCell::new([Window::default(); LogKind::ALL.len()]) }
    }

    /// Whether to log this occurrence of `kind` in full (the first of a window); otherwise
    /// it is counted for the window's summary line.
    pub fn allow(&self, kind: LogKind) -> bool {
        self.allow_at(kind, Instant::now())
    }

    fn allow_at(&self, kind: LogKind, now: Instant) -> bool {
        let summary = {
            let mut windows = self.windows.borrow_mut();
            let w = &mut windows[kind as usize];
            match w.opened {
                Some(opened) if now.duration_since(opened) < self.window => {
                    w.suppressed += 1;
                    return false;
                }
                _ => {
                    let summary = w.suppressed;
                    *w = Window { opened: Some(now), suppressed: 0 };
                    summary
                }
            }
        };
        self.report(kind, summary);
        true
    }

    /// Logs the count of each kind whose window has closed with lines suppressed.
    pub fn flush(&self) {
        let now = Instant::now();
        for kind in LogKind::ALL {
            let summary = {
                let mut windows = self.windows.borrow_mut();
                let w = &mut windows[kind as usize];
                match w.opened {
                    Some(opened) if now.duration_since(opened) >= self.window => {
                        let n = w.suppressed;
                        *w = Window::default();
                        n
                    }
                    _ => 0,
                }
            };
            self.report(kind, summary);
        }
    }

    fn report(&self, kind: LogKind, suppressed: u64) {
        if suppressed > 0 {
            warn!(count = suppressed, "… and {suppressed} more {} in the last {:?}", kind.what(), self.window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_window_is_logged_and_the_rest_counted() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(limiter.allow_at(LogKind::BadFrame, t0));
        for i in 1..100 {
            assert!(!limiter.allow_at(LogKind::BadFrame, t0 + Duration::from_millis(i)));
        }
        // Kinds have their own windows.
        assert!(limiter.allow_at(LogKind::BadRequest, t0));
        assert_eq!(limiter.windows.borrow()[LogKind::BadFrame as usize].suppressed, 99);
        // The next window opens with a full line again (after the summary).
        assert!(limiter.allow_at(LogKind::BadFrame, t0 + Duration::from_secs(11)));
        assert_eq!(limiter.windows.borrow()[LogKind::BadFrame as usize].suppressed, 0);
    }
}
