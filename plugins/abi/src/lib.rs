//! The binary contract between alerter and a source plugin, version 1.
//!
//! A plugin is a shared object that exports one symbol,
//! `alerter_source_plugin_v1`, returning a pointer to a static
//! [`SourcePluginV1`] descriptor. Everything that crosses the boundary is
//! a `#[repr(C)]` struct, an integer, a raw pointer or an `extern "C"`
//! function pointer, so plugins can be written in any language that can
//! produce a C ABI (`include/alerter_plugin.h` is generated from this file).
//!
//! Rules of the contract:
//! - **Versioning.** The major version is in the symbol name: a plugin for
//!   another major version has no symbol this host looks for. Structs start
//!   with `struct_size` and only ever grow by appending fields; `abi_minor`
//!   says which optional fields exist.
//! - **Memory.** Every [`Bytes`] argument is borrowed for the
//!   duration of the call; the callee copies what it keeps. Nothing
//!   allocated on one side is freed on the other, so there is no free
//!   function. Descriptor strings are static: a loaded plugin is never
//!   unloaded.
//! - **Payloads.** Configuration and events are UTF-8 JSON (see
//!   docs/plugins.md for the event format).
//! - **Threads.** The host calls `run` once on a thread it owns; the plugin
//!   may call `emit` and `log` from any thread while `run` is active, and
//!   must join its own threads before `run` returns.
//! - **Panics and exceptions** must not cross the boundary; the Rust SDK
//!   catches panics inside the plugin and reports them as
//!   [`STATUS_PANICKED`].
#![no_std]

use core::ffi::{c_char, c_void};

/// The major version; a change renames the entry symbol.
pub const ABI_MAJOR: u32 = 1;
/// The minor version: fields appended to the structs below.
/// 1.1 added `saved_state` and `save_state` to [`HostApi`].
pub const ABI_MINOR: u32 = 1;
/// The symbol every version-1 plugin exports, a function of type [`EntryFn`].
pub const ENTRY_SYMBOL: &str = "alerter_source_plugin_v1";

/// Success.
pub const STATUS_OK: Status = 0;
/// A failure; the plugin said why through `set_error`.
pub const STATUS_ERROR: Status = 1;
/// The configuration is not acceptable; the plugin said why through `set_error`.
pub const STATUS_INVALID_CONFIG: Status = 2;
/// `emit`: the host's queue for this source is full and the event was dropped.
pub const STATUS_BACKPRESSURE: Status = 3;
/// `emit`: the host is stopping the plugin; `run` should return soon.
pub const STATUS_SHUTTING_DOWN: Status = 4;
/// A panic was caught inside the plugin; the plugin said what through `set_error`.
pub const STATUS_PANICKED: Status = 5;

/// `log` levels.
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;

/// A status code. An integer rather than an enum, because a value the
/// reader does not know must not be undefined behaviour.
pub type Status = i32;

/// Borrowed bytes: valid only for the duration of the call they are passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl Bytes {
    /// No bytes.
    pub const EMPTY: Bytes = Bytes { ptr: core::ptr::null(), len: 0 };

    /// Borrows a slice.
    pub const fn from_slice(s: &[u8]) -> Bytes {
        Bytes { ptr: s.as_ptr(), len: s.len() }
    }
}

/// The host's side of the contract, passed to `validate` and `create`.
/// Valid until `destroy` returns; every function is thread-safe.
#[repr(C)]
pub struct HostApi {
    /// `size_of::<HostApi>()` as the host built it.
    pub struct_size: usize,
    /// The host's `ABI_MINOR`.
    pub abi_minor: u32,
    /// Opaque; pass it back to every callback.
    pub ctx: *mut c_void,
    /// Hands one event (UTF-8 JSON) to the host. Never blocks: returns
    /// `STATUS_OK`, `STATUS_BACKPRESSURE` (dropped) or `STATUS_SHUTTING_DOWN`.
    pub emit: unsafe extern "C" fn(ctx: *mut c_void, event_json: Bytes) -> Status,
    /// Writes a line to the daemon's log at a `LOG_*` level.
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: u32, message: Bytes),
    /// Says why the current call failed (UTF-8 text, or JSON
    /// `{"errors":[{"path":"a.b","message":"..."}]}` to point at config keys).
    pub set_error: unsafe extern "C" fn(ctx: *mut c_void, message: Bytes),
    /// Sleeps up to `timeout_ms`, waking early when the host wants the
    /// plugin to stop. Returns true when it should stop.
    pub wait_for_shutdown: unsafe extern "C" fn(ctx: *mut c_void, timeout_ms: u64) -> bool,
    // ABI 1.1: read these only when `abi_minor >= 1`.
    /// The state this source last saved with `save_state` (UTF-8 JSON) as
    /// far as the daemon has handled it, or empty the first time. Valid
    /// until `destroy` returns.
    pub saved_state: Bytes,
    /// Saves the source's progress (UTF-8 JSON, such as file offsets). The
    /// daemon commits it in the same transaction as the effects of every
    /// event emitted before it, so after a crash `saved_state` matches
    /// exactly the events that were handled: resume from it and nothing is
    /// lost or repeated. Never blocks: returns `STATUS_OK`,
    /// `STATUS_BACKPRESSURE` (not taken: save again later) or
    /// `STATUS_SHUTTING_DOWN`.
    pub save_state: unsafe extern "C" fn(ctx: *mut c_void, state_json: Bytes) -> Status,
}

/// The size of a version 1.0 [`HostApi`]: fields after it exist only when
/// the host's `abi_minor` says so.
pub const HOST_API_V1_0_SIZE: usize = core::mem::offset_of!(HostApi, saved_state);

/// The static descriptor a plugin's entry symbol returns.
#[repr(C)]
pub struct SourcePluginV1 {
    /// `size_of::<SourcePluginV1>()` as the plugin built it.
    pub struct_size: usize,
    pub abi_major: u32,
    pub abi_minor: u32,
    /// The source type admins write in `type:`: NUL-terminated, static,
    /// lowercase letters, digits, `_` and `-`.
    pub name: *const c_char,
    /// The plugin's own version: NUL-terminated, static.
    pub version: *const c_char,
    /// One line for `alerter plugins`: NUL-terminated, static; may be null.
    pub description: *const c_char,
    /// A JSON Schema of the plugin's configuration, or empty.
    pub config_schema: Bytes,
    /// Checks a configuration without side effects (no files, sockets or
    /// threads), for `alerter check`. May be null.
    pub validate: Option<unsafe extern "C" fn(config_json: Bytes, host: *const HostApi) -> Status>,
    /// Creates an instance; null on failure (with `set_error`), and then
    /// `destroy` is not called.
    pub create: unsafe extern "C" fn(config_json: Bytes, host: *const HostApi) -> *mut c_void,
    /// Runs until told to stop (see `wait_for_shutdown`) or until it fails.
    pub run: unsafe extern "C" fn(instance: *mut c_void) -> Status,
    /// Asks a running instance to return from `run` soon; called from
    /// another thread. May be null.
    pub request_stop: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// Frees an instance after `run` returned.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
}

// SAFETY: a descriptor holds only pointers to static, immutable data and
// function pointers, which may be shared between threads.
unsafe impl Sync for SourcePluginV1 {}

/// The type of the entry symbol. The host passes its `ABI_MINOR`; a plugin
/// that needs a newer host returns null.
pub type EntryFn = unsafe extern "C" fn(host_abi_minor: u32) -> *const SourcePluginV1;

/// The size of a version 1.0 descriptor: hosts accept nothing smaller.
pub const SOURCE_PLUGIN_V1_0_SIZE: usize = core::mem::size_of::<SourcePluginV1>();

unsafe extern "C" {
    /// The entry symbol, as a C prototype for plugin authors. The host never
    /// links against it; it looks it up in each plugin with `dlsym`.
    pub fn alerter_source_plugin_v1(host_abi_minor: u32) -> *const SourcePluginV1;
}
