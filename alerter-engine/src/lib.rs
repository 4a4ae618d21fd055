//! alerter-engine: what the alerter decides, with no I/O.
//!
//! Events, ticks, delivery reports and control commands go in; a [`Turn`]
//! (alert changes, notifications, audit records, sources' states and
//! notice positions to commit together) and the next wake-up come out.
//! The daemon in alerter-core is the plumbing around it (channels, the
//! store, transports), and `alerter test` drives the very same engine on a
//! simulated clock. Every entry point takes `now`; nothing here reads a
//! clock, touches a file or opens a socket, and the crate's dependencies
//! (no tokio, no SQLite, no network) keep it that way.
#![forbid(unsafe_code)]

pub mod budget;
pub mod engine;
pub mod event;
pub mod notices;
pub mod notify;
pub mod rules;
pub mod schedule;
pub mod template;
pub mod visible;

pub use engine::{ChangeError, Delivery, Engine, EngineConfig, NoticeChange, Outcome, Turn};
