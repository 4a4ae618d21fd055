//! alerter-core: the engine of the alerter daemon.
//!
//! Events from sources go through the rules ([`rules::router`]), become
//! notifications ([`notify`]) and are handed to transports ([`transport`]).
//! [`config`] reads and checks the YAML; [`store`] keeps state in SQLite;
//! [`daemon`] wires it all together with tokio. See ARCHITECTURE.md.
#![deny(unsafe_code)]

pub use alerter_engine::{budget, event, notices, notify, rules, schedule, template, visible};

pub mod acks;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod files;
pub mod inbox;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod resend;
pub mod ruletest;
pub mod service;
pub mod store;
pub mod throttle;
pub mod transport;
