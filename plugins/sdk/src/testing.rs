//! Running a plugin in a unit test, through its real entry points.
//!
//! ```ignore
//! use alerter_plugin_sdk::testing::{self, Stop};
//! let out = testing::run(descriptor(), serde_json::json!({"interval": "1s"}), Stop::AfterEvents(1));
//! assert_eq!(out.events[0]["severity"], "warning");
//! ```
//!
//! The harness plays the host: it calls the descriptor's `validate`,
//! `create`, `run` and `destroy` exactly as alerter does, collects emitted
//! events and log lines, and tells the source to stop after a number of
//! events or a time. Panics are caught by the same shims as in production.

use std::ffi::{CStr, c_void};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::abi::{self, Bytes, HostApi, SourcePluginV1, Status};

/// When the harness tells the source to stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many events.
    AfterEvents(usize),
    /// After this much (real) time.
    After(Duration),
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The emitted events, as JSON.
    pub events: Vec<serde_json::Value>,
    /// Log lines with their `LOG_*` level.
    pub logs: Vec<(u32, String)>,
    /// What `run` returned, or `STATUS_ERROR` when `create` failed.
    pub status: Status,
    /// The last `set_error` message.
    pub error: Option<String>,
    /// What the source passed to `save_state`, in order.
    pub states: Vec<String>,
}

struct State {
    events: Mutex<Vec<serde_json::Value>>,
    states: Mutex<Vec<String>>,
    saved: String,
    logs: Mutex<Vec<(u32, String)>>,
    error: Mutex<Option<String>>,
    stop: Mutex<bool>,
    wake: Condvar,
    stop_after: Option<usize>,
    deadline: Option<Instant>,
}

fn text(b: Bytes) -> String {
    if b.ptr.is_null() || b.len == 0 {
        return String::new();
    }
    // SAFETY: the plugin passes bytes valid for the duration of the callback.
    let slice = unsafe { std::slice::from_raw_parts(b.ptr, b.len) };
    String::from_utf8_lossy(slice).into_owned()
}

fn state<'a>(ctx: *mut c_void) -> &'a State {
    // SAFETY: ctx is the `State` the harness created and keeps alive for the
    // whole run.
    unsafe { &*ctx.cast::<State>() }
}

extern "C" fn emit(ctx: *mut c_void, json: Bytes) -> Status {
    let st = state(ctx);
    let mut stop = st.stop.lock().unwrap_or_else(|p| p.into_inner());
    if *stop {
        return abi::STATUS_SHUTTING_DOWN;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text(json)) else {
        return abi::STATUS_ERROR;
    };
    let mut events = st.events.lock().unwrap_or_else(|p| p.into_inner());
    events.push(value);
    if st.stop_after.is_some_and(|n| events.len() >= n) {
        *stop = true;
        st.wake.notify_all();
    }
    abi::STATUS_OK
}

extern "C" fn save_state(ctx: *mut c_void, json: Bytes) -> Status {
    // Taken even while stopping, as the daemon does: progress made before
    // the stop must not be lost.
    let st = state(ctx);
    st.states.lock().unwrap_or_else(|p| p.into_inner()).push(text(json));
    abi::STATUS_OK
}

extern "C" fn log(ctx: *mut c_void, level: u32, message: Bytes) {
    state(ctx).logs.lock().unwrap_or_else(|p| p.into_inner()).push((level, text(message)));
}

extern "C" fn set_error(ctx: *mut c_void, message: Bytes) {
    *state(ctx).error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text(message));
}

extern "C" fn wait_for_shutdown(ctx: *mut c_void, timeout_ms: u64) -> bool {
    let st = state(ctx);
    let mut timeout = Duration::from_millis(timeout_ms);
    if let Some(deadline) = st.deadline {
        timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
    }
    let stop = st.stop.lock().unwrap_or_else(|p| p.into_inner());
    let (mut stop, _) = st.wake.wait_timeout_while(stop, timeout, |s| !*s).unwrap_or_else(|p| p.into_inner());
    if st.deadline.is_some_and(|d| Instant::now() >= d) {
        *stop = true;
    }
    *stop
}

fn host(state: &State) -> HostApi {
    HostApi {
        struct_size: std::mem::size_of::<HostApi>(),
        abi_minor: abi::ABI_MINOR,
        ctx: std::ptr::from_ref(state).cast_mut().cast(),
        emit,
        log,
        set_error,
        wait_for_shutdown,
        saved_state: Bytes::from_slice(state.saved.as_bytes()),
        save_state,
    }
}

fn new_state(stop: Option<Stop>, saved: Option<&str>) -> State {
    State {
        events: Mutex::new(Vec::new()),
        states: Mutex::new(Vec::new()),
        saved: saved.unwrap_or_default().to_string(),
        logs: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        stop: Mutex::new(false),
        wake: Condvar::new(),
        stop_after: match stop {
            Some(Stop::AfterEvents(n)) => Some(n),
            _ => None,
        },
        deadline: match stop {
            Some(Stop::After(d)) => Some(Instant::now() + d),
            _ => None,
        },
    }
}

/// The descriptor's name.
pub fn name(d: &SourcePluginV1) -> String {
    // SAFETY: descriptors hold static NUL-terminated names.
    unsafe { CStr::from_ptr(d.name) }.to_string_lossy().into_owned()
}

/// Calls the plugin's `validate`. `Err` is what it said through `set_error`.
pub fn validate(d: &SourcePluginV1, config: serde_json::Value) -> Result<(), String> {
    let Some(validate) = d.validate else { return Ok(()) };
    let st = new_state(None, None);
    let api = host(&st);
    let json = config.to_string();
    // SAFETY: the descriptor's function follows the ABI; the config bytes and
    // the HostApi outlive the call.
    let status = unsafe { validate(Bytes::from_slice(json.as_bytes()), &api) };
    if status == abi::STATUS_OK {
        Ok(())
    } else {
        Err(st.error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| format!("status {status}")))
    }
}

/// Creates, runs and destroys one instance. Blocks until `run` returns,
/// which a well-behaved source does once told to stop.
pub fn run(d: &SourcePluginV1, config: serde_json::Value, stop: Stop) -> Outcome {
    run_with_state(d, config, None, stop)
}

/// Like [`run`], with the state a previous run saved (see
/// [`crate::Context::saved_state`]).
pub fn run_with_state(d: &SourcePluginV1, config: serde_json::Value, saved: Option<&str>, stop: Stop) -> Outcome {
    let st = new_state(Some(stop), saved);
    let api = host(&st);
    let json = config.to_string();
    // SAFETY: as in `validate`; the HostApi and state outlive `destroy`.
    let instance = unsafe { (d.create)(Bytes::from_slice(json.as_bytes()), &api) };
    let status = if instance.is_null() {
        abi::STATUS_ERROR
    } else {
        // SAFETY: `instance` came from this descriptor's `create`; `run`
        // and `destroy` are each called once, in order.
        let status = unsafe { (d.run)(instance) };
        // SAFETY: as above.
        unsafe { (d.destroy)(instance) };
        status
    };
    Outcome {
        events: st.events.into_inner().unwrap_or_else(|p| p.into_inner()),
        logs: st.logs.into_inner().unwrap_or_else(|p| p.into_inner()),
        status,
        error: st.error.into_inner().unwrap_or_else(|p| p.into_inner()),
        states: st.states.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}
