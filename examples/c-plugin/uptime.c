/*
 * An example third-party alerter plugin in C: the `uptime` source.
 *
 * Every `interval_ms` it reads /proc/uptime and emits an info event; when
 * the machine has been up less than `reboot_window_s` seconds it says
 * "rebooted" with severity warning instead. It shows the whole C ABI: the
 * static descriptor, validate/create/run/destroy, emitting JSON events and
 * waiting for shutdown through the host's callbacks.
 *
 * Build:  gcc -shared -fPIC -O2 -Wall -I ../../plugins/abi/include uptime.c -o libuptime.so
 *
 * For trying out alerter's isolation, `misbehave` makes it crash after its
 * first event: "segfault" or "abort"; "hang" ignores shutdown; "flood"
 * emits as fast as it can. A real plugin would parse its configuration with
 * a JSON library; this one looks up its few keys by hand to stay
 * dependency-free.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alerter_plugin.h"

typedef struct {
    const AlerterHostApi *host;
    long interval_ms;
    long reboot_window_s;
    char misbehave[64];
} Uptime;

static AlerterBytes text(const char *s) {
    AlerterBytes b = {(const uint8_t *)s, strlen(s)};
    return b;
}

/* The value after "key": in a flat JSON object, copied into out. */
static int json_value(AlerterBytes json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    char buf[4096];
    size_t n = json.len < sizeof buf - 1 ? json.len : sizeof buf - 1;
    memcpy(buf, json.ptr, n);
    buf[n] = 0;
    const char *p = strstr(buf, pattern);
    if (!p) return 0;
    p = strchr(p + strlen(pattern), ':');
    if (!p) return 0;
    p++;
    while (*p == ' ') p++;
    size_t i = 0;
    if (*p == '"') {
        p++;
        while (*p && *p != '"' && i + 1 < cap) out[i++] = *p++;
    } else {
        while (*p && *p != ',' && *p != '}' && *p != ' ' && i + 1 < cap) out[i++] = *p++;
    }
    out[i] = 0;
    return 1;
}

static int parse(AlerterBytes json, Uptime *u, const AlerterHostApi *host) {
    char v[64];
    u->interval_ms = 60000;
    u->reboot_window_s = 600;
    u->misbehave[0] = 0;
    if (json_value(json, "interval_ms", v, sizeof v)) u->interval_ms = atol(v);
    if (json_value(json, "reboot_window_s", v, sizeof v)) u->reboot_window_s = atol(v);
    if (json_value(json, "misbehave", v, sizeof v)) snprintf(u->misbehave, sizeof u->misbehave, "%s", v);
    if (u->interval_ms < 10) {
        host->set_error(host->ctx, text("{\"errors\":[{\"path\":\"interval_ms\",\"message\":\"must be at least 10\"}]}"));
        return 0;
    }
    if (u->misbehave[0] && strcmp(u->misbehave, "segfault") && strcmp(u->misbehave, "abort") &&
        strcmp(u->misbehave, "hang") && strcmp(u->misbehave, "flood")) {
        host->set_error(host->ctx, text("{\"errors\":[{\"path\":\"misbehave\",\"message\":\"one of segfault, abort, hang, flood\"}]}"));
        return 0;
    }
    return 1;
}

static AlerterStatus validate(AlerterBytes config, const AlerterHostApi *host) {
    Uptime u;
    return parse(config, &u, host) ? ALERTER_STATUS_OK : ALERTER_STATUS_INVALID_CONFIG;
}

static void *create(AlerterBytes config, const AlerterHostApi *host) {
    Uptime *u = calloc(1, sizeof *u);
    if (!u) {
        host->set_error(host->ctx, text("out of memory"));
        return NULL;
    }
    u->host = host;
    if (!parse(config, u, host)) {
        free(u);
        return NULL;
    }
    return u;
}

static AlerterStatus emit_uptime(Uptime *u, long seq) {
    double up = 0;
    FILE *f = fopen("/proc/uptime", "r");
    if (f) {
        if (fscanf(f, "%lf", &up) != 1) up = 0;
        fclose(f);
    }
    char event[512];
    int rebooted = up < (double)u->reboot_window_s;
    snprintf(event, sizeof event,
             "{\"v\":1,\"severity\":\"%s\",\"summary\":\"%s %.0f minutes ago\","
             "\"labels\":{\"uptime_s\":\"%.0f\",\"seq\":\"%ld\"},\"key\":\"uptime-%ld\",\"oneshot\":true}",
             rebooted ? "warning" : "info", rebooted ? "rebooted" : "up since", up / 60.0, up, seq, seq);
    return u->host->emit(u->host->ctx, text(event));
}

static AlerterStatus run(void *instance) {
    Uptime *u = instance;
    const AlerterHostApi *h = u->host;
    long seq = 0;
    if (!strcmp(u->misbehave, "flood")) {
        /* As fast as it can; the host answers BACKPRESSURE when its queue is
         * full, and this plugin does not care. */
        char event[160];
        for (;;) {
            for (int i = 0; i < 1000; i++) {
                snprintf(event, sizeof event,
                         "{\"severity\":\"warning\",\"summary\":\"flood %ld\",\"key\":\"flood\",\"oneshot\":true}", seq++);
                if (h->emit(h->ctx, text(event)) == ALERTER_STATUS_SHUTTING_DOWN) return ALERTER_STATUS_OK;
            }
            if (h->wait_for_shutdown(h->ctx, 0)) return ALERTER_STATUS_OK;
        }
    }
    do {
        emit_uptime(u, ++seq);
        if (!strcmp(u->misbehave, "segfault")) {
            volatile int *nowhere = NULL;
            *nowhere = 1;
        }
        if (!strcmp(u->misbehave, "abort")) abort();
        if (!strcmp(u->misbehave, "hang")) {
            for (;;) pause(); /* ignores shutdown on purpose */
        }
    } while (!h->wait_for_shutdown(h->ctx, (uint64_t)u->interval_ms));
    return ALERTER_STATUS_OK;
}

static void destroy(void *instance) { free(instance); }

static const AlerterSourcePluginV1 DESCRIPTOR = {
    .struct_size = sizeof(AlerterSourcePluginV1),
    .abi_major = ALERTER_ABI_MAJOR,
    .abi_minor = ALERTER_ABI_MINOR,
    .name = "uptime",
    .version = "1.0.0",
    .description = "how long the machine has been up; a warning after a reboot (example C plugin)",
    .config_schema = {NULL, 0},
    .validate = validate,
    .create = create,
    .run = run,
    .request_stop = NULL,
    .destroy = destroy,
};

const AlerterSourcePluginV1 *alerter_source_plugin_v1(uint32_t host_abi_minor) {
    (void)host_abi_minor; /* needs nothing newer than 1.0 */
    return &DESCRIPTOR;
}
