/* C code compiled into the mtia_graph._mtiart cffi extension after the generated
 * wrappers' `#include "mtiart.h"`; declared to cffi in _cdef_extra.h.
 *
 * Each helper replaces a sequence of Python-level cffi calls on a hot path with one call
 * that allocates nothing: a Python out-parameter (ffi.new) costs as much as the call it
 * serves. cffi releases the GIL around most calls (not those _cdef_extra.h marks as
 * keeping it), so state between calls is thread-local (C11 _Thread_local, one per OS
 * thread and so per Python thread), never shared. */

/* The status of the calling thread's last failed helper call (see _mtia_malloc_async). */
static _Thread_local mtiart_status mtia_helper_status;

/* The id of the capture `stream` takes part in (active or invalidated), 0 if none, or the
 * (negative) status of the failed query. Capture ids count up from 1 and stay far below
 * 2**63, so no id reads as a status. */
static int64_t _mtia_capture_id(mtiart_stream stream) {
    uint64_t id = 0;
    mtiart_status st = mtiart_stream_get_capture_info(stream, NULL, &id, NULL);
    return st < 0 ? (int64_t)st : (int64_t)id;
}

/* mtiart_malloc_async's block, or NULL after a failure, whose status
 * _mtia_helper_status() then returns (on the same thread). */
static void *_mtia_malloc_async(mtiart_stream stream, size_t nbytes) {
    void *ptr = NULL;
    mtiart_status st = mtiart_malloc_async(stream, nbytes, &ptr);
    if (st < 0) {
        mtia_helper_status = st;
        return NULL;
    }
    return ptr;
}

static mtiart_status _mtia_helper_status(void) { return mtia_helper_status; }

/* The calling thread's current stream of each device, as mtia_graph.streams last made it
 * (_mtia_set_current_stream), for the helpers that take a device index rather than a stream:
 * reading the handle from the Python thread-local costs a tenth of an add_. It belongs to
 * one Python thread state: a C thread that enters Python anew (PyGILState_Ensure) gets a
 * new one, whose current streams start as the defaults again, so an entry recorded under
 * another state is no entry. Touched only with the GIL held (keeps-the-GIL wrappers). */
#define MTIA_CURRENT_DEVICES 64
#define MTIA_NO_CURRENT_STREAM 1
static _Thread_local struct {
    uint64_t thread_state; /* PyThreadState_GetID of the state that recorded them; 0: none */
    mtiart_stream streams[MTIA_CURRENT_DEVICES];
} mtia_current;

static void _mtia_set_current_stream(int device, mtiart_stream stream) {
    uint64_t id = PyThreadState_GetID(PyThreadState_Get());
    if (mtia_current.thread_state != id) {
        memset(&mtia_current, 0, sizeof mtia_current);
        mtia_current.thread_state = id;
    }
    if (device >= 0 && device < MTIA_CURRENT_DEVICES) mtia_current.streams[device] = stream;
}

/* The calling thread's current stream on `device`, or NULL: none recorded for its thread
 * state (mtia_graph.streams records it when the thread first uses a stream). */
static mtiart_stream mtia_current_stream(int device) {
    if (device < 0 || device >= MTIA_CURRENT_DEVICES ||
        mtia_current.thread_state != PyThreadState_GetID(PyThreadState_Get()))
        return NULL;
    return mtia_current.streams[device];
}

/* In place `t += value` for a tensor of a floating dtype on the current stream of `device`
 * (Tensor.add_ of a number); MTIA_NO_CURRENT_STREAM, nothing done, when none is recorded. */
static mtiart_status _mtia_add_scalar_float(int device, const mtiart_tensor_desc *t, double value) {
    mtiart_stream stream = mtia_current_stream(device);
    if (!stream) return MTIA_NO_CURRENT_STREAM;
    return mtiart_op_binary_scalar(stream, MTIART_BINARY_ADD, t, t, value, 0, 0);
}
