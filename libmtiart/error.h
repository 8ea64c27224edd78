/*
 * Error reporting inside libmtiart (internal, not installed): the calling thread's error
 * message, the public-call scope that names it, and the checks every file shares.
 *
 * Convention: every message starts with the name of the public function the user called
 * (the outermost one: mtiart_op_binary, not the mtiart_launch_kernel it calls), followed
 * by ": " and the detail. Public functions open a scope with MT_API_ENTRY() as their first
 * statement; mt_set_error adds the prefix, so format strings never name the function.
 */
#ifndef MTIART_ERROR_H
#define MTIART_ERROR_H

#include "mtiart.h"

#include <stdbool.h>
#include <stddef.h>

#define MT_LIKELY(x) __builtin_expect(!!(x), 1)
#define MT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Store the calling thread's error ("<public function>: <fmt...>") and return `status`. */
mtiart_status mt_set_error(mtiart_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Put context in front of the detail of the error just set on this thread:
 * "<function>: <detail>" becomes "<function>: <context>: <detail>". Returns its status. */
mtiart_status mt_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The out-of-host-memory error; MT_CHECK_ALLOC returns it from the calling function when
 * an allocation gave NULL (functions with something to undo use mt_oom() on their way
 * out instead). */
mtiart_status mt_oom(void);
#define MT_CHECK_ALLOC(ptr)                                                                        \
    do {                                                                                           \
        if (MT_UNLIKELY((ptr) == NULL)) return mt_oom();                                           \
    } while (0)

/* Return MTIART_ERROR_INVALID_VALUE ("<arg> is NULL") from the calling function when a
 * required pointer argument (an out-parameter, most often) is NULL. */
#define MT_CHECK_NOT_NULL(arg)                                                                     \
    do {                                                                                           \
        if (MT_UNLIKELY((arg) == NULL))                                                            \
            return mt_set_error(MTIART_ERROR_INVALID_VALUE, "%s is NULL", #arg);                   \
    } while (0)

/* ---------------------------------------------------------------- public-call scope */

/* The public function the calling thread is in (NULL outside libmtiart). Initial-exec TLS:
 * one instruction to reach, which matters on the enqueue path; the variable is a single
 * pointer, so it fits the static TLS space glibc keeps for libraries loaded by dlopen. */
extern __thread const char *mt_api_name __attribute__((tls_model("initial-exec")));

static inline const char *mt_api_enter(const char *name) {
    if (mt_api_name) return NULL; /* a public call made by another: the outer name stays */
    mt_api_name = name;
    return name;
}

static inline void mt_api_leave(const char *const *entered) {
    if (*entered) mt_api_name = NULL;
}

/* Set in a child of a process that had initialised the runtime (device.c): the workers and
 * every lock holder stayed in the parent, so nothing of the runtime may be used here. */
extern bool mt_forked_child;
/* NOT_PERMITTED, saying why (device.c). */
mtiart_status mt_refuse_forked(void) __attribute__((cold, noinline));

/* First statement of every public function returning an mtiart_status: names the errors set
 * until it returns, and refuses every call in a forked child before it touches anything (a
 * lock the parent's threads held at the fork would never be released). */
#define MT_API_ENTRY()                                                                             \
    const char *const mt_api_entered_ __attribute__((cleanup(mt_api_leave), unused)) =             \
        mt_api_enter(__func__);                                                                    \
    if (MT_UNLIKELY(mt_forked_child)) return mt_refuse_forked()

/* Leave the public-call scope around a call out to user code (an out-of-memory observer):
 * the public calls it makes name their own errors. Returns what mt_api_resume takes. */
static inline const char *mt_api_suspend(void) {
    const char *name = mt_api_name;
    mt_api_name = NULL;
    return name;
}

static inline void mt_api_resume(const char *name) { mt_api_name = name; }

#endif /* MTIART_ERROR_H */
