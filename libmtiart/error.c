/* Status names, and the calling thread's error: its status, its message, and the public
 * call that names it (see error.h for the message convention). */
#include "internal.h"

#include <stdio.h>

__thread const char *mt_api_name __attribute__((tls_model("initial-exec")));
static _Thread_local mtiart_status tl_last_status;
static _Thread_local char tl_message[1024];

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
    {MTIART_ERROR_KERNEL_FAILED, "MTIART_ERROR_KERNEL_FAILED", "a kernel or host function failed"},
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

/* Room left in tl_message after `used` characters (vsnprintf reports what it wanted). */
static size_t room_after(size_t *used) {
    if (*used >= sizeof tl_message) *used = sizeof tl_message - 1;
    return sizeof tl_message - *used;
}

/* The public function's prefix, "<name>: ", at the start of tl_message; its length. */
static size_t put_prefix(void) {
    if (!mt_api_name) return 0;
    int n = snprintf(tl_message, sizeof tl_message, "%s: ", mt_api_name);
    size_t used = n > 0 ? (size_t)n : 0;
    room_after(&used);
    return used;
}

mtiart_status mt_set_error(mtiart_status status, const char *fmt, ...) {
    size_t used = put_prefix();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_message + used, room_after(&used), fmt, ap);
    va_end(ap);
    tl_last_status = status;
    return status;
}

mtiart_status mt_error_context(const char *fmt, ...) {
    size_t skip = 0;
    if (mt_api_name) {
        size_t len = strlen(mt_api_name);
        if (strncmp(tl_message, mt_api_name, len) == 0 && tl_message[len] == ':') skip = len + 2;
    }
    char detail[sizeof tl_message], context[256];
    snprintf(detail, sizeof detail, "%s", tl_message + skip);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    return mt_set_error(tl_last_status, "%s: %s", context, detail);
}

mtiart_status mt_oom(void) {
    return mt_set_error(MTIART_ERROR_OUT_OF_MEMORY, "out of host memory");
}
