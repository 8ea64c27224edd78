/* Extra cffi declarations appended to the cdef generated from include/mtiart.h.
 *
 * C helpers of the hot paths, defined in _cffi_source.c (which says what each returns):
 *   _mtia_capture_id     a stream's capture id in one call (mtia_graph._C.capture_id_of).
 *   _mtia_malloc_async   mtiart_malloc_async returning the block (mtia_graph._storage);
 *   _mtia_helper_status  the status of the calling thread's last failed helper call.
 *   _mtia_set_current_stream  records the calling thread's current stream of a device
 *                        (mtia_graph.streams does, whenever it changes) for the helpers
 *                        that take a device index instead of a stream;
 *   _mtia_add_scalar_float  Tensor.add_ of a Python number to a floating tensor, on that
 *                        stream; MTIA_NO_CURRENT_STREAM (positive, never a status of
 *                        libmtiart) when none is recorded for the calling thread state.
 *
 * A declaration ending in "keeps the GIL" gets a wrapper that holds the GIL across the call
 * (tools/gen_cffi.py), where cffi's would drop and retake it: only for calls that enqueue
 * and never wait, since a thread that holds the GIL must not wait for a worker, which may
 * need it for a Python kernel or host function (the callbacks below take it). Such a call
 * may still run the hooks below on the calling thread: taking the GIL again there is fine.
 *
 * Callbacks from libmtiart into Python. cffi API mode turns each `extern "Python"`
 * declaration into a C function that takes the GIL and calls the Python function
 * registered with @ffi.def_extern() under the same name:
 *   _mtia_host_trampoline  host functions (mtia_graph.callbacks); user_data is a
 *                          token naming the Python callable in a registry.
 *   _mtia_py_kernel        the one runtime kernel behind every @mtia_graph.kernel function
 *                          (mtia_graph.kernels); args[0] points at a uint64 registry key
 *                          naming the Python function and its argument layout, the
 *                          buffer arguments follow so the runtime tracks them.
 *   _mtia_oom_trampoline   the one out-of-memory observer libmtiart knows about
 *                          (mtia_graph.memory.attach_out_of_memory_observer); it calls the
 *                          Python observers in order.
 *   _mtia_caller_hook      the caller hook (mtia_graph.callbacks): names the Python thread,
 *                          the package function and the user's line of a call that
 *                          invalidates a capture.
 *   _mtia_pool_order_trampoline  reports a shared pool's replay out of order or concurrent
 *                          as a PoolOrderWarning (mtia_graph.checks).
 */
extern "Python" int32_t _mtia_host_trampoline(void *);
extern "Python" int32_t _mtia_py_kernel(void *const *, uint32_t, uint32_t);
extern "Python" void _mtia_oom_trampoline(int, uint64_t, uint64_t, uint64_t, uint64_t, void *);
extern "Python" void _mtia_caller_hook(mtiart_caller_info *, void *);
extern "Python" void _mtia_pool_order_trampoline(int, mtiart_pool_id, const char *, void *);

int64_t _mtia_capture_id(mtiart_stream);
void *_mtia_malloc_async(mtiart_stream, size_t);
mtiart_status _mtia_helper_status(void);
#define MTIA_NO_CURRENT_STREAM ...
void _mtia_set_current_stream(int, mtiart_stream); /* keeps the GIL */
mtiart_status _mtia_add_scalar_float(int, const mtiart_tensor_desc *, double); /* keeps the GIL */
