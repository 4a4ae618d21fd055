//! [`Context`]: a plugin's safe handle on the host's callbacks.

use std::time::Duration;

use crate::Event;
use crate::abi::{self, HostApi};

/// Log levels for [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Why an event was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The host's queue for this source is full; the event was dropped and
    /// counted. Slow down, or coalesce.
    Backpressure,
    /// The host is stopping the plugin: return from `run`.
    ShuttingDown,
    /// The host rejected the event (a bug in the plugin or the host).
    Rejected,
    /// The host is older than ABI 1.1 and cannot keep state.
    Unsupported,
}

/// The host, as seen by a plugin. Cheap to copy into threads the plugin
/// starts, as long as they end before `run` returns.
#[derive(Clone, Copy)]
pub struct Context {
    host: *const HostApi,
}

// SAFETY: the ABI requires every host callback to be thread-safe and the
// HostApi to stay valid until `destroy` returns, which is after `run` (and
// so after every thread the plugin started) has ended.
unsafe impl Send for Context {}
// SAFETY: as above; the context is only ever read.
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

impl Context {
    /// # Safety
    /// `host` must point to a valid `HostApi` for as long as the context is used.
    pub(crate) unsafe fn new(host: *const HostApi) -> Context {
        Context { host }
    }

    fn api(&self) -> &HostApi {
        // SAFETY: `new`'s contract: the host keeps the HostApi valid while
        // the plugin may use it.
        unsafe { &*self.host }
    }

    /// Hands an event to the host. Never blocks.
    pub fn emit(&self, event: &Event) -> Result<(), EmitError> {
        self.emit_json(&event.to_json())
    }

    /// Hands an event already encoded as wire JSON to the host.
    pub fn emit_json(&self, json: &str) -> Result<(), EmitError> {
        let api = self.api();
        // SAFETY: the callback is valid (see `api`) and the bytes are
        // borrowed only for the duration of the call.
        let status = unsafe { (api.emit)(api.ctx, abi::Bytes::from_slice(json.as_bytes())) };
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_BACKPRESSURE => Err(EmitError::Backpressure),
            abi::STATUS_SHUTTING_DOWN => Err(EmitError::ShuttingDown),
            _ => Err(EmitError::Rejected),
        }
    }

    /// Whether the host keeps state for sources (ABI 1.1 and later).
    fn has_state(&self) -> bool {
        let api = self.api();
        api.abi_minor >= 1 && api.struct_size >= std::mem::size_of::<HostApi>()
    }

    /// The state this source last saved with [`Context::save_state`], as
    /// far as the daemon has handled the events before it; `None` the first
    /// time (or with a host that keeps no state).
    pub fn saved_state(&self) -> Option<String> {
        if !self.has_state() {
            return None;
        }
        let b = self.api().saved_state;
        if b.ptr.is_null() || b.len == 0 {
            return None;
        }
        // SAFETY: the host keeps `saved_state` valid until `destroy`, and
        // the context is used only before then.
        let slice = unsafe { std::slice::from_raw_parts(b.ptr, b.len) };
        Some(String::from_utf8_lossy(slice).into_owned())
    }

    /// Saves the source's progress (JSON). The daemon commits it together
    /// with the effects of every event emitted before it, so after a crash
    /// [`Context::saved_state`] matches exactly the events that were
    /// handled. Never blocks; on `Backpressure`, save again later.
    pub fn save_state(&self, json: &str) -> Result<(), EmitError> {
        if !self.has_state() {
            return Err(EmitError::Unsupported);
        }
        let api = self.api();
        // SAFETY: as in `emit_json`.
        let status = unsafe { (api.save_state)(api.ctx, abi::Bytes::from_slice(json.as_bytes())) };
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_BACKPRESSURE => Err(EmitError::Backpressure),
            abi::STATUS_SHUTTING_DOWN => Err(EmitError::ShuttingDown),
            _ => Err(EmitError::Rejected),
        }
    }

    /// Writes a line to the daemon's log, tagged with this source.
    pub fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
        };
        let api = self.api();
        // SAFETY: as in `emit_json`.
        unsafe { (api.log)(api.ctx, level, abi::Bytes::from_slice(message.as_bytes())) };
    }

    /// Sleeps up to `timeout`, waking early when the host wants the source
    /// to stop. Returns true when it should stop.
    pub fn wait_for_shutdown(&self, timeout: Duration) -> bool {
        let api = self.api();
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // SAFETY: as in `emit_json`.
        unsafe { (api.wait_for_shutdown)(api.ctx, ms) }
    }

    /// Whether the host wants the source to stop, without waiting.
    pub fn should_stop(&self) -> bool {
        self.wait_for_shutdown(Duration::ZERO)
    }

    pub(crate) fn set_error(&self, message: &str) {
        let api = self.api();
        // SAFETY: as in `emit_json`.
        unsafe { (api.set_error)(api.ctx, abi::Bytes::from_slice(message.as_bytes())) };
    }
}
