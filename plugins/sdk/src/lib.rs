//! The SDK for alerter source plugins.
//!
//! Implement [`Source`] (or [`Check`], for "look every N seconds"), then
//! write `declare_source!(MySource);` and build the crate as a `cdylib`:
//! the result is a `.so` that alerter loads from its plugin directory. The
//! macro generates the C ABI entry point ([`abi`]) with shims that catch
//! panics inside the plugin, so a bug in a plugin is reported as an error
//! instead of aborting the daemon. Plugin authors write no `unsafe`.
//!
//! [`testing`] runs a source through the same entry points in a unit test.
//! docs/plugins.md is the author's guide.

pub use alerter_plugin_abi as abi;

mod context;
mod event;
#[doc(hidden)]
pub mod shims;
pub mod testing;

use std::ffi::CStr;
use std::time::Duration;

pub use alerter_schedule as schedule;
pub use alerter_schedule::Trigger;
pub use context::{Context, EmitError, Level};
pub use event::{Event, Severity};
pub use serde;
pub use serde_json;

/// Why a call failed: a message, optionally pointing at a config key, and
/// any further problems found in the same call (so `alerter check` shows
/// them all at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The config key the problem is about (`mounts[1]`), if any.
    pub path: Option<String>,
    pub message: String,
    more: Vec<Error>,
}

impl Error {
    pub fn msg(message: impl Into<String>) -> Error {
        Error { path: None, message: message.into(), more: Vec::new() }
    }

    /// An error about one config key, e.g. `Error::at("interval", "must be more than 0s")`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Error {
        Error { path: Some(path.into()), message: message.into(), more: Vec::new() }
    }

    /// All the problems of a list, as one error; `Ok` when there are none.
    /// For `validate`: collect every problem, then return them together.
    pub fn all(errors: Vec<Error>) -> Result<(), Error> {
        let mut flat = errors.into_iter().flat_map(Error::into_list);
        match flat.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = flat.collect();
                Err(first)
            }
        }
    }

    /// This problem and the ones carried with it.
    pub fn list(&self) -> Vec<&Error> {
        std::iter::once(self).chain(self.more.iter()).collect()
    }

    fn into_list(mut self) -> Vec<Error> {
        let more = std::mem::take(&mut self.more);
        std::iter::once(self).chain(more).collect()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.list().into_iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &e.path {
                Some(p) => write!(f, "{p}: {}", e.message)?,
                None => f.write_str(&e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::msg(e.to_string())
    }
}

/// A source of events.
///
/// The host creates it from its configuration and calls [`Source::run`] on a
/// thread of its own; `run` emits events through the [`Context`] and returns
/// when [`Context::wait_for_shutdown`] says so.
pub trait Source: Sized + Send + 'static {
    /// The source type admins write in `type:` (lowercase, digits, `_`, `-`).
    const NAME: &'static CStr;
    /// One line for `alerter plugins`.
    const DESCRIPTION: &'static CStr = c"";
    /// The settings, deserialized from the source's YAML keys (as JSON).
    /// Use `#[serde(deny_unknown_fields)]` so typos are reported.
    type Config: serde::de::DeserializeOwned;

    /// Checks settings beyond their types, without side effects: no files,
    /// sockets or threads. `alerter check` calls it.
    fn validate(config: &Self::Config) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    /// Creates the source. It may open files and sockets.
    fn new(config: Self::Config, cx: &Context) -> Result<Self, Error>;

    /// Runs until [`Context::wait_for_shutdown`] returns true. An `Err` is
    /// logged and the host restarts the source after a backoff.
    fn run(&mut self, cx: &Context) -> Result<(), Error>;
}

/// A periodic check: the SDK calls [`Check::check`] when its
/// [`Check::trigger`] says (every [`Check::interval`] unless overridden,
/// or on a crontab schedule) and emits what it returns. Declare it with
/// `declare_source!(Periodic<MyCheck>)`.
pub trait Check: Sized + Send + 'static {
    const NAME: &'static CStr;
    const DESCRIPTION: &'static CStr = c"";
    type Config: serde::de::DeserializeOwned;

    fn validate(config: &Self::Config) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    fn new(config: Self::Config, cx: &Context) -> Result<Self, Error>;

    /// How long to wait between checks (used by the default [`Check::trigger`]).
    fn interval(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// When to check: by default every [`Check::interval`], the first time
    /// at once. Return a [`Trigger::Cron`] for crontab schedules (see
    /// [`Trigger::from_settings`] for the usual `interval` / `schedule` /
    /// `timezone` keys).
    fn trigger(&self) -> Trigger {
        Trigger::Every(self.interval())
    }

    /// Looks once. A failure is logged and the next check runs on time.
    fn check(&mut self, cx: &Context) -> Result<Vec<Event>, Error>;
}

/// Runs a [`Check`] as a [`Source`].
pub struct Periodic<C: Check>(C);

impl<C: Check> Periodic<C> {
    pub fn inner(&self) -> &C {
        &self.0
    }
}

impl<C: Check> Source for Periodic<C> {
    const NAME: &'static CStr = C::NAME;
    const DESCRIPTION: &'static CStr = C::DESCRIPTION;
    type Config = C::Config;

    fn validate(config: &Self::Config) -> Result<(), Error> {
        C::validate(config)
    }

    fn new(config: Self::Config, cx: &Context) -> Result<Self, Error> {
        C::new(config, cx).map(Periodic)
    }

    fn run(&mut self, cx: &Context) -> Result<(), Error> {
        let mut last: Option<chrono::DateTime<chrono::Utc>> = None;
        loop {
            let trigger = self.0.trigger();
            let Some(next) = trigger.next_after(last, chrono::Utc::now()) else {
                // A schedule that never fires again (`0 0 30 2 *`): idle.
                cx.log(Level::Warn, "the schedule never fires; this source is idle");
                while !cx.wait_for_shutdown(Duration::from_secs(3600)) {}
                return Ok(());
            };
            // Sleep in steps until the wall clock reaches `next`: the clock
            // may be set while we sleep, and a crontab time is wall time.
            loop {
                let left = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                if left.is_zero() {
                    break;
                }
                if cx.wait_for_shutdown(left.min(Duration::from_secs(60))) {
                    return Ok(());
                }
            }
            last = Some(next);
            match self.0.check(cx) {
                Ok(events) => {
                    for e in &events {
                        if let Err(EmitError::ShuttingDown) = cx.emit(e) {
                            return Ok(());
                        }
                    }
                }
                Err(e) => cx.log(Level::Error, &format!("check failed: {e}")),
            }
            if cx.should_stop() {
                return Ok(());
            }
        }
    }
}

/// Exports a [`Source`] as an alerter plugin: generates the static
/// descriptor, the panic-catching shims, and the entry symbol
/// `alerter_source_plugin_v1`.
///
/// Also defines `pub fn descriptor()` in the calling module, which is how
/// alerter links its built-in plugins (they use
/// [`declare_builtin_source!`], which does not export the symbol, so
/// several can live in one binary).
#[macro_export]
macro_rules! declare_source {
    ($ty:ty) => {
        $crate::declare_builtin_source!($ty);

        /// The plugin's entry point (see the alerter plugin ABI).
        #[unsafe(no_mangle)]
        pub extern "C" fn alerter_source_plugin_v1(host_abi_minor: u32) -> *const $crate::abi::SourcePluginV1 {
            $crate::shims::entry(descriptor(), host_abi_minor)
        }
    };
}

/// Like [`declare_source!`] but without exporting the entry symbol: for
/// plugins linked into a program rather than loaded from a `.so`.
#[macro_export]
macro_rules! declare_builtin_source {
    ($ty:ty) => {
        static __ALERTER_DESCRIPTOR: $crate::abi::SourcePluginV1 =
            $crate::shims::descriptor::<$ty>(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes());

        /// This plugin's static descriptor.
        pub fn descriptor() -> &'static $crate::abi::SourcePluginV1 {
            &__ALERTER_DESCRIPTOR
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn several_problems_travel_together() {
        assert_eq!(Error::all(Vec::new()), Ok(()));
        let nested = Error::all(vec![Error::at("b", "two"), Error::msg("three")]).unwrap_err();
        let e = Error::all(vec![Error::at("a", "one"), nested]).unwrap_err();
        assert_eq!(e.list().len(), 3);
        assert_eq!(e.to_string(), "a: one; b: two; three");
        let json: serde_json::Value = serde_json::from_str(&crate::shims::error_text(&e)).unwrap();
        assert_eq!(json["errors"][1]["path"], "b");
        assert_eq!(json["errors"][2].get("path"), None);
    }
}
