/*
 * mtiart.h - the public C API of libmtiart, an accelerator runtime on CPU threads.
 *
 * Devices, streams, events, a caching device allocator with memory pools, kernels,
 * and stream capture into graphs that are instantiated and replayed.
 *
 * Conventions
 *   - Every function returns an mtiart_status: 0 (MTIART_SUCCESS) on success,
 *     a negative code on error, MTIART_NOT_READY (1) from queries whose work is pending.
 *     Out-parameters come last and are written only on success.
 *   - After an error, mtiart_last_error_message() gives a detailed, thread-local message.
 *     It starts with the name of the public function the program called and ": "
 *     ("mtiart_op_binary: a is float32 but b is int32"); a sticky kernel error is reported
 *     by the call that synchronizes, under its own name, and says which kernel failed.
 *   - Handles are opaque. A NULL, destroyed or wrong-kind handle yields
 *     MTIART_ERROR_INVALID_HANDLE; it never crashes. A call racing the destruction of a
 *     handle it was given (on another thread) either completes as if it came first or
 *     returns MTIART_ERROR_INVALID_HANDLE: a destroy makes the handle invalid at once, and
 *     the object goes when the last call still using it returns (a destroy never waits).
 *   - Every function may be called from any thread. Functions that wait for the device
 *     (synchronize, blocking copies) must not be called from a host function or kernel
 *     running on a device worker; they return MTIART_ERROR_NOT_PERMITTED there.
 *   - In a child of fork() made after the runtime was initialised, every call (but the error,
 *     version and dtype-size queries) returns MTIART_ERROR_NOT_PERMITTED at once: the workers,
 *     and any lock another thread held, stayed in the parent. A child forked before the
 *     initialisation uses a runtime of its own as usual; so do programs started afresh.
 *   - Device memory is addressed by plain pointers. Kernels, host functions and host code
 *     may dereference them (the "device" is this process's CPU), but only work ordered on
 *     a stream sees a consistent view; host code must synchronize first.
 *
 * Configuration is read once, at initialisation, from the environment:
 *   MTIART_NUM_DEVICES    number of emulated devices (default 1, at most 64)
 *   MTIART_DEVICE_MEMORY  capacity of each device in bytes; K/M/G suffixes accepted
 *                         (default 4G)
 *   MTIART_NUM_WORKERS    worker threads per device (default: the number of online CPUs)
 *   MTIART_SPIN_US        the longest, in microseconds, an idle worker or a waiting host
 *                         thread spins before it sleeps (default 50; the workers sharing a
 *                         graph replay or a multi-block kernel wait for each other up to 4
 *                         times as long; each waiter spins only as long as its recent
 *                         waits took). 0 makes every wait block at
 *                         once, as it always does under valgrind, where spinning only
 *                         delays the other threads.
 *   MTIART_GRAPH_FUSION   1 (default) or 0: whether instantiation fuses nodes of the kernel
 *                         library (see mtiart_graph_instantiate_with_flags)
 *   MTIART_KERNEL_ISA     cap on the x86 instruction set of the kernel library: generic,
 *                         avx2 or avx512 (default: the best the CPU supports; to test
 *                         every code path on one machine). Read at the first kernel-library
 *                         call.
 *   MTIART_VALGRIND_QUARANTINE  under valgrind only: bytes of freed device blocks (of the
 *                         default pool) kept from reuse, oldest out first, so that a host
 *                         access after a free is reported instead of landing in a new
 *                         allocation; K/M/G suffixes, 0 for none (default 64M, at most a
 *                         quarter of the device). Under valgrind a free is reported to
 *                         memcheck at once: later host accesses are errors, while kernels
 *                         enqueued before the free still touch the buffers they describe.
 *
 * Versioning: the ABI follows the soname (libmtiart.so.MAJOR); additions within a major
 * version are backwards compatible. Structs passed by pointer are never resized within
 * a major version.
 */
#ifndef MTIART_H
#define MTIART_H

#define MTIART_VERSION_MAJOR 0
#define MTIART_VERSION_MINOR 2
#define MTIART_VERSION_PATCH 0
#define MTIART_VERSION_NUMBER                                                                      \
    (MTIART_VERSION_MAJOR * 10000 + MTIART_VERSION_MINOR * 100 + MTIART_VERSION_PATCH)

/* MTIART_CDEF is defined when the header is preprocessed into cffi declarations. */
#ifndef MTIART_CDEF
#include <stddef.h>
#include <stdint.h>
#if defined(MTIART_BUILDING_LIBRARY) && defined(__GNUC__)
#define MTIART_API __attribute__((visibility("default")))
#else
#define MTIART_API
#endif
#ifdef __cplusplus
extern "C" {
#endif
#else
#define MTIART_API
#endif

#define MTIART_MAX_DIMS 8

/* ------------------------------------------------------------------------------------ */
/* Status codes and errors                                                              */
/* ------------------------------------------------------------------------------------ */

typedef enum mtiart_status {
    MTIART_SUCCESS = 0,
    MTIART_NOT_READY = 1,                    /* query: work still pending (not an error) */
    MTIART_ERROR_INVALID_VALUE = -1,         /* an argument is out of range or NULL */
    MTIART_ERROR_INVALID_HANDLE = -2,        /* NULL, destroyed or wrong-kind handle */
    MTIART_ERROR_INVALID_DEVICE = -3,        /* no such device index */
    MTIART_ERROR_OUT_OF_MEMORY = -4,         /* device capacity exhausted */
    MTIART_ERROR_INVALID_POINTER = -5,       /* not (a live range of) device memory */
    MTIART_ERROR_KERNEL_FAILED = -6,         /* a kernel or host function reported failure */
    MTIART_ERROR_NOT_PERMITTED = -7,         /* not allowed in this state/thread */
    MTIART_ERROR_CAPTURE_UNSUPPORTED = -8,   /* unsafe call while a stream is capturing */
    MTIART_ERROR_CAPTURE_INVALIDATED = -9,   /* the capture was invalidated earlier */
    MTIART_ERROR_CAPTURE_UNJOINED = -10,     /* a forked stream never rejoined the origin */
    MTIART_ERROR_CAPTURE_WRONG_STREAM = -11, /* end capture on a stream that did not begin it */
    MTIART_ERROR_CAPTURE_ISOLATION = -12,    /* mixing two different captures */
    MTIART_ERROR_NOT_CAPTURING = -13,        /* end capture on a stream that is not capturing */
    MTIART_ERROR_ALREADY_CAPTURING = -14,    /* begin capture on a capturing stream */
    MTIART_ERROR_NOT_SUPPORTED = -15,        /* valid request this build cannot do */
    MTIART_ERROR_LOAD_FAILED = -16,          /* a shared library or symbol could not be loaded */
    MTIART_ERROR_INTERNAL = -17              /* a bug in libmtiart */
} mtiart_status;

/* The name of a status code ("MTIART_ERROR_INVALID_HANDLE"); never NULL. */
MTIART_API const char *mtiart_status_name(mtiart_status status);

/* A one-line description of a status code; never NULL. */
MTIART_API const char *mtiart_status_string(mtiart_status status);

/* The detailed message of the last error on the calling thread ("" if none). The pointer
 * stays valid until the next libmtiart call on this thread. */
MTIART_API const char *mtiart_last_error_message(void);

/* The status of the last failing call on this thread (MTIART_SUCCESS if none). */
MTIART_API mtiart_status mtiart_last_error(void);

/* Forget the calling thread's last error. */
MTIART_API void mtiart_clear_last_error(void);

/* ------------------------------------------------------------------------------------ */
/* Library and devices                                                                  */
/* ------------------------------------------------------------------------------------ */

/* MTIART_VERSION_NUMBER of the library actually loaded. */
MTIART_API uint32_t mtiart_version(void);

/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
MTIART_API const char *mtiart_version_string(void);

/* Initialise the runtime (idempotent). Every other call initialises lazily as well. */
MTIART_API mtiart_status mtiart_init(void);

/* Whether the runtime has been initialised in this process (1) or not (0). */
MTIART_API int mtiart_is_initialized(void);

/* Number of emulated devices. */
MTIART_API mtiart_status mtiart_device_count(int *count);

typedef struct mtiart_device_properties {
    char name[64];            /* "mtiart CPU device N" */
    int32_t index;            /* device index */
    int32_t num_workers;      /* worker threads executing streams of this device */
    int32_t capability_major; /* runtime feature level */
    int32_t capability_minor;
    uint64_t total_memory;            /* capacity in bytes */
    uint64_t segment_granularity;     /* device memory is reserved in multiples of this */
    int32_t least_stream_priority;    /* 0 */
    int32_t greatest_stream_priority; /* most urgent (negative) */
} mtiart_device_properties;

/* Properties of a device. */
MTIART_API mtiart_status mtiart_device_get_properties(int device, mtiart_device_properties *props);

/* Wait until all work on all streams of the device is done. Reports (and clears) the
 * first sticky kernel error of any of its streams. */
MTIART_API mtiart_status mtiart_device_synchronize(int device);

/* mtiart_device_synchronize, waiting at most `timeout_ns` nanoseconds (UINT64_MAX: no
 * limit; 0: only look): MTIART_NOT_READY, with nothing reported or cleared, when a stream
 * of the device still had work by then. Calling it again waits for the work enqueued before
 * that call. For interruptible waits: the caller regains control at least every
 * `timeout_ns`; the work goes on either way. */
MTIART_API mtiart_status mtiart_device_synchronize_timeout(int device, uint64_t timeout_ns);

/* ------------------------------------------------------------------------------------ */
/* Streams                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct mtiart_stream_s *mtiart_stream;
typedef struct mtiart_event_s *mtiart_event;
typedef struct mtiart_graph_s *mtiart_graph;
typedef struct mtiart_graph_exec_s *mtiart_graph_exec;

/* The device's default stream (never destroyed). */
MTIART_API mtiart_status mtiart_stream_get_default(int device, mtiart_stream *stream);

/* Create a stream. Lower priority values are more urgent; the valid range is
 * [greatest_stream_priority, least_stream_priority] of the device (values outside it are
 * clamped, as CUDA does). */
MTIART_API mtiart_status mtiart_stream_create(int device, int priority, mtiart_stream *stream);

/* Destroy a stream. Work already enqueued still completes; the handle is invalid at once.
 * The default stream and the stream a capture began on cannot be destroyed; a stream
 * forked into a capture can once its work has been joined back (another stream of the
 * capture waited on an event recorded after it), and is MTIART_ERROR_NOT_PERMITTED
 * before. */
MTIART_API mtiart_status mtiart_stream_destroy(mtiart_stream stream);

/* Device index, priority and a process-unique id (never reused) of a stream. */
MTIART_API mtiart_status mtiart_stream_get_device(mtiart_stream stream, int *device);
MTIART_API mtiart_status mtiart_stream_get_priority(mtiart_stream stream, int *priority);
MTIART_API mtiart_status mtiart_stream_get_id(mtiart_stream stream, uint64_t *id);

/* MTIART_SUCCESS if all work is done, MTIART_NOT_READY if not; reports a sticky error.
 * Not permitted on a capturing stream (invalidates the capture); a query of any other
 * stream never disturbs a capture, whatever its mode, since it does not wait. */
MTIART_API mtiart_status mtiart_stream_query(mtiart_stream stream);

/* Wait until all work enqueued on the stream so far is done. Reports (and clears) the
 * first sticky error of a failed kernel or host function since the last report.
 * While it waits, and a worker of the device sleeps, the calling thread may run blocks of
 * the runtime's own multi-block kernels (mtiart_op_*) queued on this stream, as
 * mtiart_device_synchronize and mtiart_memcpy may; a program's kernels and host
 * functions always run on the device's workers. */
MTIART_API mtiart_status mtiart_stream_synchronize(mtiart_stream stream);

/* Work enqueued on `stream` after this call waits for the most recent record of `event`
 * made before this call (no-op if the event was never recorded). On a capturing stream:
 * an event recorded in the same capture adds edges (a join, or a fork that brings the
 * stream into the capture); any other event becomes a wait node (see the Graphs section). */
MTIART_API mtiart_status mtiart_stream_wait_event(mtiart_stream stream, mtiart_event event);

/* mtiart_stream_synchronize, waiting at most `timeout_ns` nanoseconds (UINT64_MAX: no
 * limit; 0: only look): MTIART_NOT_READY, with nothing reported, when the work enqueued
 * before the call is not done by then. Calling it again waits for the work enqueued before
 * that call; to keep waiting for a fixed point of a stream that other threads keep feeding,
 * record an event there and use mtiart_event_synchronize_timeout. */
MTIART_API mtiart_status mtiart_stream_synchronize_timeout(mtiart_stream stream,
                                                           uint64_t timeout_ns);

typedef enum mtiart_stream_flags {
    MTIART_STREAM_DEFAULT = 0,
    MTIART_STREAM_NON_BLOCKING = 1 /* CUDA's cudaStreamNonBlocking */
} mtiart_stream_flags;

/* mtiart_stream_create with flags (MTIART_STREAM_*). Every stream already behaves as a
 * CUDA non-blocking stream: the default stream never synchronizes implicitly with other
 * streams (there is no legacy default stream), so MTIART_STREAM_NON_BLOCKING changes no
 * behaviour; it is accepted for code ported from CUDA and reported by
 * mtiart_stream_get_flags. Unknown flags are MTIART_ERROR_INVALID_VALUE. */
MTIART_API mtiart_status mtiart_stream_create_with_flags(int device, int priority, uint32_t flags,
                                                         mtiart_stream *stream);

/* The flags a stream was created with (0 for a device's default stream). */
MTIART_API mtiart_status mtiart_stream_get_flags(mtiart_stream stream, uint32_t *flags);

/* ------------------------------------------------------------------------------------ */
/* Kernels and stream operations                                                        */
/* ------------------------------------------------------------------------------------ */

/*
 * A kernel: called once for each block index in [0, num_blocks), possibly concurrently on
 * several workers. args[i] points at the value of argument i (as CUDA kernelParams do):
 * for a buffer argument, *(void **)args[i] is the device pointer. Return 0 on success;
 * any other value marks the stream with MTIART_ERROR_KERNEL_FAILED (see
 * mtiart_kernel_set_error_message). Kernels must not block on the runtime.
 */
typedef int32_t (*mtiart_kernel_fn)(void *const *args, uint32_t block, uint32_t num_blocks);

typedef enum mtiart_arg_kind {
    MTIART_ARG_VALUE = 0,       /* `size` plain bytes copied from `value` at launch */
    MTIART_ARG_BUFFER_IN = 1,   /* device buffer the kernel reads */
    MTIART_ARG_BUFFER_OUT = 2,  /* device buffer the kernel writes */
    MTIART_ARG_BUFFER_INOUT = 3 /* device buffer the kernel reads and writes */
} mtiart_arg_kind;

typedef struct mtiart_arg {
    uint32_t kind;     /* an mtiart_arg_kind */
    uint32_t size;     /* VALUE: number of bytes (1..4096); BUFFER: ignored */
    const void *value; /* VALUE: the bytes to copy; BUFFER: the device pointer itself */
    uint64_t extent;   /* BUFFER: bytes the kernel may touch from the pointer */
} mtiart_arg;

/* Enqueue a kernel on a stream. Arguments are copied at the call; buffer arguments must lie
 * inside live device allocations of the stream's device. `num_blocks` >= 1. */
MTIART_API mtiart_status mtiart_launch_kernel(mtiart_stream stream, mtiart_kernel_fn kernel,
                                              uint32_t num_blocks, const mtiart_arg *args,
                                              uint32_t num_args);

/* Give a kernel function a name for graph dumps and error messages (the string is
 * copied). Without one, the symbol name is used where it can be found. */
MTIART_API mtiart_status mtiart_kernel_set_name(mtiart_kernel_fn kernel, const char *name);

/* Called from inside a kernel or host function that is about to return failure: the
 * message becomes the detail of the stream's sticky error. */
MTIART_API void mtiart_kernel_set_error_message(const char *message);

/* Look up a kernel by symbol name in a shared library (dlopen + dlsym). The library stays
 * loaded for the life of the process. */
MTIART_API mtiart_status mtiart_kernel_load(const char *library_path, const char *symbol,
                                            mtiart_kernel_fn *kernel);

struct mtiart_tensor_desc; /* the kernel library's tensor descriptor, below */

/* mtiart_launch_kernel, telling graph dumps and traces what the launch is: `label` names it
 * (NULL or "": the kernel's name or description) and tensors[i], when `tensors` is not
 * NULL, describes buffer argument i (NULL entries: unknown; only dtype, ndim and shape are
 * read). What it says is kept with the graph node when the stream is capturing. */
MTIART_API mtiart_status mtiart_launch_kernel_described(
    mtiart_stream stream, mtiart_kernel_fn kernel, uint32_t num_blocks, const mtiart_arg *args,
    uint32_t num_args, const char *label, const struct mtiart_tensor_desc *const *tensors);

/* A host function runs on a device worker, in stream order; return 0 on success. */
typedef int32_t (*mtiart_host_fn)(void *user_data);

MTIART_API mtiart_status mtiart_launch_host_func(mtiart_stream stream, mtiart_host_fn fn,
                                                 void *user_data);

typedef enum mtiart_memcpy_kind {
    MTIART_MEMCPY_HOST_TO_HOST = 0,
    MTIART_MEMCPY_HOST_TO_DEVICE = 1,
    MTIART_MEMCPY_DEVICE_TO_HOST = 2,
    MTIART_MEMCPY_DEVICE_TO_DEVICE = 3,
    MTIART_MEMCPY_DEFAULT = 4 /* inferred from the pointers */
} mtiart_memcpy_kind;

/* Enqueue a copy. Device sides are checked to lie in live allocations; host sides must stay
 * valid until the copy has run (in a capture: for as long as the graph is replayed). */
MTIART_API mtiart_status mtiart_memcpy_async(mtiart_stream stream, void *dst, const void *src,
                                             size_t bytes, mtiart_memcpy_kind kind);

/* Copy and wait for the copy (and everything before it on the stream). */
MTIART_API mtiart_status mtiart_memcpy(mtiart_stream stream, void *dst, const void *src,
                                       size_t bytes, mtiart_memcpy_kind kind);

/* Enqueue a fill of `count` elements of `pattern_size` (1, 2, 4 or 8) bytes at `dst`. */
MTIART_API mtiart_status mtiart_fill_async(mtiart_stream stream, void *dst, const void *pattern,
                                           uint32_t pattern_size, size_t count);

/* Byte fill, as memset. */
MTIART_API mtiart_status mtiart_memset_async(mtiart_stream stream, void *dst, int value,
                                             size_t bytes);

/* mtiart_memcpy, waiting at most `timeout_ns` nanoseconds (UINT64_MAX: no limit) for the copy
 * (and everything before it on the stream). MTIART_NOT_READY when it has not run by then:
 * the copy stays enqueued and runs in stream order, so a host side must stay valid until the
 * stream has done it (wait with mtiart_stream_synchronize_timeout, or an event recorded
 * after the call). A call refused before enqueueing (capture, bad arguments) enqueues
 * nothing. */
MTIART_API mtiart_status mtiart_memcpy_timeout(mtiart_stream stream, void *dst, const void *src,
                                               size_t bytes, mtiart_memcpy_kind kind,
                                               uint64_t timeout_ns);

/* ------------------------------------------------------------------------------------ */
/* Events                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef enum mtiart_event_flags {
    MTIART_EVENT_DEFAULT = 0,
    MTIART_EVENT_TIMING = 1,       /* record timestamps for mtiart_event_elapsed_time */
    MTIART_EVENT_BLOCKING_SYNC = 2 /* synchronize sleeps instead of spinning first */
} mtiart_event_flags;

MTIART_API mtiart_status mtiart_event_create(uint32_t flags, mtiart_event *event);
MTIART_API mtiart_status mtiart_event_destroy(mtiart_event event);

/* Record: the event completes when all work enqueued on `stream` before it is done. */
MTIART_API mtiart_status mtiart_event_record(mtiart_event event, mtiart_stream stream);

/* MTIART_SUCCESS if the most recent record is complete (or none was made), else
 * MTIART_NOT_READY. Not permitted on an event recorded in an active capture (invalidates
 * it); other events may be queried during any capture. */
MTIART_API mtiart_status mtiart_event_query(mtiart_event event);

/* Wait for the most recent record to complete. */
MTIART_API mtiart_status mtiart_event_synchronize(mtiart_event event);

/* Milliseconds between two completed records of timing events. */
MTIART_API mtiart_status mtiart_event_elapsed_time(mtiart_event start, mtiart_event end,
                                                   float *milliseconds);

/* mtiart_event_synchronize, waiting at most `timeout_ns` nanoseconds (UINT64_MAX: no limit;
 * 0: only look) for the record that was the most recent at the call: MTIART_NOT_READY if it
 * has not completed by then. */
MTIART_API mtiart_status mtiart_event_synchronize_timeout(mtiart_event event, uint64_t timeout_ns);

typedef enum mtiart_event_record_flags {
    MTIART_EVENT_RECORD_DEFAULT = 0,
    /* On a capturing stream, a record node: every replay records the event there (CUDA's
     * cudaEventRecordExternal), for work outside the graph to wait on and to time. */
    MTIART_EVENT_RECORD_EXTERNAL = 1
} mtiart_event_record_flags;

/* mtiart_event_record with flags (MTIART_EVENT_RECORD_*). Without a capture the flags
 * change nothing. In a capture, a plain record only orders the capture's own streams (a
 * fork or join point, no node); an external one also becomes a record node. Not
 * permitted inside a conditional body (MTIART_ERROR_NOT_SUPPORTED). */
MTIART_API mtiart_status mtiart_event_record_with_flags(mtiart_event event, mtiart_stream stream,
                                                        uint32_t flags);

/* ------------------------------------------------------------------------------------ */
/* Memory                                                                               */
/* ------------------------------------------------------------------------------------ */

/* A memory pool id. (0, 0) names the device's default pool in queries and, in
 * mtiart_stream_begin_capture, asks for a new private pool. Private pools made by a
 * capture are (n, 0); handles from mtiart_pool_handle_create are (0, n). */
typedef struct mtiart_pool_id {
    uint64_t first;
    uint64_t second;
} mtiart_pool_id;

/* Allocate `size` bytes of device memory for use on `stream` (stream-ordered: the block
 * may reuse memory freed earlier on the same stream, and memory cached by destroyed
 * streams once their work is done). A stream that is capturing allocates from the
 * capture's pool. size 0 gives NULL. */
MTIART_API mtiart_status mtiart_malloc_async(mtiart_stream stream, size_t size, void **ptr);

/* Allocate on the default stream of `device`. */
MTIART_API mtiart_status mtiart_malloc(int device, size_t size, void **ptr);

/* Return a block to its pool. Its memory is reused by later work on the block's stream at
 * once, and by other streams recorded with mtiart_record_stream only once their work
 * enqueued before this call is done (mtiart_free_async adds a stream to wait for). NULL is
 * accepted.
 * Graphs hold the memory they use: a graph, an executable instantiated from it and a
 * capture in progress keep every block their nodes read or write that lies outside their
 * own pool. Freeing such a block marks it MTIART_BLOCK_GRAPH_HELD (no longer the program's:
 * it cannot be used or freed again) and its memory returns, as above, once the last graph
 * and executable using it are destroyed, so a replay never writes into memory handed out
 * again. Blocks of a graph's own pool are not held: they follow the pool's contract (blocks
 * freed during a capture may be reused by later captures sharing the pool). */
MTIART_API mtiart_status mtiart_free(void *ptr);

/* Mark a block as in use by `stream` (torch's record_stream). */
MTIART_API mtiart_status mtiart_record_stream(void *ptr, mtiart_stream stream);

/* The device of a device pointer, or MTIART_ERROR_INVALID_POINTER. */
MTIART_API mtiart_status mtiart_pointer_get_device(const void *ptr, int *device);

/* Release cached, unused memory of the device: free segments of the default pool and of
 * private pools no graph uses. Not permitted while a capture is active. */
MTIART_API mtiart_status mtiart_empty_cache(int device);

typedef struct mtiart_memory_stats {
    uint64_t allocated_bytes; /* bytes in blocks handed out (rounded sizes) */
    uint64_t allocated_bytes_peak;
    uint64_t requested_bytes; /* bytes asked for */
    uint64_t reserved_bytes;  /* bytes in segments */
    uint64_t reserved_bytes_peak;
    uint64_t active_blocks; /* blocks handed out or awaiting stream-ordered free */
    uint64_t active_blocks_peak;
    uint64_t active_bytes;
    uint64_t active_bytes_peak;
    uint64_t inactive_split_blocks; /* free pieces of partly used segments */
    uint64_t inactive_split_bytes;
    uint64_t segments;
    uint64_t segments_peak;
    uint64_t alloc_requests;
    uint64_t free_requests;
    uint64_t segment_allocs; /* segments reserved from the device */
    uint64_t segment_frees;
    uint64_t num_alloc_retries; /* allocations that had to release cache and retry */
    uint64_t num_ooms;
    uint64_t capacity;
    uint64_t private_pools; /* private pools alive */
} mtiart_memory_stats;

MTIART_API mtiart_status mtiart_memory_get_stats(int device, mtiart_memory_stats *stats);

/* Reset the *_peak fields to the current values. */
MTIART_API mtiart_status mtiart_memory_reset_peak_stats(int device);

/* Reset the cumulative counters (requests, retries, ooms, segment allocs/frees). */
MTIART_API mtiart_status mtiart_memory_reset_accumulated_stats(int device);

typedef enum mtiart_block_state {
    MTIART_BLOCK_ACTIVE = 0,          /* handed out */
    MTIART_BLOCK_PENDING_FREE = 1,    /* freed, waiting for recorded streams */
    MTIART_BLOCK_FREE = 2,            /* cached */
    MTIART_BLOCK_GRAPH_HELD = 3,      /* freed by the program; graphs that use it still hold it */
    MTIART_BLOCK_GRAPH_ALLOCATION = 4 /* a memory node's allocation between its launches */
} mtiart_block_state;

typedef struct mtiart_block_info {
    uint64_t address;
    uint64_t size;
    uint64_t requested_size;
    uint64_t segment_address;
    uint64_t segment_size;
    mtiart_pool_id pool;
    uint64_t stream_id;
    int32_t state; /* an mtiart_block_state */
    int32_t device;
} mtiart_block_info;

/* Every block of the device, segment by segment, in address order. Writes at most
 * `capacity` entries and sets *count to the total number (call with capacity 0 to size). */
MTIART_API mtiart_status mtiart_memory_snapshot(int device, mtiart_block_info *blocks,
                                                size_t capacity, size_t *count);

/* Called (on the allocating thread) before an allocation fails with out-of-memory. */
typedef void (*mtiart_oom_observer)(int device, uint64_t requested, uint64_t allocated,
                                    uint64_t reserved, uint64_t capacity, void *user_data);

MTIART_API mtiart_status mtiart_attach_oom_observer(mtiart_oom_observer observer, void *user_data);
MTIART_API mtiart_status mtiart_detach_oom_observer(mtiart_oom_observer observer, void *user_data);

/* A fresh pool id (0, n) that several captures can share. */
MTIART_API mtiart_status mtiart_pool_handle_create(mtiart_pool_id *pool);

typedef struct mtiart_pool_info {
    int32_t exists;    /* 0 if the pool holds no memory and has no users */
    int32_t use_count; /* graphs, executables and captures using the pool */
    uint64_t reserved_bytes;
    uint64_t allocated_bytes;
    uint64_t active_blocks;
} mtiart_pool_info;

MTIART_API mtiart_status mtiart_pool_get_info(int device, mtiart_pool_id pool,
                                              mtiart_pool_info *info);

/* Keys of mtiart_memory_get_stat: first every field of mtiart_memory_stats, in its order,
 * then statistics the struct has no room for (it never changes size). */
typedef enum mtiart_memory_stat {
    MTIART_STAT_ALLOCATED_BYTES = 0,
    MTIART_STAT_ALLOCATED_BYTES_PEAK = 1,
    MTIART_STAT_REQUESTED_BYTES = 2,
    MTIART_STAT_RESERVED_BYTES = 3,
    MTIART_STAT_RESERVED_BYTES_PEAK = 4,
    MTIART_STAT_ACTIVE_BLOCKS = 5,
    MTIART_STAT_ACTIVE_BLOCKS_PEAK = 6,
    MTIART_STAT_ACTIVE_BYTES = 7,
    MTIART_STAT_ACTIVE_BYTES_PEAK = 8,
    MTIART_STAT_INACTIVE_SPLIT_BLOCKS = 9,
    MTIART_STAT_INACTIVE_SPLIT_BYTES = 10,
    MTIART_STAT_SEGMENTS = 11,
    MTIART_STAT_SEGMENTS_PEAK = 12,
    MTIART_STAT_ALLOC_REQUESTS = 13,
    MTIART_STAT_FREE_REQUESTS = 14,
    MTIART_STAT_SEGMENT_ALLOCS = 15,
    MTIART_STAT_SEGMENT_FREES = 16,
    MTIART_STAT_NUM_ALLOC_RETRIES = 17,
    MTIART_STAT_NUM_OOMS = 18,
    MTIART_STAT_CAPACITY = 19,
    MTIART_STAT_PRIVATE_POOLS = 20,
    /* bytes of blocks the program freed that graphs still hold (MTIART_BLOCK_GRAPH_HELD);
     * counted in active_bytes, not in allocated_bytes */
    MTIART_STAT_GRAPH_HELD_BYTES = 21,
    MTIART_STAT_GRAPH_HELD_BYTES_PEAK = 22,
    MTIART_STAT_GRAPH_HELD_BLOCKS = 23,
    /* bytes of memory nodes' allocations (live or between launches), counted in
     * active_bytes; in allocated_bytes only while live */
    MTIART_STAT_GRAPH_ALLOC_BYTES = 24,
    MTIART_STAT_GRAPH_ALLOC_BYTES_PEAK = 25,
    /* under valgrind: bytes of freed blocks waiting in the quarantine before reuse (see
     * MTIART_VALGRIND_QUARANTINE); 0 otherwise */
    MTIART_STAT_VALGRIND_QUARANTINE_BYTES = 26
} mtiart_memory_stat;

/* One allocator statistic of the device. An unknown key is MTIART_ERROR_INVALID_VALUE. */
MTIART_API mtiart_status mtiart_memory_get_stat(int device, mtiart_memory_stat key,
                                                uint64_t *value);

/* The name of a statistic ("graph_held_bytes"; a struct field's name for the struct's
 * keys), or NULL for an unknown key: counting up from 0 until NULL lists them all. */
MTIART_API const char *mtiart_memory_stat_name(mtiart_memory_stat key);

/* Free a block on a stream (cudaFreeAsync): the block is reused only after the work
 * enqueued on `stream` before this call, whichever stream allocated it, is done (as well
 * as the work mtiart_free waits for: see there). Work enqueued on the allocating stream
 * after the call may reuse it in that stream's order only once `stream` is done, so the
 * free is also safe when `stream` is the only one still using the block. While `stream`
 * captures, the free is deferred to the end of the capture, as mtiart_free's is for the
 * capturing streams a block is recorded on. NULL is accepted; a pointer into another
 * device than the stream's is refused. */
MTIART_API mtiart_status mtiart_free_async(void *ptr, mtiart_stream stream);

/* Name the live allocation containing `ptr` (any address inside it): graph dumps, traces
 * and memory snapshots show the name. NULL or "" removes it; freeing the allocation does
 * too. */
MTIART_API mtiart_status mtiart_memory_set_name(void *ptr, const char *name);

/* The name of the live allocation containing `ptr` ("" if none) into `buffer` (NUL-terminated,
 * truncated to `capacity`); *length gets its full length. */
MTIART_API mtiart_status mtiart_memory_get_name(const void *ptr, char *buffer, size_t capacity,
                                                size_t *length);

/* Memory history: with `enabled`, every allocation made from now on keeps the call stack
 * that made it (up to `max_frames` return addresses, 1..MTIART_MAX_HISTORY_FRAMES, read
 * with mtiart_memory_get_block_frames until it is freed), and allocations and frees are
 * logged (the latest `max_entries` of them; 0: all), the log starting empty. enabled 0
 * stops recording; what was recorded stays readable. */
#define MTIART_MAX_HISTORY_FRAMES 64
MTIART_API mtiart_status mtiart_memory_record_history(int enabled, uint32_t max_frames,
                                                      size_t max_entries);

/* The allocating call stack of the live allocation containing `ptr` (innermost first: the
 * first frame outside libmtiart, the caller of mtiart_malloc / mtiart_malloc_async or of
 * the kernel-library operation that allocated, then its callers), as return addresses
 * for backtrace_symbols() or dladdr(); *count gets their number (0: made while history was
 * not recorded). Writes at most `capacity`. */
MTIART_API mtiart_status mtiart_memory_get_block_frames(const void *ptr, void **frames,
                                                        size_t capacity, size_t *count);

typedef enum mtiart_memory_action {
    MTIART_MEMORY_ALLOC = 0,
    MTIART_MEMORY_FREE = 1 /* mtiart_free called (the memory is reused once streams are done) */
} mtiart_memory_action;

typedef struct mtiart_memory_event {
    int32_t action; /* an mtiart_memory_action */
    int32_t device;
    uint64_t address;
    uint64_t size;      /* requested bytes (0 for the free of an allocation made before) */
    uint64_t stream_id; /* the allocating stream (0 for frees) */
    uint64_t time_ns;   /* CLOCK_MONOTONIC */
} mtiart_memory_event;

/* The memory history's log, oldest first: writes at most `capacity` events and sets
 * *count to the number logged (call with capacity 0 to size). */
MTIART_API mtiart_status mtiart_memory_get_history(mtiart_memory_event *events, size_t capacity,
                                                   size_t *count);

/* ------------------------------------------------------------------------------------ */
/* Stream capture                                                                       */
/* ------------------------------------------------------------------------------------ */

typedef enum mtiart_capture_mode {
    MTIART_CAPTURE_MODE_GLOBAL = 0,       /* an unsafe call on any thread invalidates */
    MTIART_CAPTURE_MODE_THREAD_LOCAL = 1, /* only the capturing thread's unsafe calls do */
    MTIART_CAPTURE_MODE_RELAXED = 2       /* only calls on the capture's own streams/events */
} mtiart_capture_mode;

typedef enum mtiart_capture_status {
    MTIART_CAPTURE_STATUS_NONE = 0,
    MTIART_CAPTURE_STATUS_ACTIVE = 1,
    MTIART_CAPTURE_STATUS_INVALIDATED = 2
} mtiart_capture_status;

/* Start capturing `stream`: its work is recorded into a graph instead of run. Allocations
 * of any stream in the capture come from `pool`; (0, 0) creates a private pool (n, 0). A
 * pool id the runtime never issued (as a captured graph's pool or by
 * mtiart_pool_handle_create) is refused with MTIART_ERROR_INVALID_VALUE. */
MTIART_API mtiart_status mtiart_stream_begin_capture(mtiart_stream stream, mtiart_capture_mode mode,
                                                     mtiart_pool_id pool);

/* End the capture begun on `stream`. On success *graph receives the captured graph (which
 * holds a use of the pool). On failure (invalidated, unjoined) everything of the capture is
 * released, its streams leave capture mode, and *graph is untouched. */
MTIART_API mtiart_status mtiart_stream_end_capture(mtiart_stream stream, mtiart_graph *graph);

/* Flags of mtiart_stream_begin_capture_with_flags: a bit set (unknown bits are refused). */
typedef enum mtiart_capture_flags {
    /* CUDA's graph-memory model instead of the private pool's: mtiart_malloc_async (and
     * mtiart_malloc on a capturing default stream) on the capture's streams adds a memory
     * alloc node, and mtiart_free_async of a graph allocation (or mtiart_free of one the
     * capture allocated) a memory free node; see mtiart_graph_add_mem_alloc_node. A free
     * of any other block on a capturing stream is then refused. */
    MTIART_CAPTURE_FLAG_MEM_NODES = 1
} mtiart_capture_flags;

/* mtiart_stream_begin_capture with a bit set of MTIART_CAPTURE_FLAG_* flags. */
MTIART_API mtiart_status mtiart_stream_begin_capture_with_flags(mtiart_stream stream,
                                                                mtiart_capture_mode mode,
                                                                mtiart_pool_id pool,
                                                                uint64_t flags);

/* Capture state of a stream and the id of its capture (0 if none). */
MTIART_API mtiart_status mtiart_stream_get_capture_info(mtiart_stream stream,
                                                        mtiart_capture_status *status,
                                                        uint64_t *capture_id, mtiart_pool_id *pool);

/* ------------------------------------------------------------------------------------ */
/* Graphs                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef enum mtiart_node_kind {
    MTIART_NODE_KERNEL = 0,
    MTIART_NODE_MEMCPY = 1,
    MTIART_NODE_FILL = 2,
    MTIART_NODE_HOST = 3,
    MTIART_NODE_EVENT_RECORD = 4, /* records an event at every replay */
    MTIART_NODE_EVENT_WAIT = 5,   /* waits for an event's record made before the launch */
    MTIART_NODE_EMPTY = 6,
    MTIART_NODE_CHILD_GRAPH = 7, /* runs a graph (its body) in its place */
    MTIART_NODE_CONDITIONAL = 8, /* runs its body if, or while, a device flag is non-zero */
    MTIART_NODE_MEM_ALLOC = 9,   /* makes a graph allocation (mtiart_graph_add_mem_alloc_node) */
    MTIART_NODE_MEM_FREE = 10    /* frees one (mtiart_graph_add_mem_free_node) */
} mtiart_node_kind;

typedef struct mtiart_node_info {
    int32_t kind;         /* an mtiart_node_kind */
    uint32_t num_blocks;  /* kernels */
    uint32_t num_buffers; /* device buffers the node touches */
    uint32_t num_dependencies;
    char name[64]; /* kernel name, "memcpy HtoD", ... */
} mtiart_node_info;

typedef struct mtiart_buffer_use {
    uint64_t address;
    uint64_t bytes;
    uint32_t access; /* MTIART_ARG_BUFFER_IN / OUT / INOUT */
    uint32_t reserved;
} mtiart_buffer_use;

/* An empty graph to build by hand (the nodes capture would make, added explicitly). */
MTIART_API mtiart_status mtiart_graph_create(int device, mtiart_graph *graph);

MTIART_API mtiart_status mtiart_graph_destroy(mtiart_graph graph);

/* Add a kernel node depending on the given earlier nodes; *node gets its index. */
MTIART_API mtiart_status mtiart_graph_add_kernel_node(mtiart_graph graph,
                                                      const size_t *dependencies,
                                                      size_t num_dependencies,
                                                      mtiart_kernel_fn kernel, uint32_t num_blocks,
                                                      const mtiart_arg *args, uint32_t num_args,
                                                      size_t *node);

/* Add an empty node (a join point). */
MTIART_API mtiart_status mtiart_graph_add_empty_node(mtiart_graph graph, const size_t *dependencies,
                                                     size_t num_dependencies, size_t *node);

MTIART_API mtiart_status mtiart_graph_get_device(mtiart_graph graph, int *device);
MTIART_API mtiart_status mtiart_graph_get_node_count(mtiart_graph graph, size_t *count);
MTIART_API mtiart_status mtiart_graph_get_edge_count(mtiart_graph graph, size_t *count);

/* The pool the graph's captured allocations live in ((0, 0) for a hand-built graph). */
MTIART_API mtiart_status mtiart_graph_get_pool(mtiart_graph graph, mtiart_pool_id *pool);

MTIART_API mtiart_status mtiart_graph_get_node_info(mtiart_graph graph, size_t node,
                                                    mtiart_node_info *info);

/* The i-th device buffer a node reads or writes. */
MTIART_API mtiart_status mtiart_graph_get_node_buffer(mtiart_graph graph, size_t node,
                                                      uint32_t index, mtiart_buffer_use *use);

/* The i-th dependency (an earlier node index) of a node. */
MTIART_API mtiart_status mtiart_graph_get_node_dependency(mtiart_graph graph, size_t node,
                                                          uint32_t index, size_t *dependency);

/* Write a Graphviz DOT description (nodes, kinds, buffers and edges) into `buffer`
 * (NUL-terminated, truncated to `capacity`); *length gets the full length without NUL. */
MTIART_API mtiart_status mtiart_graph_to_dot(mtiart_graph graph, char *buffer, size_t capacity,
                                             size_t *length);

typedef enum mtiart_dot_flags {
    /* Nodes labelled by what they do ("add", "matmul 32x256 @ 256x512", a kernel's name or
     * the label it was launched with), shaped and coloured by kind, bordered by the colour
     * of the stream that captured them, in one cluster per stream; buffers by tensor dtype
     * and shape where the launcher described them (else their size) and by name. */
    MTIART_DOT_DEFAULT = 0,
    MTIART_DOT_VERBOSE = 1 /* also buffer addresses and sizes, and kernels' block counts */
} mtiart_dot_flags;

/* mtiart_graph_to_dot with the detail `flags` (mtiart_dot_flags) asks for;
 * mtiart_graph_to_dot is this with MTIART_DOT_VERBOSE. Unknown flags are refused. */
MTIART_API mtiart_status mtiart_graph_to_dot_with_flags(mtiart_graph graph, uint32_t flags,
                                                        char *buffer, size_t capacity,
                                                        size_t *length);

/* Build the executable form: a flat plan where chains run back to back and independent
 * branches spread over the device's workers. Child graphs are flattened into it, so they
 * replay at the cost of their nodes. The graph may be destroyed (or changed) afterwards:
 * the executable keeps what it was instantiated from. */
MTIART_API mtiart_status mtiart_graph_instantiate(mtiart_graph graph, mtiart_graph_exec *exec);

MTIART_API mtiart_status mtiart_graph_exec_destroy(mtiart_graph_exec exec);

/* Enqueue one replay as a single operation on `stream` (any stream of the graph's device).
 * Replays of one graph never overlap, whichever of its executables they use: a launch on
 * another stream than the previous one waits for it. On a capturing stream the launch is
 * captured as a child graph node that runs what the executable runs (with the parameters
 * of its latest update). */
MTIART_API mtiart_status mtiart_graph_launch(mtiart_graph_exec exec, mtiart_stream stream);

/* The number of operations a replay runs (child graphs flattened). */
MTIART_API mtiart_status mtiart_graph_exec_get_node_count(mtiart_graph_exec exec, size_t *count);

/*
 * Explicit construction: every node kind capture makes. Each add_* function appends a node
 * that depends on the given earlier nodes and writes its index to *node; device buffers
 * must lie in live allocations of the graph's device, as for the stream operations.
 */

/* A copy (mtiart_memcpy_async's rules; 0 bytes is a node that does nothing). */
MTIART_API mtiart_status mtiart_graph_add_memcpy_node(mtiart_graph graph,
                                                      const size_t *dependencies,
                                                      size_t num_dependencies, void *dst,
                                                      const void *src, size_t bytes,
                                                      mtiart_memcpy_kind kind, size_t *node);

/* A fill (mtiart_fill_async's rules). */
MTIART_API mtiart_status mtiart_graph_add_fill_node(mtiart_graph graph, const size_t *dependencies,
                                                    size_t num_dependencies, void *dst,
                                                    const void *pattern, uint32_t pattern_size,
                                                    size_t count, size_t *node);

/* A host function, run on a device worker at every replay. */
MTIART_API mtiart_status mtiart_graph_add_host_node(mtiart_graph graph, const size_t *dependencies,
                                                    size_t num_dependencies, mtiart_host_fn fn,
                                                    void *user_data, size_t *node);

/* Record `event` at every replay (the graph holds the event). Each launch reserves the
 * record, so work enqueued after the launch that waits on the event waits for it. */
MTIART_API mtiart_status mtiart_graph_add_event_record_node(mtiart_graph graph,
                                                            const size_t *dependencies,
                                                            size_t num_dependencies,
                                                            mtiart_event event, size_t *node);

/* Wait, at every replay, for the most recent record of `event` made before the replay was
 * launched (eagerly, or by a replay of another graph). The wait takes effect in place: the
 * nodes that depend on it wait, the others run; when nothing else can run the replay is
 * suspended, its stream parked on the event without holding a worker. */
MTIART_API mtiart_status mtiart_graph_add_event_wait_node(mtiart_graph graph,
                                                          const size_t *dependencies,
                                                          size_t num_dependencies,
                                                          mtiart_event event, size_t *node);

/* Run `child` in place of the node: its roots after the node's dependencies, the node's
 * dependents after its sinks. The child is copied: later changes to it do not reach this
 * graph, which holds the memory the child uses (see mtiart_free). The graphs must belong
 * to the same device; a child with memory nodes is MTIART_ERROR_NOT_SUPPORTED. */
MTIART_API mtiart_status mtiart_graph_add_child_graph_node(mtiart_graph graph,
                                                           const size_t *dependencies,
                                                           size_t num_dependencies,
                                                           mtiart_graph child, size_t *node);

typedef enum mtiart_conditional_type {
    MTIART_CONDITIONAL_IF = 0,   /* the body runs once if the condition is non-zero */
    MTIART_CONDITIONAL_WHILE = 1 /* the body runs while the condition is non-zero, tested
                                  * before every iteration */
} mtiart_conditional_type;

/* A conditional node (CUDA 12.4's conditional nodes): at every replay it reads
 * `condition_size` (1, 2, 4 or 8) bytes at `condition`, aligned device memory that a node
 * of the graph usually sets, and runs `body` (copied, as a child graph is) accordingly,
 * without returning to the host. A body that fails stops the loop; the replay reports
 * "graph node N: WHILE body node M: ...". A body may contain any node but event record
 * and wait nodes (MTIART_ERROR_NOT_SUPPORTED). A WHILE whose condition never becomes
 * zero runs forever, as on a GPU. */
MTIART_API mtiart_status mtiart_graph_add_conditional_node(
    mtiart_graph graph, const size_t *dependencies, size_t num_dependencies,
    mtiart_conditional_type type, const void *condition, uint32_t condition_size, mtiart_graph body,
    size_t *node);

/* A new graph holding (a copy of) the body of a child graph or conditional node, and the
 * memory the graph holds (a superset of what the body uses). */
MTIART_API mtiart_status mtiart_graph_get_node_body(mtiart_graph graph, size_t node,
                                                    mtiart_graph *body);

/* Replace the arguments of kernel node `node` (its kernel and block count stay). */
MTIART_API mtiart_status mtiart_graph_kernel_node_set_args(mtiart_graph graph, size_t node,
                                                           const mtiart_arg *args,
                                                           uint32_t num_args);

/* Capture a conditional body: from mtiart_stream_begin_conditional on, the work enqueued
 * on the capturing `stream` goes into the body, and mtiart_stream_end_conditional adds
 * the conditional node (after the stream's work before the body). Bodies nest. A body
 * holds one stream's work: an event recorded in it can be waited on only in it, and it
 * may not record external events or wait for outside ones. Ending the capture with a
 * body open is MTIART_ERROR_CAPTURE_UNJOINED. */
MTIART_API mtiart_status mtiart_stream_begin_conditional(mtiart_stream stream,
                                                         mtiart_conditional_type type,
                                                         const void *condition,
                                                         uint32_t condition_size);
MTIART_API mtiart_status mtiart_stream_end_conditional(mtiart_stream stream);

typedef enum mtiart_update_result {
    MTIART_UPDATE_SUCCESS = 0,
    MTIART_UPDATE_TOPOLOGY_CHANGED = 1,       /* node count or a node's dependencies differ */
    MTIART_UPDATE_NODE_KIND_CHANGED = 2,      /* a node of another kind */
    MTIART_UPDATE_PARAMETERS_UNSUPPORTED = 3, /* a kernel's argument count, a conditional's
                                               * type: what cannot change in place */
    MTIART_UPDATE_DEVICE_CHANGED = 4          /* the graph belongs to another device */
} mtiart_update_result;

typedef struct mtiart_update_info {
    int32_t result; /* an mtiart_update_result */
    uint32_t reserved;
    uint64_t node; /* the first top-level node of `graph` that differs (UINT64_MAX: none) */
} mtiart_update_info;

/* Update an executable in place from `graph`, topologically identical to the graph it was
 * instantiated from (the same nodes, kinds and edges, child and conditional bodies
 * included): kernel arguments and blocks, kernels, copy and fill parameters, host
 * functions, events and conditions take the graph's values. Replays launched before the
 * update keep running with the old parameters; those launched after it run the new ones
 * (the update may be made at any time, with replays pending). Anything else fails with
 * MTIART_ERROR_INVALID_VALUE, the first difference in *info (may be NULL) and the message,
 * and leaves the executable unchanged. The executable holds a use of the graph's pool, and
 * holds (and, instantiated with MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS, checks) the
 * memory the graph's nodes use (see mtiart_free); memory nodes cannot change. */
MTIART_API mtiart_status mtiart_graph_exec_update(mtiart_graph_exec exec, mtiart_graph graph,
                                                  mtiart_update_info *info);

/* Replace the arguments of top-level kernel node `node` of an executable, as an update
 * does (the same number of arguments; later launches see them). */
MTIART_API mtiart_status mtiart_graph_exec_kernel_node_set_args(mtiart_graph_exec exec, size_t node,
                                                                const mtiart_arg *args,
                                                                uint32_t num_args);
/* Flags of mtiart_graph_instantiate_with_flags: a bit set (unknown bits are refused). */
typedef enum mtiart_graph_instantiate_flags {
    /* Every launch first checks the graph's inputs (the allocations its nodes read before
     * any node of the graph wrote them, whatever the node: kernels, copies, fills): a
     * launch that would read one the program freed since the capture (or whose memory
     * another allocation got since) fails with MTIART_ERROR_INVALID_POINTER before any
     * node runs, naming the node and the buffer. Writing into an output the program freed
     * is not an error. Costs nothing without the flag, a load per input with it. */
    MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS = 1,
    /* A launch first frees the allocations of the graph's memory nodes that are still live
     * from the previous launch (instead of refusing to launch). */
    MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH = 2,
    /* Refuse a graph with races (MTIART_ERROR_INVALID_VALUE, the message names them; see
     * mtiart_graph_check_races). */
    MTIART_GRAPH_INSTANTIATE_CHECK_RACES = 4,
    /* Run every node as captured, whatever MTIART_GRAPH_FUSION says. */
    MTIART_GRAPH_INSTANTIATE_NO_FUSION = 8,
    /* Fuse nodes (below), whatever MTIART_GRAPH_FUSION says. */
    MTIART_GRAPH_INSTANTIATE_FUSION = 16
} mtiart_graph_instantiate_flags;

/* mtiart_graph_instantiate with a bit set of MTIART_GRAPH_INSTANTIATE_* flags; an unknown
 * bit, or both fusion flags, is refused with MTIART_ERROR_INVALID_VALUE.
 *
 * Fusion: by default (unless MTIART_GRAPH_FUSION=0) the executable fuses nodes of the
 * kernel library: a float32 matmul and a chain of elementwise operations on its result,
 * each node depending only on the one before (a bias add or any binary op with a row
 * vector, a same-shaped tensor or a scalar, unary ops, a softmax over the last dim) run as
 * one launch, tile by tile. Fusion changes no result: every buffer the nodes wrote is
 * written, with the same bits. The graph keeps its nodes; mtiart_graph_exec_get_node_count
 * counts the graph's. Chains stay within one graph (never across a child graph's edge)
 * and stop at event, host and conditional nodes; conditional bodies and loaded graphs
 * whose inputs or outputs are not bound are not fused. An update of a fused chain
 * (mtiart_graph_exec_update, mtiart_graph_exec_kernel_node_set_args) fuses the new
 * parameters, and is refused if they no longer fuse the same way. */
MTIART_API mtiart_status mtiart_graph_instantiate_with_flags(mtiart_graph graph, uint64_t flags,
                                                             mtiart_graph_exec *exec);

/*
 * Graph memory, CUDA's model (cudaGraphAddMemAllocNode). Captures allocate from the graph's
 * private pool by default (PyTorch's model: allocated once, at capture, and the program's
 * from then on). Memory nodes instead give the graph allocations of its own, at addresses
 * fixed for the graph's lifetime:
 *   - between launches the allocation is not live: eager work cannot use it (nodes of
 *     graphs may name it);
 *   - a launch of a graph whose alloc node's allocation it does not free itself makes it
 *     live, the program's, from the launch on (stream-ordered on the launch's stream, as
 *     mtiart_malloc_async's), until the program frees it with mtiart_free (ordered as for
 *     that stream's blocks) or mtiart_free_async, or a launch of a graph with a free node
 *     for it does; it is then the graph's again, at the same address, for the next launch;
 *   - launching while an allocation it makes is still live fails with
 *     MTIART_ERROR_NOT_PERMITTED (unless instantiated with
 *     MTIART_GRAPH_INSTANTIATE_AUTO_FREE_ON_LAUNCH), as does launching a graph that frees
 *     an allocation (of another graph) that is not live;
 *   - an allocation freed in its own graph is used only between its alloc and free nodes.
 * Executables of the graph share its allocations; its memory goes back to the pool when
 * the graph and its executables are destroyed (if live then, it stays the program's).
 * Statistics: MTIART_STAT_GRAPH_ALLOC_BYTES; snapshots show MTIART_BLOCK_GRAPH_ALLOCATION.
 */

/* Add a memory alloc node of `bytes` (>= 1) bytes, reserved at once from the graph's pool
 * (the default pool for a hand-built graph); *ptr gets the allocation's address. */
MTIART_API mtiart_status mtiart_graph_add_mem_alloc_node(mtiart_graph graph,
                                                         const size_t *dependencies,
                                                         size_t num_dependencies, size_t bytes,
                                                         size_t *node, void **ptr);

/* Add a memory free node of the graph allocation starting at `ptr` (made by an alloc node
 * of this graph or another one on the device). MTIART_ERROR_INVALID_VALUE if ptr starts no
 * graph allocation or the graph frees it already. */
MTIART_API mtiart_status mtiart_graph_add_mem_free_node(mtiart_graph graph,
                                                        const size_t *dependencies,
                                                        size_t num_dependencies, void *ptr,
                                                        size_t *node);

/* A copy of the graph (nodes, dependencies, pool use, and holds of its own on the memory
 * it uses): later changes to either do not affect the other. A graph with memory nodes
 * cannot be cloned (MTIART_ERROR_NOT_SUPPORTED), as in CUDA. */
MTIART_API mtiart_status mtiart_graph_clone(mtiart_graph graph, mtiart_graph *clone);

/* ------------------------------------------------------------------------------------ */
/* Kernel library: tensor operations on contiguous device arrays                         */
/* ------------------------------------------------------------------------------------ */

typedef enum mtiart_dtype {
    MTIART_DTYPE_FLOAT32 = 0,
    MTIART_DTYPE_FLOAT64 = 1,
    MTIART_DTYPE_INT32 = 2,
    MTIART_DTYPE_INT64 = 3,
    MTIART_DTYPE_BOOL = 4
} mtiart_dtype;

/* Size in bytes of one element of a dtype (0 for an unknown dtype). */
MTIART_API size_t mtiart_dtype_size(mtiart_dtype dtype);

/* A contiguous, row-major array in device memory. ndim 0 is a scalar (one element). */
typedef struct mtiart_tensor_desc {
    void *data;
    int32_t dtype; /* an mtiart_dtype */
    int32_t ndim;  /* 0..MTIART_MAX_DIMS */
    int64_t shape[MTIART_MAX_DIMS];
} mtiart_tensor_desc;

typedef enum mtiart_binary_op {
    MTIART_BINARY_ADD = 0,
    MTIART_BINARY_SUB = 1,
    MTIART_BINARY_MUL = 2,
    MTIART_BINARY_DIV = 3, /* true division for floats; C division for ints */
    MTIART_BINARY_MAXIMUM = 4,
    MTIART_BINARY_MINIMUM = 5,
    MTIART_BINARY_EQ = 6, /* comparisons write bool */
    MTIART_BINARY_NE = 7,
    MTIART_BINARY_LT = 8,
    MTIART_BINARY_LE = 9,
    MTIART_BINARY_GT = 10,
    MTIART_BINARY_GE = 11
} mtiart_binary_op;

typedef enum mtiart_unary_op {
    MTIART_UNARY_NEG = 0,
    MTIART_UNARY_ABS = 1,
    MTIART_UNARY_RELU = 2,
    MTIART_UNARY_EXP = 3,
    MTIART_UNARY_LOG = 4,
    MTIART_UNARY_SQRT = 5,
    MTIART_UNARY_TANH = 6,
    MTIART_UNARY_SIGMOID = 7,
    MTIART_UNARY_GELU = 8,    /* tanh approximation, as torch's gelu(approximate="tanh") */
    MTIART_UNARY_GELU_ERF = 9 /* exact x * Phi(x) (Phi: the normal CDF, through erfc), as
                               * torch's gelu(approximate="none") */
} mtiart_unary_op;

typedef enum mtiart_reduce_op {
    MTIART_REDUCE_SUM = 0,
    MTIART_REDUCE_MEAN = 1,
    MTIART_REDUCE_MAX = 2,
    MTIART_REDUCE_MIN = 3
} mtiart_reduce_op;

/* out = a OP b with numpy broadcasting of a and b to out's shape. a and b share a dtype;
 * out has that dtype (bool for comparisons). out may alias a or b exactly (in-place). */
MTIART_API mtiart_status mtiart_op_binary(mtiart_stream stream, mtiart_binary_op op,
                                          const mtiart_tensor_desc *out,
                                          const mtiart_tensor_desc *a, const mtiart_tensor_desc *b);

/* out = a OP scalar (or scalar OP a when `scalar_first`). The scalar is `fscalar` for
 * floating dtypes and `iscalar` for integer and bool dtypes. out and a have the same
 * shape; out may alias a. */
MTIART_API mtiart_status mtiart_op_binary_scalar(mtiart_stream stream, mtiart_binary_op op,
                                                 const mtiart_tensor_desc *out,
                                                 const mtiart_tensor_desc *a, double fscalar,
                                                 int64_t iscalar, int scalar_first);

/* out = OP(a), same shape and dtype (float dtypes for exp/log/sqrt/tanh/sigmoid and both
 * gelus). */
MTIART_API mtiart_status mtiart_op_unary(mtiart_stream stream, mtiart_unary_op op,
                                         const mtiart_tensor_desc *out,
                                         const mtiart_tensor_desc *a);

/* Reduce over all elements (dim == MTIART_REDUCE_ALL) or one dimension (negative counts
 * from the end); out's shape must match (keepdim or not). */
#define MTIART_REDUCE_ALL (-1000)
MTIART_API mtiart_status mtiart_op_reduce(mtiart_stream stream, mtiart_reduce_op op,
                                          const mtiart_tensor_desc *out,
                                          const mtiart_tensor_desc *a, int32_t dim, int keepdim);

/* out = a @ b for 2-D (m,k)x(k,n) or batched 3-D (B,m,k)x(B,k,n); float dtypes and ints. */
MTIART_API mtiart_status mtiart_op_matmul(mtiart_stream stream, const mtiart_tensor_desc *out,
                                          const mtiart_tensor_desc *a, const mtiart_tensor_desc *b);

/* Softmax over one dimension (float dtypes). */
MTIART_API mtiart_status mtiart_op_softmax(mtiart_stream stream, const mtiart_tensor_desc *out,
                                           const mtiart_tensor_desc *a, int32_t dim);

/* out = cond ? a : b with broadcasting; cond is bool. */
MTIART_API mtiart_status mtiart_op_where(mtiart_stream stream, const mtiart_tensor_desc *out,
                                         const mtiart_tensor_desc *cond,
                                         const mtiart_tensor_desc *a, const mtiart_tensor_desc *b);

/* out = a converted to out's dtype (same shape). */
MTIART_API mtiart_status mtiart_op_cast(mtiart_stream stream, const mtiart_tensor_desc *out,
                                        const mtiart_tensor_desc *a);

/* Fill every element of out with a value (fscalar for floats, iscalar otherwise). */
MTIART_API mtiart_status mtiart_op_fill(mtiart_stream stream, const mtiart_tensor_desc *out,
                                        double fscalar, int64_t iscalar);

/* out[i] = start + i * step over out's elements, in out's dtype. */
MTIART_API mtiart_status mtiart_op_arange(mtiart_stream stream, const mtiart_tensor_desc *out,
                                          double start, double step);

/* ------------------------------------------------------------------------------------ */
/* Saved graphs                                                                         */
/* ------------------------------------------------------------------------------------ */

/*
 * A graph saved to a file (docs/graph-format.md) can be loaded by another process, in C,
 * C++ or Python, instantiated and replayed. Built-in kernels are saved by their stable ids;
 * user kernels by (shared library, exported symbol). Memory the graph allocated while it
 * was captured is saved as offsets into its own pool and restored into a fresh pool
 * at load. Any other buffer a node touches must be named in a binding: an input
 * or output the loader supplies with mtiart_graph_exec_bind, or a constant whose contents
 * are embedded in the file. Host functions, Python kernels, kernels that are not exported
 * symbols of a shared library, waits for events the graph does not record, and buffers
 * that are neither the graph's nor named make the save fail with an error naming the node.
 *
 * Loading a file that names user-kernel libraries loads (runs) those libraries: a file
 * from an untrusted source is a code-execution vector. Load such files with
 * MTIART_LOAD_BUILTIN_KERNELS_ONLY, or MTIART_LOAD_RESTRICT_LIBRARIES and an allow-list.
 */

typedef enum mtiart_binding_flags {
    MTIART_BINDING_INPUT = 0,   /* supplied by the loader (read, or read and written) */
    MTIART_BINDING_OUTPUT = 1,  /* supplied by the loader, written by the graph */
    MTIART_BINDING_CONSTANT = 2 /* contents embedded in the file, restored at load */
} mtiart_binding_flags;

/* A named buffer of a graph being saved. `ptr` is device memory (or, for a buffer only
 * the host side of copies uses, host memory; constants must be device memory). Bindings
 * must not overlap. */
typedef struct mtiart_graph_binding {
    const char *name; /* 1..255 bytes, unique among the graph's bindings */
    const void *ptr;
    size_t bytes;
    uint32_t flags; /* an mtiart_binding_flags */
    uint32_t reserved;
} mtiart_graph_binding;

/* Save `graph` to `path`: written to a temporary file in the same directory, flushed to
 * disk and renamed over `path`, so that a failed save leaves nothing behind (and an
 * existing file as it was). Waits for the device when constants are read. */
MTIART_API mtiart_status mtiart_graph_save(mtiart_graph graph, const char *path,
                                           const mtiart_graph_binding *bindings,
                                           size_t num_bindings);

/* mtiart_graph_save of what an executable runs (with its latest update). */
MTIART_API mtiart_status mtiart_graph_exec_save(mtiart_graph_exec exec, const char *path,
                                                const mtiart_graph_binding *bindings,
                                                size_t num_bindings);

typedef enum mtiart_load_flags {
    MTIART_LOAD_DEFAULT = 0,
    /* Resolve user kernels only in libraries already loaded in the process or named (by
     * the exact path the file gives) in the allow-list; any other is refused. (A file can
     * still name any exported function of a loaded library as a kernel.) */
    MTIART_LOAD_RESTRICT_LIBRARIES = 1,
    /* Refuse every user kernel: the graph may only call the kernel library's built-ins.
     * The safe choice for a file from elsewhere. */
    MTIART_LOAD_BUILTIN_KERNELS_ONLY = 2
} mtiart_load_flags;

typedef struct mtiart_load_options {
    uint32_t flags; /* mtiart_load_flags */
    uint32_t num_allowed_libraries;
    const char *const *allowed_libraries;
} mtiart_load_options;

/* Load a saved graph onto `device` (options may be NULL: the defaults). The file is
 * treated as untrusted input: anything malformed is MTIART_ERROR_INVALID_VALUE, a file of
 * a newer major format version MTIART_ERROR_NOT_SUPPORTED, each with a message that says
 * what is wrong. Built-in kernels' saved parameters (shapes, strides, dtypes, ops) are
 * checked against the buffers their nodes pass, so a replay of an accepted file stays in
 * its memory; a refused launch is named by graph, node and argument. Instantiate it, bind its
 * inputs and outputs (mtiart_graph_exec_bind) and launch it. */
MTIART_API mtiart_status mtiart_graph_load(const char *path, int device,
                                           const mtiart_load_options *options, mtiart_graph *graph);

/* mtiart_graph_load from `size` bytes in memory. */
MTIART_API mtiart_status mtiart_graph_load_memory(const void *data, size_t size, int device,
                                                  const mtiart_load_options *options,
                                                  mtiart_graph *graph);

/* Bind the input or output `name` of an executable instantiated from a loaded graph to
 * `ptr` (at least the binding's size: `bytes`), for the replays launched from now on.
 * Launching while a binding is unbound fails (MTIART_ERROR_NOT_PERMITTED, naming it).
 * Binding again rebinds. Constants cannot be bound. */
MTIART_API mtiart_status mtiart_graph_exec_bind(mtiart_graph_exec exec, const char *name, void *ptr,
                                                size_t bytes);

/* The size in bytes of binding `name` of an executable instantiated from a loaded graph. */
MTIART_API mtiart_status mtiart_graph_exec_get_binding_size(mtiart_graph_exec exec,
                                                            const char *name, size_t *bytes);

/* The name of the built-in kernel with stable id `id` (what saved graphs store for kernels
 * of the kernel library: "mtiart_matmul"), or NULL if there is none. */
MTIART_API const char *mtiart_builtin_kernel_name(uint32_t id);

/* ------------------------------------------------------------------------------------ */
/* Graph checks                                                                          */
/* ------------------------------------------------------------------------------------ */

/* One side of a race: a top-level node of the graph and how it touches the bytes. */
typedef struct mtiart_race_node {
    uint64_t node;   /* top-level node index */
    uint64_t stream; /* id of the stream that captured the node (0: added by hand) */
    uint32_t access; /* MTIART_ARG_BUFFER_IN / OUT / INOUT, on the overlapping bytes */
    uint32_t reserved;
    char name[64]; /* as mtiart_node_info's */
} mtiart_race_node;

/* Two nodes with no path between them that touch the same bytes, one at least writing. */
typedef struct mtiart_race {
    mtiart_race_node first, second; /* first.node < second.node */
    uint64_t address;               /* the bytes both touch */
    uint64_t bytes;
} mtiart_race;

/* Find the races of a graph: every pair of nodes with no path between them whose device
 * buffers overlap, at least one of them writing (reads of the same bytes do not race).
 * Child and conditional nodes count as every buffer their bodies touch. Up to `capacity`
 * races are written to `races` (may be NULL when 0) in node order, one per pair and
 * contiguous range; *count gets how many there are. Cost: O(A log A + Q * c) for A buffer
 * uses, Q = O(A) reachability queries on a correct graph (more only where races are) and
 * c the nodes' chain decomposition (one O(nodes + edges) pass per chain queried). */
MTIART_API mtiart_status mtiart_graph_check_races(mtiart_graph graph, mtiart_race *races,
                                                  size_t capacity, size_t *count);

/* mtiart_graph_check_races on what an executable runs (its latest update). */
MTIART_API mtiart_status mtiart_graph_exec_check_races(mtiart_graph_exec exec, mtiart_race *races,
                                                       size_t capacity, size_t *count);

/* Who makes a call that invalidates a capture, as the calling program knows it: the
 * runtime fills `thread` with the thread's name and the rest with "" before calling the
 * caller hook, which may overwrite them (a binding names its language's thread and the
 * line being run). */
typedef struct mtiart_caller_info {
    char thread[64];    /* the calling thread's name */
    char call[64];      /* the program's name for the call ("synchronize()"), or "" */
    char location[256]; /* where it was made ("train.py:88 in step"), or "" */
} mtiart_caller_info;

typedef void (*mtiart_caller_hook)(mtiart_caller_info *info, void *user_data);

/* Install the hook the runtime calls, on the calling thread and holding no lock of its
 * own, when a call invalidates a capture (NULL removes it). The reason a capture keeps,
 * which the offending call's error, later calls into the capture and
 * mtiart_stream_end_capture report, reads "capture invalidated by <call>
 * (<mtiart function>) on thread '<thread>' (tid N) at <location> while stream S was
 * capturing in <mode> mode (<why>)". */
MTIART_API mtiart_status mtiart_set_caller_hook(mtiart_caller_hook hook, void *user_data);

/* Why the capture `stream` takes part in was invalidated, or, when the stream is not
 * capturing, why its last capture was (until it begins another): the text
 * mtiart_stream_end_capture reported. "" (length 0) when neither. NUL-terminated in
 * `buffer`, truncated to `capacity`; *length gets the full length (may be NULL). */
MTIART_API mtiart_status mtiart_stream_get_capture_invalidation(mtiart_stream stream, char *buffer,
                                                                size_t capacity, size_t *length);

/* Graphs sharing a memory pool are correct only when replayed in the order they were
 * captured and never concurrently: a graph may reuse memory that one captured before it
 * freed. The runtime numbers the graphs captured into each pool (0, 1, 2, ... in capture
 * order) and checks every launch of one whose pool has had several, from the pool's first
 * launch on: a graph may follow the one captured before it, itself, or start a new round
 * as the first graph; graphs no graph or executable holds any more are skipped. Anything
 * else is an out-of-order replay. A replay that starts while another graph of its pool is
 * still running is a concurrent one. Graphs with a pool of their own are never checked. */
typedef enum mtiart_pool_order_mode {
    MTIART_POOL_ORDER_WARN = 0,  /* report (the callback, else a line on stderr), run anyway:
                                  * the default */
    MTIART_POOL_ORDER_ERROR = 1, /* refuse: the launch fails with MTIART_ERROR_NOT_PERMITTED,
                                  * a concurrent replay does not run and its stream's next
                                  * synchronize reports it */
    MTIART_POOL_ORDER_OFF = 2    /* no check */
} mtiart_pool_order_mode;

/* Called with the description of a violation, on the launching thread (out of order) or on
 * the device worker starting the replay (concurrent), with no runtime lock held. */
typedef void (*mtiart_pool_order_fn)(int device, mtiart_pool_id pool, const char *message,
                                     void *user_data);

/* Set how violations of a shared pool's replay order are handled, and the callback that
 * reports them (NULL: stderr in MTIART_POOL_ORDER_WARN). */
MTIART_API mtiart_status mtiart_set_pool_order_check(mtiart_pool_order_mode mode,
                                                     mtiart_pool_order_fn fn, void *user_data);

/* Debug schedules: run a replay's nodes one at a time, in a valid topological order chosen
 * by a rule, to expose a missing dependency (a graph whose results change between
 * schedules lacks an edge). */
typedef enum mtiart_schedule {
    MTIART_SCHEDULE_DEFAULT = 0, /* the plan: independent branches on all workers at once */
    MTIART_SCHEDULE_SERIAL = 1,  /* one node at a time, the ready node captured first first */
    MTIART_SCHEDULE_REVERSE = 2, /* one node at a time, the ready node captured last first */
    MTIART_SCHEDULE_RANDOM = 3   /* one node at a time, a ready node drawn at random: the
                                  * order is a function of `seed` (29 bits of it) */
} mtiart_schedule;

/* Run the replays launched from now on in `schedule` (`seed`: for RANDOM). The default
 * costs nothing; the others run every top-level node on one worker, child graphs
 * flattened and a conditional node's body in its own plan. An executable with event wait
 * nodes cannot be scheduled (MTIART_ERROR_NOT_SUPPORTED: a wait could then hold the
 * replay's only worker); an unknown schedule is MTIART_ERROR_INVALID_VALUE. */
MTIART_API mtiart_status mtiart_graph_exec_set_schedule(mtiart_graph_exec exec,
                                                        mtiart_schedule schedule, uint64_t seed);

/* A copy of the graph's first `count` nodes (as mtiart_graph_clone; dependencies are always
 * earlier nodes, so they form a graph): running prefixes one node longer each time finds
 * the first node whose result is wrong. The copy holds the memory the whole graph holds;
 * the replay-time input check does not apply to it. `count` above the node count is
 * MTIART_ERROR_INVALID_VALUE; a graph with memory nodes, MTIART_ERROR_NOT_SUPPORTED. */
MTIART_API mtiart_status mtiart_graph_clone_prefix(mtiart_graph graph, size_t count,
                                                   mtiart_graph *clone);

/* ------------------------------------------------------------------------------------ */
/* Timeline trace                                                                       */
/* ------------------------------------------------------------------------------------ */

/* Start recording every stream operation the workers run and, inside graph replays, every
 * node: what it is, its stream, the worker that ran it, its start and end, the bytes it
 * touches, its graph and replay. One trace at a time (NOT_PERMITTED while one runs);
 * recording costs a few tens of nanoseconds per operation, nothing measurable when off. */
MTIART_API mtiart_status mtiart_trace_start(void);

/* Write what the running trace recorded so far to `path` as Chrome trace-event JSON
 * (chrome://tracing, https://ui.perfetto.dev): one process per device, one thread per
 * worker, a slice per operation, flow arrows from event records to the waits they release
 * and along a replay's edges between streams; work enqueued but not yet run is not in it.
 * The file is written beside `path` and renamed: it is complete or absent. */
MTIART_API mtiart_status mtiart_trace_flush(const char *path);

/* Stop the trace, writing it to `path` first as mtiart_trace_flush does (NULL: discard
 * it). What it recorded is released either way, also when writing fails. */
MTIART_API mtiart_status mtiart_trace_stop(const char *path);

#if !defined(MTIART_CDEF) && defined(__cplusplus)
}
#endif

#endif /* MTIART_H */
