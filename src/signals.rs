//! The stop signals of the long-running commands that are not the daemon
//! (`listen`, `agent`); the daemon's own, with SIGHUP, are in `main.rs`.

/// SIGTERM and SIGINT, each registered once for the life of a loop. tokio
/// hands a signal only to the streams that exist when it comes: a stream made
/// afresh on each pass of a `select!` loop misses a signal that arrives while
/// the loop's body runs, or while another branch wins, and a listener busy
/// with a flood then never stops (found by a test that stops one mid-flood).
pub struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    pub fn new() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        // Without a handler the signal keeps its default action, which ends
        // the process: never a hang, only a less tidy stop.
        StopSignals { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
    }

    /// Waits for either signal.
    pub async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => {}
            _ = one(&mut self.int) => {}
        }
    }
}
