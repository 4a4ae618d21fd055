//! alerter-core: the engine of the alerter daemon.
//!
//! Events from sources go through the rules ([`rules::router`]), become
//! notifications ([`notify`]) and are handed to transports ([`transport`]).
//! [`config`] reads and checks the YAML; [`store`] keeps state in SQLite;
//! [`daemon`] wires it all together with tokio. See ARCHITECTURE.md.
#![deny(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod event;
pub mod notices;
pub mod notify;
pub mod outbox;
pub mod plugin;
pub mod rules;
pub mod ruletest;
pub mod schedule;
pub mod store;
pub mod template;
pub mod transport;
