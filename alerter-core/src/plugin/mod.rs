//! Source plugins: the C ABI loader, discovery in plugin directories, the
//! plugin protocol, the plugin host (child side) and the supervisor
//! (daemon side).
//!
//! Built-in plugins implement the same ABI as third-party ones and are
//! reached through the same descriptor; they are linked into the binary and
//! run in-process. Third-party `.so` files run by default in a supervised
//! child process (`alerter plugin-host`), so a crash, abort or hang takes
//! down only that child. See docs/plugins.md.

pub mod catalog;
pub mod discover;
mod drops;
pub mod ffi;
pub mod host;
pub mod protocol;
pub mod supervisor;

pub use catalog::{Plugin, PluginKind, PluginRegistry, PluginSet};
pub use supervisor::{Isolation, SourceSpec};
