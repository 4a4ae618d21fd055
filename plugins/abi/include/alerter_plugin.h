/* The alerter source plugin ABI, version 1. Generated from plugins/abi/src/lib.rs by cbindgen;
 * do not edit. See docs/plugins.md. */

#ifndef ALERTER_PLUGIN_H
#define ALERTER_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The symbol every version-1 plugin exports. */
#define ALERTER_ENTRY_SYMBOL "alerter_source_plugin_v1"

// The major version; a change renames the entry symbol.
#define ALERTER_ABI_MAJOR 1

// The minor version: fields appended to the structs below.
// 1.1 added `saved_state` and `save_state` to [`HostApi`].
#define ALERTER_ABI_MINOR 1

// `log` levels.
#define ALERTER_LOG_ERROR 1

#define ALERTER_LOG_WARN 2

#define ALERTER_LOG_INFO 3

#define ALERTER_LOG_DEBUG 4

// Borrowed bytes: valid only for the duration of the call they are passed to.
typedef struct AlerterBytes {
  const uint8_t *ptr;
  size_t len;
} AlerterBytes;

// A status code. An integer rather than an enum, because a value the
// reader does not know must not be undefined behaviour.
typedef int32_t AlerterStatus;

// The host's side of the contract, passed to `validate` and `create`.
// Valid until `destroy` returns; every function is thread-safe.
typedef struct AlerterHostApi {
  // `size_of::<HostApi>()` as the host built it.
  size_t struct_size;
  // The host's `ABI_MINOR`.
  uint32_t abi_minor;
  // Opaque; pass it back to every callback.
  void *ctx;
  // Hands one event (UTF-8 JSON) to the host. Never blocks: returns
  // `STATUS_OK`, `STATUS_BACKPRESSURE` (dropped) or `STATUS_SHUTTING_DOWN`.
  AlerterStatus (*emit)(void *ctx, struct AlerterBytes event_json);
  // Writes a line to the daemon's log at a `LOG_*` level.
  void (*log)(void *ctx, uint32_t level, struct AlerterBytes message);
  // Says why the current call failed (UTF-8 text, or JSON
  // `{"errors":[{"path":"a.b","message":"..."}]}` to point at config keys).
  void (*set_error)(void *ctx, struct AlerterBytes message);
  // Sleeps up to `timeout_ms`, waking early when the host wants the
  // plugin to stop. Returns true when it should stop.
  bool (*wait_for_shutdown)(void *ctx, uint64_t timeout_ms);
  // The state this source last saved with `save_state` (UTF-8 JSON) as
  // far as the daemon has handled it, or empty the first time. Valid
  // until `destroy` returns.
  struct AlerterBytes saved_state;
  // Saves the source's progress (UTF-8 JSON, such as file offsets). The
  // daemon commits it in the same transaction as the effects of every
  // event emitted before it, so after a crash `saved_state` matches
  // exactly the events that were handled: resume from it and nothing is
  // lost or repeated. Never blocks: returns `STATUS_OK`,
  // `STATUS_BACKPRESSURE` (not taken: save again later) or
  // `STATUS_SHUTTING_DOWN`.
  AlerterStatus (*save_state)(void *ctx, struct AlerterBytes state_json);
} AlerterHostApi;

// The static descriptor a plugin's entry symbol returns.
typedef struct AlerterSourcePluginV1 {
  // `size_of::<SourcePluginV1>()` as the plugin built it.
  size_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  // The source type admins write in `type:`: NUL-terminated, static,
  // lowercase letters, digits, `_` and `-`.
  const char *name;
  // The plugin's own version: NUL-terminated, static.
  const char *version;
  // One line for `alerter plugins`: NUL-terminated, static; may be null.
  const char *description;
  // A JSON Schema of the plugin's configuration, or empty.
  struct AlerterBytes config_schema;
  // Checks a configuration without side effects (no files, sockets or
  // threads), for `alerter check`. May be null.
  AlerterStatus (*validate)(struct AlerterBytes config_json, const struct AlerterHostApi *host);
  // Creates an instance; null on failure (with `set_error`), and then
  // `destroy` is not called.
  void *(*create)(struct AlerterBytes config_json, const struct AlerterHostApi *host);
  // Runs until told to stop (see `wait_for_shutdown`) or until it fails.
  AlerterStatus (*run)(void *instance);
  // Asks a running instance to return from `run` soon; called from
  // another thread. May be null.
  void (*request_stop)(void *instance);
  // Frees an instance after `run` returned.
  void (*destroy)(void *instance);
} AlerterSourcePluginV1;

// The type of the entry symbol. The host passes its `ABI_MINOR`; a plugin
// that needs a newer host returns null.
typedef const struct AlerterSourcePluginV1 *(*AlerterEntryFn)(uint32_t host_abi_minor);

// Success.
#define ALERTER_STATUS_OK 0

// A failure; the plugin said why through `set_error`.
#define ALERTER_STATUS_ERROR 1

// The configuration is not acceptable; the plugin said why through `set_error`.
#define ALERTER_STATUS_INVALID_CONFIG 2

// `emit`: the host's queue for this source is full and the event was dropped.
#define ALERTER_STATUS_BACKPRESSURE 3

// `emit`: the host is stopping the plugin; `run` should return soon.
#define ALERTER_STATUS_SHUTTING_DOWN 4

// A panic was caught inside the plugin; the plugin said what through `set_error`.
#define ALERTER_STATUS_PANICKED 5

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The entry symbol, as a C prototype for plugin authors. The host never
// links against it; it looks it up in each plugin with `dlsym`.
extern const struct AlerterSourcePluginV1 *alerter_source_plugin_v1(uint32_t host_abi_minor);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ALERTER_PLUGIN_H */
