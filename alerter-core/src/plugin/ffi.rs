//! The C ABI boundary: loading `.so` plugins and calling their entry points.
//!
//! This is the only module of alerter-core with `unsafe` code. It loads a
//! shared object with immediate symbol binding (`RTLD_NOW | RTLD_LOCAL`, so
//! a missing symbol fails at load rather than at some later call), checks
//! the descriptor (ABI major and minor, descriptor size, name), and never
//! unloads a library: a plugin's threads, thread-locals and static
//! descriptor may outlive any call, so its code must stay mapped.
//!
//! It also implements the host side of the callbacks ([`Host`]): events and
//! log lines go to a [`Sink`], shutdown is a flag with a condition variable.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use alerter_plugin_abi::{self as abi, Bytes, EntryFn, HostApi, SourcePluginV1, Status};

use super::protocol::{ConfigProblem, parse_errors};

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load: {0}")]
    Dlopen(String),
    #[error("missing entry symbol `{symbol}`: not an alerter source plugin")]
    MissingSymbol { symbol: &'static str },
    #[error("wrong ABI version: built for ABI {major}.x, this alerter speaks {}.{}", abi::ABI_MAJOR, abi::ABI_MINOR)]
    WrongAbi { major: u32, minor: u32 },
    #[error("the plugin needs a newer alerter (it refused ABI {}.{})", abi::ABI_MAJOR, abi::ABI_MINOR)]
    Refused,
    #[error(
        "descriptor too small ({size} bytes, at least {} expected): not built against this ABI",
        abi::SOURCE_PLUGIN_V1_0_SIZE
    )]
    TooSmall { size: usize },
    #[error("bad plugin name {0:?}: use lowercase letters, digits, `_` and `-`")]
    BadName(String),
}

/// A checked descriptor: a loaded (and never unloaded) plugin.
#[derive(Clone, Copy)]
pub struct Descriptor {
    raw: &'static SourcePluginV1,
}

impl std::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Descriptor({} {})", self.name(), self.version())
    }
}

fn static_str(p: *const std::ffi::c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // SAFETY: the ABI requires descriptor strings to be static and
    // NUL-terminated; the library is never unloaded, so 'static holds.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Descriptor {
    /// Checks a descriptor (of a built-in plugin, or one just loaded).
    pub fn check(raw: &'static SourcePluginV1) -> Result<Descriptor, LoadError> {
        if raw.struct_size < abi::SOURCE_PLUGIN_V1_0_SIZE {
            return Err(LoadError::TooSmall { size: raw.struct_size });
        }
        if raw.abi_major != abi::ABI_MAJOR {
            return Err(LoadError::WrongAbi { major: raw.abi_major, minor: raw.abi_minor });
        }
        let d = Descriptor { raw };
        if !valid_name(d.name()) {
            return Err(LoadError::BadName(d.name().to_string()));
        }
        Ok(d)
    }

    pub fn name(&self) -> &'static str {
        static_str(self.raw.name)
    }

    pub fn version(&self) -> &'static str {
        static_str(self.raw.version)
    }

    pub fn description(&self) -> &'static str {
        static_str(self.raw.description)
    }

    pub fn abi(&self) -> String {
        format!("{}.{}", self.raw.abi_major, self.raw.abi_minor)
    }
}

/// Loads a plugin from a shared object and returns its checked descriptor.
///
/// Loading runs the library's initialisers, which is running its code:
/// callers check ownership and permissions first (see `discover`), and the
/// daemon does this only in a plugin-host child unless a source opts into
/// running in-process.
pub fn load(path: &Path) -> Result<Descriptor, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading a library runs its initialisers; the file has passed
    // the ownership and permission checks, and this is the documented risk
    // of a plugin system. The library is leaked below and never unloaded.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        let detail = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.to_string());
        LoadError::Dlopen(detail)
    })?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol, if present, is the ABI's entry function, whose
    // type is EntryFn by contract.
    let entry = match unsafe { lib.get::<EntryFn>(c"alerter_source_plugin_v1") } {
        Ok(sym) => *sym,
        Err(_) => {
            // A plugin for a later major version exports a later symbol; say
            // so rather than "not a plugin".
            for major in 2..=9u32 {
                let name = format!("alerter_source_plugin_v{major}\0");
                // SAFETY: only probing for presence; the symbol is not called.
                if unsafe { lib.get::<*const c_void>(name.as_bytes()) }.is_ok() {
                    return Err(LoadError::WrongAbi { major, minor: 0 });
                }
            }
            return Err(LoadError::MissingSymbol { symbol: abi::ENTRY_SYMBOL });
        }
    };
    // SAFETY: calling the entry function per the ABI; it returns a pointer to
    // a static descriptor or null.
    let raw = unsafe { entry(abi::ABI_MINOR) };
    if raw.is_null() {
        return Err(LoadError::Refused);
    }
    // SAFETY: a non-null entry result points to a static descriptor; the
    // library stays loaded for the life of the process. Only the 1.0 prefix
    // of the struct is read, and struct_size is checked before trusting it.
    let raw: &'static SourcePluginV1 = unsafe { &*raw };
    Descriptor::check(raw)
}

/// Where a running plugin's events and log lines go.
pub trait Sink: Send + Sync {
    /// One event as wire JSON. Must not block.
    fn emit(&self, json: &str) -> EmitResult;
    fn log(&self, level: u32, message: &str);
    /// The source's progress (JSON), ordered after the events before it.
    /// Must not block.
    fn save_state(&self, json: &str) -> EmitResult;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitResult {
    Ok,
    /// The queue is full; the event was dropped (and counted by the sink).
    Backpressure,
    ShuttingDown,
}

struct HostInner {
    sink: Arc<dyn Sink>,
    stop: Mutex<bool>,
    wake: Condvar,
    error: Mutex<Option<String>>,
    /// The running instance, for `request_stop`.
    instance: AtomicPtr<c_void>,
    /// What `HostApi::saved_state` points to.
    saved: Box<[u8]>,
}

/// The host side of the ABI for one plugin instance.
pub struct Host {
    inner: Arc<HostInner>,
    api: Box<HostApi>,
}

// SAFETY: HostApi holds a pointer to the Arc'd HostInner (Send + Sync) and
// function pointers; all access through it is synchronised.
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

fn inner<'a>(ctx: *mut c_void) -> &'a HostInner {
    // SAFETY: ctx is the HostInner of a Host, which outlives every call the
    // plugin makes (the Host is dropped only after `destroy`).
    unsafe { &*ctx.cast::<HostInner>() }
}

fn bytes_to_string(b: Bytes) -> String {
    if b.ptr.is_null() || b.len == 0 {
        return String::new();
    }
    // SAFETY: the plugin passes bytes valid for the duration of the call.
    let slice = unsafe { std::slice::from_raw_parts(b.ptr, b.len) };
    String::from_utf8_lossy(slice).into_owned()
}

extern "C" fn cb_emit(ctx: *mut c_void, json: Bytes) -> Status {
    let h = inner(ctx);
    if *h.stop.lock().unwrap_or_else(|p| p.into_inner()) {
        return abi::STATUS_SHUTTING_DOWN;
    }
    match h.sink.emit(&bytes_to_string(json)) {
        EmitResult::Ok => abi::STATUS_OK,
        EmitResult::Backpressure => abi::STATUS_BACKPRESSURE,
        EmitResult::ShuttingDown => abi::STATUS_SHUTTING_DOWN,
    }
}

extern "C" fn cb_save_state(ctx: *mut c_void, json: Bytes) -> Status {
    // Unlike events, states are taken while stopping: they record progress
    // already made, and a source saves its last one on its way out.
    let h = inner(ctx);
    match h.sink.save_state(&bytes_to_string(json)) {
        EmitResult::Ok => abi::STATUS_OK,
        EmitResult::Backpressure => abi::STATUS_BACKPRESSURE,
        EmitResult::ShuttingDown => abi::STATUS_SHUTTING_DOWN,
    }
}

extern "C" fn cb_log(ctx: *mut c_void, level: u32, message: Bytes) {
    inner(ctx).sink.log(level, &bytes_to_string(message));
}

extern "C" fn cb_set_error(ctx: *mut c_void, message: Bytes) {
    *inner(ctx).error.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes_to_string(message));
}

extern "C" fn cb_wait_for_shutdown(ctx: *mut c_void, timeout_ms: u64) -> bool {
    let h = inner(ctx);
    let stop = h.stop.lock().unwrap_or_else(|p| p.into_inner());
    let (stop, _) =
        h.wake.wait_timeout_while(stop, Duration::from_millis(timeout_ms), |s| !*s).unwrap_or_else(|p| p.into_inner());
    *stop
}

impl Host {
    pub fn new(sink: Arc<dyn Sink>) -> Host {
        Host::with_state(sink, None)
    }

    /// A host that gives the plugin `saved` as its saved state.
    pub fn with_state(sink: Arc<dyn Sink>, saved: Option<String>) -> Host {
        let inner = Arc::new(HostInner {
            sink,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            error: Mutex::new(None),
            instance: AtomicPtr::new(std::ptr::null_mut()),
            saved: saved.unwrap_or_default().into_bytes().into_boxed_slice(),
        });
        let api = Box::new(HostApi {
            struct_size: std::mem::size_of::<HostApi>(),
            abi_minor: abi::ABI_MINOR,
            ctx: Arc::as_ptr(&inner).cast_mut().cast(),
            emit: cb_emit,
            log: cb_log,
            set_error: cb_set_error,
            wait_for_shutdown: cb_wait_for_shutdown,
            // Points into `inner`, which the Host keeps alive as long as the api.
            saved_state: Bytes::from_slice(&inner.saved),
            save_state: cb_save_state,
        });
        Host { inner, api }
    }

    /// Tells the plugin to stop: `wait_for_shutdown` returns true from now
    /// on, `emit` says shutting down, and the plugin's `request_stop` (if it
    /// has one) is called.
    pub fn request_stop(&self, d: &Descriptor) {
        *self.inner.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.wake.notify_all();
        let instance = self.inner.instance.load(Ordering::Acquire);
        if let (Some(stop), false) = (d.raw.request_stop, instance.is_null()) {
            // SAFETY: `instance` is live (it is cleared before destroy) and the
            // ABI allows request_stop from another thread while run is active.
            unsafe { stop(instance) };
        }
    }

    fn take_error(&self) -> Option<String> {
        self.inner.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A sink for calls that must not emit (validation).
struct NoEmit;

impl Sink for NoEmit {
    fn emit(&self, _: &str) -> EmitResult {
        EmitResult::ShuttingDown
    }
    fn save_state(&self, _: &str) -> EmitResult {
        EmitResult::ShuttingDown
    }
    fn log(&self, _: u32, _: &str) {}
}

/// Runs the plugin's pure `validate` on a configuration.
pub fn validate(d: &Descriptor, config_json: &str) -> Result<(), Vec<ConfigProblem>> {
    let Some(validate) = d.raw.validate else { return Ok(()) };
    let host = Host::new(Arc::new(NoEmit));
    // SAFETY: calling the plugin per the ABI; the config bytes and the
    // HostApi outlive the call.
    let status = unsafe { validate(Bytes::from_slice(config_json.as_bytes()), &*host.api) };
    if status == abi::STATUS_OK {
        return Ok(());
    }
    let text = host.take_error().unwrap_or_else(|| format!("the plugin rejected the configuration (status {status})"));
    Err(if status == abi::STATUS_PANICKED {
        vec![ConfigProblem { path: None, message: text }]
    } else {
        parse_errors(&text)
    })
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// `run` returned OK (after being told to stop, normally).
    Stopped,
    /// `create` failed.
    CreateFailed(String),
    /// `run` returned an error.
    Failed(String),
    /// A panic was caught inside the plugin.
    Panicked(String),
}

/// Creates, runs and destroys one instance on the calling thread; returns
/// when `run` does. Another thread stops it with [`Host::request_stop`].
pub fn run(d: &Descriptor, config_json: &str, host: &Host) -> RunEnd {
    // SAFETY: calling the plugin per the ABI; the HostApi lives in `host`,
    // which outlives destroy.
    let instance = unsafe { (d.raw.create)(Bytes::from_slice(config_json.as_bytes()), &*host.api) };
    if instance.is_null() {
        let text = host.take_error().unwrap_or_else(|| "create failed without saying why".to_string());
        let problems = parse_errors(&text);
        let msg = problems
            .iter()
            .map(|p| match &p.path {
                Some(path) => format!("{path}: {}", p.message),
                None => p.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return RunEnd::CreateFailed(msg);
    }
    host.inner.instance.store(instance, Ordering::Release);
    // SAFETY: `instance` came from this plugin's create; run is called once.
    let status = unsafe { (d.raw.run)(instance) };
    host.inner.instance.store(std::ptr::null_mut(), Ordering::Release);
    let error = host.take_error();
    // SAFETY: destroy once, after run returned.
    unsafe { (d.raw.destroy)(instance) };
    match status {
        abi::STATUS_OK => RunEnd::Stopped,
        abi::STATUS_PANICKED => RunEnd::Panicked(error.unwrap_or_else(|| "panic".into())),
        other => RunEnd::Failed(error.unwrap_or_else(|| format!("run failed with status {other}"))),
    }
}
