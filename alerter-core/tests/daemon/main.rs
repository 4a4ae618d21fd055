//! alerter-core's integration tests, one binary: the daemon on tokio's
//! paused clock with its real SQLite store (restart, notices, storms) and
//! the engine with the store over simulated months (retention).

mod notices;
mod paused;
mod restart;
mod retention;
mod storm;
