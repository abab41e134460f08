//! Ctrl-C (SIGINT) and SIGTERM: before the load starts they exit at once; during a run the
//! first one stops the load (in-flight requests finish, consumers catch up, results are
//! written), the second skips that drain, the third exits immediately.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::stats::Control;

#[derive(Default)]
struct State {
    count: AtomicUsize,
    control: Mutex<Option<Arc<Control>>>,
}

static STATE: OnceLock<Arc<State>> = OnceLock::new();

/// Starts the signal thread (once).
pub fn install() -> std::io::Result<()> {
    if STATE.get().is_some() {
        return Ok(());
    }
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let state = STATE.get_or_init(|| Arc::new(State::default())).clone();
    std::thread::Builder::new().name("lg-signals".into()).spawn(move || {
        for sig in signals.forever() {
            let n = state.count.fetch_add(1, Ordering::SeqCst) + 1;
            let control = state.control.lock().ok().and_then(|c| c.clone());
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            match (control, n) {
                (None, _) => {
                    let _ = writeln!(std::io::stderr(), "weir-loadgen: {name} before the run started; exiting");
                    std::process::exit(130);
                }
                (Some(c), 1) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "weir-loadgen: {name}: stopping; in-flight requests finish and results are written (again to skip the wait)"
                    );
                    c.request_stop();
                }
                (Some(c), 2) => {
                    let _ = writeln!(std::io::stderr(), "weir-loadgen: {name} again: not waiting for in-flight requests");
                    c.abort();
                }
                (Some(_), _) => {
                    let _ = writeln!(std::io::stderr(), "weir-loadgen: {name} a third time: exiting without results");
                    std::process::exit(130);
                }
            }
        }
    })?;
    Ok(())
}

/// From now on signals stop this run instead of exiting.
pub fn attach(control: Arc<Control>) {
    if let Some(s) = STATE.get() {
        if let Ok(mut c) = s.control.lock() {
            *c = Some(control);
        }
    }
}

/// Signals received so far.
pub fn received() -> usize {
    STATE.get().map_or(0, |s| s.count.load(Ordering::SeqCst))
}
