/* Status names, the thread-local error message, and kernel names for messages/dumps. */
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local mtiart_status tl_last_status;
static _Thread_local char tl_message[1024];
static _Thread_local char tl_kernel_message[512];
static _Thread_local bool tl_kernel_message_set;

typedef struct status_entry {
    mtiart_status status;
    const char *name;
    const char *text;
} status_entry;

static const status_entry status_table[] = {
    {MTIART_SUCCESS, "MTIART_SUCCESS", "success"},
    {MTIART_NOT_READY, "MTIART_NOT_READY", "work is still pending"},
    {MTIART_ERROR_INVALID_VALUE, "MTIART_ERROR_INVALID_VALUE", "invalid argument"},
    {MTIART_ERROR_INVALID_HANDLE, "MTIART_ERROR_INVALID_HANDLE",
     "invalid handle (NULL, destroyed or of another kind)"},
    {MTIART_ERROR_INVALID_DEVICE, "MTIART_ERROR_INVALID_DEVICE", "invalid device index"},
    {MTIART_ERROR_OUT_OF_MEMORY, "MTIART_ERROR_OUT_OF_MEMORY", "out of device memory"},
    {MTIART_ERROR_INVALID_POINTER, "MTIART_ERROR_INVALID_POINTER",
     "pointer is not live device memory"},
    {MTIART_ERROR_KERNEL_FAILED, "MTIART_ERROR_KERNEL_FAILED",
     "a kernel or host function failed"},
    {MTIART_ERROR_NOT_PERMITTED, "MTIART_ERROR_NOT_PERMITTED", "operation not permitted here"},
    {MTIART_ERROR_CAPTURE_UNSUPPORTED, "MTIART_ERROR_CAPTURE_UNSUPPORTED",
     "operation not permitted while a stream is capturing"},
    {MTIART_ERROR_CAPTURE_INVALIDATED, "MTIART_ERROR_CAPTURE_INVALIDATED",
     "the capture was invalidated"},
    {MTIART_ERROR_CAPTURE_UNJOINED, "MTIART_ERROR_CAPTURE_UNJOINED",
     "a stream forked into the capture was not joined back"},
    {MTIART_ERROR_CAPTURE_WRONG_STREAM, "MTIART_ERROR_CAPTURE_WRONG_STREAM",
     "capture ended on a stream other than the one that began it"},
    {MTIART_ERROR_CAPTURE_ISOLATION, "MTIART_ERROR_CAPTURE_ISOLATION",
     "operation would merge two captures or mix captured and uncaptured work"},
    {MTIART_ERROR_NOT_CAPTURING, "MTIART_ERROR_NOT_CAPTURING", "the stream is not capturing"},
    {MTIART_ERROR_ALREADY_CAPTURING, "MTIART_ERROR_ALREADY_CAPTURING",
     "the stream is already capturing"},
    {MTIART_ERROR_NOT_SUPPORTED, "MTIART_ERROR_NOT_SUPPORTED", "not supported"},
    {MTIART_ERROR_LOAD_FAILED, "MTIART_ERROR_LOAD_FAILED", "library or symbol not found"},
    {MTIART_ERROR_INTERNAL, "MTIART_ERROR_INTERNAL", "internal error"},
};

static const status_entry *find_status(mtiart_status status) {
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].status == status) return &status_table[i];
    return NULL;
}

MTIART_API const char *mtiart_status_name(mtiart_status status) {
    const status_entry *e = find_status(status);
    return e ? e->name : "MTIART_ERROR_UNKNOWN";
}

MTIART_API const char *mtiart_status_string(mtiart_status status) {
    const status_entry *e = find_status(status);
    return e ? e->text : "unknown status code";
}

MTIART_API const char *mtiart_last_error_message(void) { return tl_message; }

MTIART_API mtiart_status mtiart_last_error(void) { return tl_last_status; }

MTIART_API void mtiart_clear_last_error(void) {
    tl_last_status = MTIART_SUCCESS;
    tl_message[0] = '\0';
}

mtiart_status mtiart__set_error(mtiart_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_message, sizeof tl_message, fmt, ap);
    va_end(ap);
    tl_last_status = status;
    return status;
}

mtiart_status mtiart__set_error_text(mtiart_status status, const char *text) {
    snprintf(tl_message, sizeof tl_message, "%s", text);
    tl_last_status = status;
    return status;
}

MTIART_API void mtiart_kernel_set_error_message(const char *message) {
    snprintf(tl_kernel_message, sizeof tl_kernel_message, "%s", message ? message : "");
    tl_kernel_message_set = true;
}

const char *mtiart__take_kernel_message(void) {
    if (!tl_kernel_message_set) return NULL;
    tl_kernel_message_set = false;
    return tl_kernel_message;
}

/* Kernel names: a small registry (user-given names win), then the dynamic symbol. */
typedef struct kernel_name {
    mtiart_kernel_fn fn;
    char *name;
} kernel_name;

static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;
static kernel_name *names;
static size_t num_names, cap_names;

MTIART_API mtiart_status mtiart_kernel_set_name(mtiart_kernel_fn kernel, const char *name) {
    if (!kernel || !name) return mtiart__set_error(MTIART_ERROR_INVALID_VALUE,
                                                   "mtiart_kernel_set_name: NULL argument");
    char *copy = strdup(name);
    if (!copy) return mtiart__set_error(MTIART_ERROR_OUT_OF_MEMORY, "out of host memory");
    pthread_mutex_lock(&names_lock);
    for (size_t i = 0; i < num_names; i++) {
        if (names[i].fn == kernel) {
            free(names[i].name);
            names[i].name = copy;
            pthread_mutex_unlock(&names_lock);
            return MTIART_SUCCESS;
        }
    }
    if (num_names == cap_names) {
        size_t cap = cap_names ? cap_names * 2 : 16;
        kernel_name *grown = realloc(names, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&names_lock);
            free(copy);
            return mtiart__set_error(MTIART_ERROR_OUT_OF_MEMORY, "out of host memory");
        }
        names = grown;
        cap_names = cap;
    }
    names[num_names++] = (kernel_name){kernel, copy};
    pthread_mutex_unlock(&names_lock);
    return MTIART_SUCCESS;
}

void mtiart__kernel_name(mtiart_kernel_fn fn, char *out, size_t cap) {
    pthread_mutex_lock(&names_lock);
    for (size_t i = 0; i < num_names; i++) {
        if (names[i].fn == fn) {
            snprintf(out, cap, "%s", names[i].name);
            pthread_mutex_unlock(&names_lock);
            return;
        }
    }
    pthread_mutex_unlock(&names_lock);
    Dl_info info;
    /* dladdr finds exported symbols only; static kernels fall back to their address. */
    union { mtiart_kernel_fn fn; void *p; } cast = {.fn = fn};
    if (dladdr(cast.p, &info) && info.dli_sname && info.dli_saddr == cast.p)
        snprintf(out, cap, "%s", info.dli_sname);
    else
        snprintf(out, cap, "kernel@%p", cast.p);
}

MTIART_API mtiart_status mtiart_kernel_load(const char *library_path, const char *symbol,
                                            mtiart_kernel_fn *kernel) {
    if (!library_path || !symbol || !kernel)
        return mtiart__set_error(MTIART_ERROR_INVALID_VALUE, "mtiart_kernel_load: NULL argument");
    void *lib = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        return mtiart__set_error(MTIART_ERROR_LOAD_FAILED, "cannot load '%s': %s", library_path,
                                 why ? why : "unknown error");
    }
    dlerror();
    void *sym = dlsym(lib, symbol);
    const char *why = dlerror();
    if (!sym || why) {
        /* The message first: dlclose frees the string dlerror returned. */
        mtiart_status st = mtiart__set_error(MTIART_ERROR_LOAD_FAILED,
                                             "symbol '%s' not found in '%s'%s%s", symbol,
                                             library_path, why ? ": " : "", why ? why : "");
        /* Dropping our reference keeps the process clean when the lookup fails. */
        dlclose(lib);
        return st;
    }
    union { void *p; mtiart_kernel_fn fn; } cast = {.p = sym};
    *kernel = cast.fn;
    mtiart_kernel_set_name(cast.fn, symbol);
    return MTIART_SUCCESS;
}
