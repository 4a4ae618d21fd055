//! The `extern "C"` functions behind a plugin's descriptor.
//!
//! Every shim catches panics: a panic must never unwind across the C ABI
//! (it would abort the host process), so it becomes `STATUS_PANICKED` and a
//! message through `set_error`. The panic payload is leaked rather than
//! dropped, because its `Drop` could panic again.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::abi::{self, Bytes, HostApi, SourcePluginV1, Status};
use crate::{Context, Error, Source};

/// The static descriptor of source type `T`. `version` is NUL-terminated.
pub const fn descriptor<T: Source>(version: &'static [u8]) -> SourcePluginV1 {
    SourcePluginV1 {
        struct_size: std::mem::size_of::<SourcePluginV1>(),
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        name: T::NAME.as_ptr(),
        version: version.as_ptr().cast(),
        description: T::DESCRIPTION.as_ptr(),
        config_schema: Bytes::EMPTY,
        validate: Some(validate::<T>),
        create: create::<T>,
        run: run::<T>,
        request_stop: None,
        destroy: destroy::<T>,
    }
}

/// The entry symbol's body. Every version-1 host is accepted: on a 1.0
/// host, [`Context::save_state`] reports `Unsupported` and nothing else
/// changes.
pub fn entry(descriptor: &'static SourcePluginV1, _host_abi_minor: u32) -> *const SourcePluginV1 {
    descriptor
}

struct Instance<T> {
    source: T,
    cx: Context,
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    };
    std::mem::forget(payload);
    msg
}

/// The error text for `set_error`: JSON with a path when there is one.
pub fn error_text(e: &Error) -> String {
    let entries: Vec<serde_json::Value> = e
        .list()
        .into_iter()
        .map(|e| {
            let mut entry = serde_json::Map::new();
            if let Some(p) = &e.path {
                entry.insert("path".into(), p.clone().into());
            }
            entry.insert("message".into(), e.message.clone().into());
            entry.into()
        })
        .collect();
    serde_json::json!({ "errors": entries }).to_string()
}

/// # Safety
/// `b` must be valid for reads of `b.len` bytes (or have `len` 0).
unsafe fn bytes_str<'a>(b: Bytes) -> Result<&'a str, Error> {
    if b.len == 0 || b.ptr.is_null() {
        return Ok("");
    }
    // SAFETY: the caller guarantees the bytes are readable for this call.
    let slice = unsafe { std::slice::from_raw_parts(b.ptr, b.len) };
    std::str::from_utf8(slice).map_err(|e| Error::msg(format!("configuration is not UTF-8: {e}")))
}

/// Parses the configuration, with the path of the first bad key.
fn parse<T: Source>(json: &str) -> Result<T::Config, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.inner().to_string();
        // serde_json adds where in the JSON text it was; the host shows the
        // place in the YAML instead.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        if path == "." { Error::msg(message) } else { Error::at(path, message) }
    })
}

extern "C" fn validate<T: Source>(config: Bytes, host: *const HostApi) -> Status {
    // SAFETY: the host passes a valid HostApi for the duration of the call.
    let cx = unsafe { Context::new(host) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host passes bytes valid for the duration of the call.
        let json = unsafe { bytes_str(config) }?;
        let cfg = parse::<T>(json)?;
        T::validate(&cfg)
    }));
    match result {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(e)) => {
            cx.set_error(&error_text(&e));
            abi::STATUS_INVALID_CONFIG
        }
        Err(payload) => {
            cx.set_error(&format!("panic in validate: {}", panic_message(payload)));
            abi::STATUS_PANICKED
        }
    }
}

extern "C" fn create<T: Source>(config: Bytes, host: *const HostApi) -> *mut c_void {
    // SAFETY: the host passes a HostApi valid until `destroy` returns.
    let cx = unsafe { Context::new(host) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host passes bytes valid for the duration of the call.
        let json = unsafe { bytes_str(config) }?;
        let cfg = parse::<T>(json)?;
        T::validate(&cfg)?;
        T::new(cfg, &cx)
    }));
    match result {
        Ok(Ok(source)) => Box::into_raw(Box::new(Instance { source, cx })).cast(),
        Ok(Err(e)) => {
            cx.set_error(&error_text(&e));
            std::ptr::null_mut()
        }
        Err(payload) => {
            cx.set_error(&format!("panic in new: {}", panic_message(payload)));
            std::ptr::null_mut()
        }
    }
}

extern "C" fn run<T: Source>(instance: *mut c_void) -> Status {
    if instance.is_null() {
        return abi::STATUS_ERROR;
    }
    // SAFETY: `instance` came from `create::<T>` and the host runs it once,
    // before `destroy`, so this is the only reference to it.
    let inst = unsafe { &mut *instance.cast::<Instance<T>>() };
    let cx = inst.cx;
    let result = catch_unwind(AssertUnwindSafe(|| inst.source.run(&cx)));
    match result {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(e)) => {
            cx.set_error(&e.to_string());
            abi::STATUS_ERROR
        }
        Err(payload) => {
            cx.set_error(&format!("panic in run: {}", panic_message(payload)));
            abi::STATUS_PANICKED
        }
    }
}

extern "C" fn destroy<T: Source>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `create::<T>` via Box::into_raw, and the
    // host calls destroy exactly once, after run returned.
    let boxed = unsafe { Box::from_raw(instance.cast::<Instance<T>>()) };
    let cx = boxed.cx;
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(boxed))) {
        cx.set_error(&format!("panic while dropping the source: {}", panic_message(payload)));
    }
}
