/* Internal declarations shared by the libmtiart sources. Not installed. */
#ifndef MTIART_INTERNAL_H
#define MTIART_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "mtiart.h"
#include "error.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MT_CACHELINE 64
#define MT_ALIGNED __attribute__((aligned(MT_CACHELINE)))

/* ---------------------------------------------------------------- sync primitives (sync.c) */

static inline void mt_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Every wait blocks at once instead of spinning first: set at initialisation under valgrind
 * (whose threads run one at a time, so a thread that spins only keeps the one it waits for
 * from running) and with MTIART_SPIN_US=0. Then spinlocks sleep on a futex when taken,
 * idle workers sleep, helpers of a job sleep until there is work for them, and host waits
 * sleep. */
extern bool mt_waits_block;

/* A test-and-test-and-set lock for the short critical sections of the hot paths. Natively
 * a contended lock spins, then yields; when waits block (mt_waits_block) it is a futex
 * mutex: 0 free, 1 taken, 2 taken with sleepers, whom the unlock wakes. */
typedef struct mt_spinlock {
    atomic_uint locked;
} mt_spinlock;

void mt_spin_lock_slow(mt_spinlock *lock);
void mt_spin_unlock_wake(mt_spinlock *lock);

static inline void mt_spin_lock(mt_spinlock *lock) {
    if (MT_LIKELY(!atomic_exchange_explicit(&lock->locked, 1, memory_order_acquire))) return;
    mt_spin_lock_slow(lock);
}

static inline void mt_spin_unlock(mt_spinlock *lock) {
    if (MT_UNLIKELY(mt_waits_block)) mt_spin_unlock_wake(lock);
    else atomic_store_explicit(&lock->locked, 0, memory_order_release);
}

void mt_futex_wait(atomic_uint *word, unsigned expected);
void mt_futex_wake(atomic_uint *word, int count);

/* How long a waiter spins before it sleeps, learnt from its own past waits: a wait that
 * ends within the longest spin (mt_spin_ns) raises the budget to twice its length (so
 * waits for short work keep spinning, whatever the occasional long one did); a longer
 * wait halves it, so a thread that waits for long kernels, or an idle worker once work
 * stops arriving, soon sleeps almost at once instead of burning a core the work could
 * use. Never below MT_SPIN_FLOOR_NS (a wait that got short again is noticed), always 0
 * when waits block. Updated without a lock: a lost update only delays the adaptation.
 *
 * A wait that slept is measured to the moment its waker woke it (woke_at), not to when the
 * scheduler ran the sleeper again: that latency (tens of microseconds on a loaded machine)
 * would make every short wait that once slept look longer than the longest spin, halve the
 * budget again, and keep two threads that wait for each other (a host and a worker) asleep
 * for good, a wake-up each way per launch. */
typedef struct mt_spin_budget {
    atomic_uint ns;
    atomic_uint_least64_t woke_at; /* mt_now_ns() of the latest mt_spin_budget_waking */
} mt_spin_budget;
#define MT_SPIN_FLOOR_NS 1000u

/* "No deadline" for the waits below. */
#define MT_FOREVER UINT64_MAX
/* The mt_now_ns() deadline `timeout_ns` from now (MT_FOREVER for UINT64_MAX). */
uint64_t mt_deadline_after(uint64_t timeout_ns);

void mt_spin_budget_init(mt_spin_budget *b, uint64_t max_ns);
static inline uint64_t mt_spin_budget_ns(const mt_spin_budget *b) {
    return atomic_load_explicit(&b->ns, memory_order_relaxed);
}
/* Learn from a wait of `waited_ns` in total (spinning and sleeping). */
void mt_spin_budget_learn(mt_spin_budget *b, uint64_t waited_ns, uint64_t max_ns);
/* Learn from a wait that began at `start` (mt_now_ns) and ends now, or, if it went to sleep
 * at `slept_at` (0: it did not) and was woken since, when its waker woke it. */
void mt_spin_budget_learn_wait(mt_spin_budget *b, uint64_t start, uint64_t slept_at,
                               uint64_t max_ns);
/* A waker, before it wakes threads asleep in waits of budget b: their waits end now. Called
 * only where a wake-up (a system call) follows, so its clock read costs nothing extra. */
void mt_spin_budget_waking(mt_spin_budget *b);

/* Whether the process runs under valgrind (device.c): ops then open the buffers they
 * describe to memcheck while they run (mt_alloc_vg_enter). */
extern bool mt_under_valgrind;
/* Valgrind only: the allocator's quarantine of freed blocks, in bytes. */
extern uint64_t mt_vg_quarantine_bytes;

struct mt_stream;

/* Host side of a completion counter: wait until *counter >= target, spinning for the
 * budget (NULL: not at all) first, then sleeping on `word` (the counter's low bits, which
 * the completing side stores before it checks *waiters and wakes). With `wake_at`
 * (NULL: every completion wakes), a sleeper first lowers it to its target, and the
 * completing side wakes only once the counter reaches it (mt_counter_should_wake). false if
 * `deadline` (mt_now_ns; MT_FOREVER: none) came first. With `help` (the stream waited for;
 * NULL: none) the waiter takes the device's spinner role while it spins, if it is free
 * and a worker sleeps: it runs pieces of the stream's jobs as they are posted (which then
 * wake no sleeping worker), and each piece run starts its spin afresh. */
bool mt_wait_counter(atomic_uint_least64_t *counter, uint64_t target, atomic_uint *word,
                     atomic_int *waiters, atomic_uint_least64_t *wake_at, mt_spin_budget *budget,
                     uint64_t deadline, const struct mt_stream *help);

/* Completing side of mt_wait_counter with `wake_at`, after the counter (now `value`) was
 * stored and before `word` changes: whether the sleepers must be woken (then wake_at is
 * cleared, and each sleeper that still waits lowers it again). */
static inline bool mt_counter_should_wake(atomic_uint_least64_t *wake_at, uint64_t value) {
    if (value < atomic_load(wake_at)) return false;
    atomic_store(wake_at, UINT64_MAX);
    return true;
}

/* The longest spin before sleeping, in nanoseconds (MTIART_SPIN_US; 0 when waits block). */
extern uint64_t mt_spin_ns;
/* The longest a worker keeps a drained stream, waiting for more ops (0 when waits block). */
extern uint64_t mt_linger_ns;
/* The longest a job's owner or helper spins for the others (0 when waits block). Longer
 * than mt_spin_ns: whoever it waits for is running a task, whose end brings the next tasks
 * or the job's end, and a sleep's wake-up (tens of microseconds on virtual machines) would
 * be paid once per such task. The job budget still halves once tasks outlast this. */
extern uint64_t mt_job_spin_ns;
uint64_t mt_now_ns(void);

/* ---------------------------------------------------------------- handles (handle.c) */

enum mt_kind { MT_KIND_STREAM = 1, MT_KIND_EVENT = 2, MT_KIND_GRAPH = 3, MT_KIND_EXEC = 4 };

/* A handle is (generation << 28) | (slot index << 4) | kind. A slot's `state` is
 * (generation << 28) | (kind << 24) | pins, so one comparison checks a handle's generation
 * and kind; the generation is odd while the handle is live (see handle.c for the rule). */
#define MT_HANDLE_KIND_BITS 4
#define MT_HANDLE_INDEX_BITS 24
#define MT_HANDLE_GEN_SHIFT (MT_HANDLE_KIND_BITS + MT_HANDLE_INDEX_BITS)
#define MT_HANDLE_CHUNK_SLOTS 4096
#define MT_PIN_BITS 24
#define MT_PIN_MASK ((UINT64_C(1) << MT_PIN_BITS) - 1)
typedef struct mt_handle_slot {
    atomic_uint_least64_t state;
    void *object;
    void (*release)(void *object); /* drops the table's reference */
    uint32_t index, next_free;
} mt_handle_slot;

/* Slots, in chunks that are allocated once and never freed or moved. */
extern _Atomic(mt_handle_slot *) mt_handle_chunks[];

/* A call's hold on a handle: from a successful mt_handle_pin until mt_handle_unpin. */
typedef struct mt_pin {
    mt_handle_slot *slot;
} mt_pin;

/* Register an object under a new handle. `release` drops the table's reference once the
 * handle is destroyed and no call holds it any more. On failure (table full) `release` is
 * called at once and MTIART_ERROR_OUT_OF_MEMORY returned. */
mtiart_status mt_handle_register(void *object, unsigned kind, void (*release)(void *),
                                 uint64_t *handle);
/* Destroy the pinned handle: new lookups fail from now on, and the table's reference is
 * dropped when the last call holding it returns. false if another destroy came first. */
bool mt_handle_retire(mt_pin *pin);
/* Whether the pinned handle has not been destroyed (yet). */
static inline bool mt_handle_alive(const mt_pin *pin) {
    return (atomic_load(&pin->slot->state) >> MT_HANDLE_GEN_SHIFT) & 1;
}
void mt_handle_last_out(mt_handle_slot *slot) __attribute__((noinline, cold));
static inline void mt_handle_unpin(mt_handle_slot *slot) {
    uint64_t before = atomic_fetch_sub_explicit(&slot->state, 1, memory_order_acq_rel);
    /* The last call out of a destroyed handle releases the object. */
    if (MT_UNLIKELY((before & MT_PIN_MASK) == 1 && !((before >> MT_HANDLE_GEN_SHIFT) & 1)))
        mt_handle_last_out(slot);
}
static inline void mt_pin_release(mt_pin *pin) {
    if (pin->slot) mt_handle_unpin(pin->slot);
}

/* The object a live handle of `kind` names, pinned in `pin`; NULL (nothing pinned) for a
 * NULL, destroyed, forged or wrong-kind handle. One compare-and-swap. */
static inline void *mt_handle_pin(uint64_t handle, unsigned kind, mt_pin *pin) {
    uint32_t index = (uint32_t)(handle >> MT_HANDLE_KIND_BITS) & ((1u << MT_HANDLE_INDEX_BITS) - 1);
    uint64_t expect = (handle >> MT_HANDLE_GEN_SHIFT) << MT_HANDLE_KIND_BITS | kind;
    if (MT_UNLIKELY((handle & ((1u << MT_HANDLE_KIND_BITS) - 1)) != kind || index == 0 ||
                    !((handle >> MT_HANDLE_GEN_SHIFT) & 1)))
        return NULL;
    mt_handle_slot *chunk = atomic_load_explicit(&mt_handle_chunks[index / MT_HANDLE_CHUNK_SLOTS],
                                                 memory_order_acquire);
    if (MT_UNLIKELY(!chunk)) return NULL;
    mt_handle_slot *s = &chunk[index % MT_HANDLE_CHUNK_SLOTS];
    uint64_t state = atomic_load_explicit(&s->state, memory_order_relaxed);
    do {
        if (MT_UNLIKELY(state >> MT_PIN_BITS != expect)) return NULL;
    } while (!atomic_compare_exchange_weak_explicit(&s->state, &state, state + 1,
                                                    memory_order_acquire, memory_order_relaxed));
    pin->slot = s;
    return s->object;
}

#define MT_HANDLE_VALUE(h) ((uint64_t)(uintptr_t)(h))

/* Look a handle up as `type *var`, pinned until the calling function returns (the pin,
 * `var##_pin`, is released by a cleanup attribute on every return path), or return
 * MTIART_ERROR_INVALID_HANDLE from the calling public function: "<function>: invalid
 * <label> handle <value> (NULL, destroyed or not <noun>)". */
#define MT_LOOKUP(var, type, kind, handle, label, noun)                                            \
    mt_pin var##_pin __attribute__((cleanup(mt_pin_release))) = {NULL};                            \
    type *var = mt_handle_pin(MT_HANDLE_VALUE(handle), (kind), &var##_pin);                        \
    if (MT_UNLIKELY(!var))                                                                         \
    return mt_set_error(MTIART_ERROR_INVALID_HANDLE,                                               \
                        "invalid " label " handle %p (NULL, destroyed or not " noun ")",           \
                        (void *)(handle))
#define LOOKUP_STREAM(var, handle)                                                                 \
    MT_LOOKUP(var, struct mt_stream, MT_KIND_STREAM, handle, "stream", "a stream")
#define LOOKUP_EVENT(var, handle)                                                                  \
    MT_LOOKUP(var, struct mt_event, MT_KIND_EVENT, handle, "event", "an event")
#define LOOKUP_GRAPH(var, handle)                                                                  \
    MT_LOOKUP(var, struct mt_graph, MT_KIND_GRAPH, handle, "graph", "a graph")
#define LOOKUP_EXEC(var, handle)                                                                   \
    MT_LOOKUP(var, struct mt_exec, MT_KIND_EXEC, handle, "graph exec", "an executable graph")

/* ---------------------------------------------------------------- forward types */

typedef struct mt_device mt_device;
typedef struct mt_stream mt_stream;
typedef struct mt_event mt_event;
typedef struct mt_graph mt_graph;
typedef struct mt_exec mt_exec;
typedef struct mt_capture mt_capture;
typedef struct mt_pool mt_pool;
typedef struct mt_graph_mem mt_graph_mem;
typedef struct mt_graph_alloc mt_graph_alloc;
typedef struct mt_dag mt_dag;
typedef struct mt_plan mt_plan;
typedef struct mt_artifact mt_artifact; /* a loaded graph file (serialize.c) */
typedef struct mt_bindings mt_bindings; /* an executable's bindings (serialize.c) */
typedef struct mt_blocks mt_blocks;     /* device memory of a loaded graph (serialize.c) */

/* ---------------------------------------------------------------- operations */

enum mt_op_type {
    MT_OP_KERNEL = 0,
    MT_OP_MEMCPY = 1,
    MT_OP_FILL = 2,
    MT_OP_HOST = 3,
    MT_OP_EVENT_RECORD = 4,
    MT_OP_EVENT_WAIT = 5,
    MT_OP_EMPTY = 6,
    MT_OP_GRAPH = 7,
    MT_OP_CHILD = 8,       /* graph nodes only: the node's body, flattened at instantiation */
    MT_OP_CONDITIONAL = 9, /* graph nodes only: runs the node's body while/if a flag is set */
    MT_OP_MEM_ALLOC = 10,  /* memory nodes: nothing runs, their launch accounts for them */
    MT_OP_MEM_FREE = 11,
};

#define MT_OP_INLINE_BYTES 80
#define MT_MAX_ARGS 64

/*
 * One stream operation: what a stream queue slot holds and what a graph node records.
 * Kernel arguments are packed into a blob: uint16 count, uint16 offsets (in 8-byte units),
 * then the values at 8-byte aligned offsets. Small blobs live inline in the op (no
 * allocation on the enqueue path); larger ones on the heap.
 */
typedef struct mt_op {
    uint32_t type;
    uint32_t num_blocks;
    union {
        mtiart_kernel_fn kernel;
        mtiart_host_fn host;
    } fn;
    union {
        struct {
            uint8_t *heap_blob;
            uint32_t blob_size;
            /* under valgrind only: its buffers' table at the blob's end (mt_op_buffers) */
            uint16_t vg_buffers, vg_table; /* count; offset in 8-byte units */
            const char *label;             /* the launcher's name for it (interned), or NULL */
        } kernel;
        struct {
            void *user_data;
        } host;
        struct {
            void *dst;
            const void *src;
            size_t bytes;
            uint32_t kind;
        } copy;
        struct {
            void *dst;
            uint64_t pattern;
            size_t count;
            uint32_t size;
        } fill;
        struct {
            mt_event *event;
            uint64_t generation;
        } event;
        struct {
            mt_exec *exec;
            uint64_t generation; /* of the executable's done event */
            uint64_t *slots;     /* more event generations than fit inline (exec.c) */
            uint32_t checks;     /* MT_LAUNCH_* bits */
        } graph;
        struct {
            mt_graph_alloc *alloc; /* a reference */
        } mem;
        struct {
            const void *flag; /* device memory: the body runs while (or if) it is non-zero */
            mt_plan *body;    /* in an executable: the body's plan (owned by the executable) */
            uint32_t flag_size;
            uint32_t kind; /* an mtiart_conditional_type */
        } cond;
    } u;
    uint8_t inline_blob[MT_OP_INLINE_BYTES] __attribute__((aligned(8)));
} __attribute__((aligned(MT_CACHELINE))) mt_op; /* whole cache lines: no false sharing
                                                 * between a producer and the consumer */

/* A GRAPH op's `checks`: its pool is shared (the replay checks it runs alone); the debug
 * schedule it runs in (an mtiart_schedule, 0: the plan's) and, for a random one, 29 bits
 * of its seed. Kept in the op so that a later change applies to later launches only. */
#define MT_LAUNCH_POOL_ORDER 1u
#define MT_LAUNCH_SCHEDULE_SHIFT 1
#define MT_LAUNCH_SCHEDULE_MASK 3u
#define MT_LAUNCH_SEED_SHIFT 3

/* The argument blob of a kernel op. */
static inline uint8_t *mt_op_blob(mt_op *op) {
    return op->u.kernel.heap_blob ? op->u.kernel.heap_blob : op->inline_blob;
}

/* ---------------------------------------------------------------- operations (op.c) */

/* Room for the description of a failed kernel or host function. */
#define MT_FAILURE_MAX 512

/* Pack launch arguments into op (inline or heap). */
mtiart_status mt_op_pack_kernel(mt_op *op, mtiart_kernel_fn fn, uint32_t num_blocks,
                                const mtiart_arg *args, uint32_t num_args);
/* One device buffer an op touches: a kernel's buffer argument, a copy's or a fill's device
 * side. Graph nodes list them; the allocator checks (and graphs record) what they name. */
typedef struct mt_buffer {
    const void *ptr;
    uint64_t bytes;
    uint32_t access;  /* MTIART_ARG_BUFFER_IN / OUT / INOUT */
    int32_t arg;      /* the kernel argument it is, or -1 */
    const char *name; /* for messages: "kernel argument", "destination", "source" */
} mt_buffer;
/* The device buffers of an op (at most MT_MAX_ARGS); `args` describes a kernel op's
 * arguments (NULL: a packed op's own table, which kernels have under valgrind only).
 * Returns how many were written to `out`. */
uint32_t mt_op_buffers(const mt_op *op, const mtiart_arg *args, uint32_t num_args, mt_buffer *out);
/* Validate and pack a copy or a fill: MTIART_MEMCPY_DEFAULT is resolved from the pointers.
 * Its device sides are checked where the op is submitted or recorded (mt_check_buffers
 * over mt_op_buffers: one lookup, which also records what a graph holds). An op of 0
 * bytes (elements) is valid and does nothing; a stream need not enqueue it. */
mtiart_status mt_op_pack_memcpy(mt_op *op, void *dst, const void *src, size_t bytes,
                                mtiart_memcpy_kind kind);
mtiart_status mt_op_pack_fill(mt_op *op, void *dst, const void *pattern, uint32_t pattern_size,
                              size_t count);
/* A conditional node's op: `flag` (1, 2, 4 or 8 bytes, aligned) in a live allocation of
 * dev (checked at once, for work of `owner`). */
mtiart_status mt_op_pack_conditional(mt_op *op, mt_device *dev, const char *owner,
                                     mtiart_conditional_type type, const void *flag,
                                     uint32_t flag_size);
/* Whether two ops do the same work with the same parameters (an update may skip them). */
bool mt_op_equal(mt_op *a, mt_op *b);
/* Fill argv[] with pointers to the values of a packed blob; returns the count. */
uint32_t mt_blob_argv(uint8_t *blob, void **argv);
/* Release what an op owns (heap blob, event reference). GRAPH ops are not op.c's: only
 * stream queues hold them, and stream.c releases them. */
void mt_op_release(mt_op *op);
/* Deep copy (heap blob duplicated, references taken). On failure dst is an EMPTY op. */
mtiart_status mt_op_clone(mt_op *dst, const mt_op *src);
/* Run a KERNEL (over its blocks, with the device's workers helping), MEMCPY, FILL or HOST
 * op on the calling worker; event and empty ops have nothing to run. `argv`: the kernel's
 * argument vector, or NULL to unpack it from the op. Returns 0, or the code a failed
 * kernel or host function returned with `failure` describing it. */
int32_t mt_op_run(mt_device *dev, mt_op *op, void **argv, char *failure, size_t cap);
/* The one description of a failure: "kernel NAME failed (code C): MESSAGE" (fn NULL: a
 * host function). `message`: what the kernel set with mtiart_kernel_set_error_message,
 * or NULL to take the calling worker's. */
void mt_describe_failure(mtiart_kernel_fn fn, int32_t code, const char *message, char *out,
                         size_t cap);
/* A kernel's name for messages and dumps (a name the program gave it, the built-in's, then
 * the dynamic symbol); NUL-terminated. */
void mt_kernel_name(mtiart_kernel_fn fn, char *out, size_t cap);
/* A copy of `label` that lives as long as the process, the same pointer for equal texts
 * (launch labels are few: the names of the functions programs launch); NULL on OOM. */
const char *mt_intern_label(const char *label);
/* One launch of `fn` with the packed arguments `blob` as a short text: a built-in kernel
 * describes its operation ("matmul 32x256 @ 256x512", "softmax dim=-1"), any other kernel
 * gives its name. NUL-terminated. */
void mt_kernel_describe(mtiart_kernel_fn fn, const uint8_t *blob, char *out, size_t cap);

/* ---------------------------------------------------------------- built-in kernels
 * (kernels/registry.c) The kernel library's kernels, each with a stable numeric id (saved
 * graphs store it; ids are never renumbered) and a name. 0 / NULL: not a built-in. */
uint32_t mt_builtin_kernel_id(mtiart_kernel_fn fn);
mtiart_kernel_fn mt_builtin_kernel_by_id(uint32_t id);
const char *mt_builtin_kernel_name(mtiart_kernel_fn fn);
/* Describe a launch of the built-in `fn` from its argument vector (the kernel's `args`);
 * snprintf's contract, or -1 when fn is not a built-in. */
int mt_builtin_kernel_describe(mtiart_kernel_fn fn, void *const *argv, uint32_t nargs, char *out,
                               size_t cap);
/* Check a launch of the built-in `fn` read from a saved graph: its parameter struct
 * (`size` bytes), the byte extents of its `nbufs` buffers and the alignment of their
 * starts, and its block count. -1 when the kernel runs it in bounds, else the argument at
 * fault (0: the parameters, 1 + i: buffer i) with the reason in `why`. */
int mt_builtin_kernel_validate(mtiart_kernel_fn fn, const void *params, uint32_t size,
                               const uint64_t *extent, const uint64_t *align, uint32_t nbufs,
                               uint32_t num_blocks, char *why, size_t cap);

/* ---------------------------------------------------------------- devices (device.c) */

/* An idle worker spins for any new work; a host waiting for a stream spins for its jobs
 * (mt_wait_counter), so everything else still wakes a worker. */
#define MT_SPINNER_WORKER 1
#define MT_SPINNER_HOST 2

#define MT_NUM_PRIORITIES 4 /* priorities 0 (least) .. -3 (greatest) */
#define MT_MAX_JOBS 32

/* Work that several workers can help with (a multi-block kernel, a graph replay): its
 * owner posts it (mt_job_post), runs `help` itself, then retires it (mt_job_retire); idle
 * workers that see the posted slot run `help` too, announcing themselves in `users` first
 * so that the owner waits for them to leave. `help` returns once no work is left. */
typedef struct mt_job {
    void (*help)(struct mt_job *job);
    /* A host thread waiting for `stream` (mt_stream_wait_idle) may run pieces too, one at a
     * time, while a worker of the device sleeps (so a CPU is idle) and its deadline (mt_now_ns)
     * is ahead; sets *ran if it ran any, and returns whether nothing is left to hand out.
     * NULL: workers only (a graph replay's tasks may wait for events or run host functions
     * that the waiting thread must not run itself). */
    bool (*help_host)(struct mt_job *job, struct mt_device *dev, uint64_t deadline, bool *ran);
    const struct mt_stream *stream; /* whose op posted it (mt_running_stream; mt_job_post) */
} mt_job;

/* A posted job is open until its help function has returned once (no work is left to
 * hand out) or its owner retires it; workers help open jobs only, so a job whose last
 * pieces are still running keeps nobody spinning on it. */
typedef struct mt_job_slot {
    _Atomic(mt_job *) job;
    atomic_uint users;    /* helpers inside (or about to look at) the job; futex word */
    atomic_uint open;     /* see above; counted in the device's open_jobs */
    atomic_uint retiring; /* owners sleeping until users drops to 0 */
    char pad[MT_CACHELINE - sizeof(void *) - 3 * sizeof(unsigned)];
} mt_job_slot;

struct mt_allocator;

struct mt_device {
    int index;
    int num_workers;
    uint64_t capacity;
    pthread_t *threads;
    int threads_started;

    mt_spinlock ready_lock MT_ALIGNED;
    mt_stream *ready_head[MT_NUM_PRIORITIES];
    mt_stream *ready_tail[MT_NUM_PRIORITIES];
    atomic_uint ready_count;

    atomic_uint wake_word MT_ALIGNED;
    atomic_int sleepers;
    atomic_int spinning; /* who spins for new work: 0 nobody, MT_SPINNER_WORKER or _HOST */
    /* the stream the host spinner waits for: its jobs wake nobody (the host helps them) */
    _Atomic(const struct mt_stream *) spinner_stream;
    atomic_int shutdown;
    mt_spin_budget idle_budget; /* idle workers: how long one spins for new work */
    mt_spin_budget job_budget;  /* job owners waiting for helpers, helpers for tasks */

    mt_job_slot jobs[MT_MAX_JOBS] MT_ALIGNED;
    atomic_int open_jobs; /* posted jobs still open (see mt_job_slot) */

    pthread_mutex_t streams_lock;
    mt_stream *streams; /* every live stream of the device */
    mt_stream *default_stream;
    /* streams destroyed and freed so far: when the allocator's census of live streams is
     * worth taking again */
    atomic_uint streams_destroyed, streams_freed;

    struct mt_allocator *alloc;
};

extern int mt_num_devices;
extern mt_device *mt_devices;

/* Initialise lazily. Public functions that do not start from a handle (which only an
 * initialised runtime hands out) call this first, directly or through LOOKUP_DEVICE. */
mtiart_status mt_ensure_init(void);
#define MT_INIT_OR_RETURN()                                                                        \
    do {                                                                                           \
        if (MT_UNLIKELY(!mt_initialized)) {                                                        \
            mtiart_status st__ = mt_ensure_init();                                                 \
            if (st__ != MTIART_SUCCESS) return st__;                                               \
        }                                                                                          \
    } while (0)
extern atomic_int mt_initialized;

mtiart_status mt_get_device(int index, mt_device **out);
/* Look a device up as `mt_device *var`, or return the error (bad index, failed
 * initialisation) from the calling public function. */
#define LOOKUP_DEVICE(var, index)                                                                  \
    mt_device *var = NULL;                                                                         \
    do {                                                                                           \
        mtiart_status lookup_st_ = mt_get_device((index), &var);                                   \
        if (MT_UNLIKELY(lookup_st_ != MTIART_SUCCESS)) return lookup_st_;                          \
    } while (0)
/* Whether the calling thread runs device work: a worker, or a host thread running a piece
 * of a job while it waits (mt_wait_counter). Set only by those two (device.c, sync.c). */
extern _Thread_local bool mt_tl_on_worker;
/* The stream whose op the calling thread is running (NULL: none), so that the jobs the op
 * posts name it (stream.c sets it, helpers take it from the job they help). */
extern _Thread_local const struct mt_stream *mt_running_stream;
/* Whether the calling thread is one of the runtime's workers (or running device work). */
bool mt_on_worker(void);
/* NOT_PERMITTED on a worker (inside a kernel or host function): a wait for the device
 * there would deadlock. */
mtiart_status mt_check_may_wait(void);

/* Wake a sleeping worker of the device (up to `count`) for new work (sync.c). */
void mt_device_wake(mt_device *dev, int count);
/* Publish a job for the device's idle workers; returns its slot, or NULL when the owner
 * is on its own (a one-worker device, every slot taken). (sync.c) */
mt_job_slot *mt_job_post(mt_device *dev, mt_job *job);
/* Run pieces of the device's open jobs; whether any ran. A worker (host_for NULL) helps
 * every open job until it has nothing left to hand out. A host thread waiting for stream
 * `host_for` runs the pieces of that stream's jobs that hosts may help with
 * (mt_job.help_host), one at a time while `deadline` is ahead. (sync.c) */
bool mt_help_jobs(mt_device *dev, const struct mt_stream *host_for, uint64_t deadline);
/* Withdraw a posted job (NULL: nothing); returns once no helper is inside it. */
void mt_job_retire(mt_device *dev, mt_job_slot *slot);
/* Whether the device has work that an awake worker would take (streams ready, jobs open,
 * or its shutdown). */
static inline bool mt_device_has_work(mt_device *dev) {
    return atomic_load(&dev->ready_count) != 0 || atomic_load(&dev->open_jobs) != 0 ||
           atomic_load(&dev->shutdown) != 0;
}

/* ---------------------------------------------------------------- streams (stream.c) */

enum mt_sched {
    MT_SCHED_IDLE = 0,
    MT_SCHED_QUEUED = 1,
    MT_SCHED_RUNNING = 2,
    MT_SCHED_BLOCKED = 3,
    /* drained, its worker polling for more: a thread about to wait for a blocking copy
     * may take it over (-> RUNNING) and run the copy itself. The value carries the linger's
     * number above MT_SCHED_STATE_BITS: a worker preempted while lingering must not take
     * back a stream that was taken over, handed back and is lingering again under another
     * worker, which a bare state would let its compare-and-swap do. */
    MT_SCHED_LINGERING = 4
};
#define MT_SCHED_STATE_BITS 3
#define MT_SCHED_STATE(sched) ((sched) & ((1 << MT_SCHED_STATE_BITS) - 1))

#define MT_CHUNK_OPS 64
typedef struct mt_chunk {
    mt_op ops[MT_CHUNK_OPS];
    struct mt_chunk *next;
} mt_chunk;

struct mt_stream {
    atomic_int refcount;
    uint64_t handle;
    uint64_t id;
    mt_device *dev;
    int priority;
    bool is_default;

    /* producer side, private to producers */
    mt_spinlock enqueue_lock MT_ALIGNED;
    mt_chunk *tail_chunk;
    uint32_t tail_pos;
    /* ops published so far (the value of `enqueued`), the producers' own copy: reading
     * `enqueued` to bump it would pull its line back from the consumer polling it first,
     * a second cross-core transfer per op besides the store's */
    uint64_t appended;

    /* what producers publish and the consumer polls, on a line of its own so that the
     * producers' lock and tail writes do not bounce it; `sched` is read by producers on
     * every enqueue and written by the consumer only when it lingers or hands the stream back */
    atomic_uint_least64_t enqueued MT_ALIGNED;
    atomic_int sched;
    /* mt_now_ns() when the consumer's last linger began, if it ran out before the next op
     * came (0: none since); whoever takes the stream from IDLE next learns from it how far
     * off that op was (see linger_for_work) */
    atomic_uint_least64_t linger_missed_since;

    /* consumer side: one worker at a time; private to it, so it shares no cache line
     * with what producers write */
    mt_chunk *head_chunk MT_ALIGNED;
    uint32_t head_pos;
    uint64_t consumed;
    uint64_t known_enqueued; /* last value of `enqueued` the consumer read */
    _Atomic(mt_chunk *) spare_chunk;
    mt_stream *ready_next;
    mt_spin_budget linger_budget; /* how long the consumer keeps the stream once drained */
    unsigned lingers;             /* numbers each linger's `sched` value */

    atomic_uint_least64_t completed MT_ALIGNED;
    atomic_uint completed_word; /* futex: low bits of completed */
    atomic_int host_waiters;
    atomic_uint_least64_t wake_at; /* the lowest target of a sleeping host waiter */
    mt_spin_budget wait_budget;    /* host threads synchronizing with the stream */
    /* whether the last job its ops posted took a waiting host's help (mt_job.help_host): a
     * host takes the spinner role for the stream's jobs only then */
    atomic_bool host_may_help;

    /* sticky error of a failed kernel or host function */
    mt_spinlock error_lock;
    atomic_int error_status;
    char error_message[512];

    /* capture state: `capture` (and `capture_id`, its id, for readers that hold no capture
     * lock) changes under captures_lock and the capture's lock; the frontier under the
     * capture's lock */
    _Atomic(mt_capture *) capture;
    atomic_uint_least64_t capture_id;
    size_t *frontier;
    size_t frontier_len, frontier_cap;
    struct mt_scope *scope; /* the innermost conditional body the stream captures into */
    uint32_t flags;         /* mtiart_stream_flags given at creation */
    /* why the last capture begun on the stream was invalidated (heap; NULL: it was not),
     * under captures_lock */
    char *last_invalidation;

    mt_stream *dev_prev, *dev_next; /* device stream list */
    atomic_int destroyed;           /* its handle was destroyed: no new work comes */
};

/* The default stream of a device being initialised. */
mtiart_status mt_stream_create_default(mt_device *dev);
void mt_stream_ref(mt_stream *s);
void mt_stream_unref(mt_stream *s);
/* Take a reference unless the stream is already being freed (for walks of the device's
 * stream list, under its lock). */
bool mt_stream_try_ref(mt_stream *s);
/* Enqueue a filled op, or record it as a graph node when the stream is capturing. `args`
 * describe the buffers of a kernel op (for the graph's buffer list); may be NULL. On
 * failure the op has been released. */
mtiart_status mt_stream_submit(mt_stream *s, mt_op *op, const mtiart_arg *args, uint32_t num_args);
/* Enqueue an op whatever the stream's capture state. */
mtiart_status mt_stream_enqueue(mt_stream *s, mt_op *op);
/* Wait for the stream to finish everything enqueued before the call, then report its sticky
 * error if `report`; MTIART_NOT_READY (no message, nothing reported) if `deadline` (mt_now_ns,
 * or MT_FOREVER) comes first. `help`: the caller holds no lock of the runtime, so it may run
 * pieces of the stream's kernels while it waits (see mt_wait_counter). */
mtiart_status mt_stream_wait_idle(mt_stream *s, bool report, bool help, uint64_t deadline);
/* Worker: the most urgent stream on the device's ready lists (QUEUED), or NULL. */
mt_stream *mt_stream_pop_ready(mt_device *dev);
/* Worker entry: drain a stream taken from the ready lists. */
void mt_stream_run(mt_stream *s);

/* ---------------------------------------------------------------- events (event.c) */

typedef struct mt_event_waiter {
    mt_stream *stream;
    uint64_t generation;
} mt_event_waiter;

/* What recording threads write and what the worker completing a record writes sit on
 * lines of their own (mt_event_new aligns events). */
struct mt_event {
    atomic_int refcount;
    uint64_t handle;
    uint32_t flags;
    /* capture: the event was recorded on a capturing stream. Atomic: an eager record
     * clears it while other threads wait on or query the event. `capture_deps` are the
     * nodes the recording stream's next operation would have depended on (what a wait on
     * the event joins), in the conditional body `capture_scope` (0: the capture's graph). */
    _Atomic(mt_capture *) capture;
    size_t *capture_deps;
    size_t capture_deps_len, capture_deps_cap;
    uint64_t capture_scope;

    /* Written as records are enqueued (by every launch of a graph, of its done event), on
     * a line of their own: the worker that completes a record reads the fields above. */
    atomic_uint_least64_t reserved MT_ALIGNED; /* generations handed out to records */
    atomic_uint_least64_t recorded;            /* generation of the latest record enqueued */

    atomic_uint_least64_t completed MT_ALIGNED; /* generation of the latest record executed */
    atomic_uint completed_word;                 /* futex */
    atomic_int host_waiters;
    mt_spin_budget wait_budget; /* host threads synchronizing with the event */
    uint64_t timestamp_ns;      /* of the completed generation */
    mt_spinlock lock;
    mt_event_waiter *waiters;
    atomic_size_t num_waiters; /* changes under lock; read without it (mt_event_take_ready) */
    size_t cap_waiters;
};

mt_event *mt_event_new(uint32_t flags);
void mt_event_ref(mt_event *e);
void mt_event_unref(mt_event *e);
/* Worker: an EVENT_RECORD op executed; publishes it and wakes host waiters. */
void mt_event_complete(mt_event *e, uint64_t generation);
/* mt_event_complete in two steps, for a worker with more to publish before the wake. */
void mt_event_publish(mt_event *e, uint64_t generation);
void mt_event_wake(mt_event *e);
/* Worker, after mt_event_complete: move up to `cap` parked streams whose wait is now
 * satisfied into `out`; returns how many (the caller puts them back to work and calls
 * again until none is left). */
size_t mt_event_take_ready(mt_event *e, mt_stream **out, size_t cap);
/* Worker: returns true if the wait is satisfied, else parks `s` (BLOCKED, set under the
 * event's lock) on the event's waiter list. */
bool mt_event_wait_or_park(mt_event *e, uint64_t generation, mt_stream *s);
/* Enqueue a wait of `s` for `generation` of `e` (nothing if already complete or never
 * recorded), into the queue whatever the stream's capture state. */
mtiart_status mt_stream_enqueue_wait(mt_stream *s, mt_event *e, uint64_t generation);
/* A record of `generation` (reserved from e->reserved) is enqueued: waits and queries made
 * from now on refer to it, unless a newer one is published. */
void mt_event_publish_record(mt_event *e, uint64_t generation);
/* Host: wait until generation completes; false if `deadline` came first. */
bool mt_event_host_wait(mt_event *e, uint64_t generation, uint64_t deadline);

/* ---------------------------------------------------------------- allocator (alloc.c) */

mtiart_status mt_alloc_init(mt_device *dev);
/* Allocate from `pool` (NULL: the default pool) on behalf of stream s. */
mtiart_status mt_alloc(mt_device *dev, mt_stream *s, mt_pool *pool, size_t size, void **out);
/* Checks that [ptr, ptr+bytes) lies in one live block of some device; returns it. */
mtiart_status mt_check_range(const void *ptr, size_t bytes, int *device);
/* Check that every buffer lies inside one live allocation of device `dev` (an error names
 * the buffer, and `owner`, "stream" or "graph", when it points into another device); one
 * allocator lock for all. With `record` (a graph being built), also record the buffers'
 * allocations there for node `node` (see mt_graph_mem). */
mtiart_status mt_check_buffers(mt_device *dev, const mt_buffer *bufs, uint32_t n, const char *owner,
                               mt_graph_mem *record, size_t node);
/* The live allocation containing ptr: its start and requested size (the quiet form sets
 * no message). */
mtiart_status mt_block_range(const void *ptr, uintptr_t *start, size_t *size);
mtiart_status mt_block_range_quiet(const void *ptr, uintptr_t *start, size_t *size);
/* The device whose memory contains ptr, without setting an error message. */
mtiart_status mt_pointer_device_quiet(const void *ptr, int *device);
/*
 * The device memory a graph, a capture in progress or an executable uses (alloc.c). The
 * lifetime rule: each of them holds every allocation its nodes touch that lies outside its
 * own pool, so the program's free of such a block only marks it graph-held, and its memory
 * returns in stream order when the last holder is gone; blocks of its own pool follow the
 * pool's contract (reused by later captures sharing it). Each allocation recorded also has
 * a liveness cell (mt_live) that the program's free clears for good, which a replay's input
 * check reads. mt_check_buffers fills a record; nothing else changes it.
 */
typedef struct mt_live {
    atomic_int alive; /* 1 until the program frees the allocation */
    atomic_int refs;
} mt_live;
/* An empty record for an owner whose own pool is `pool` (NULL: none, everything is held);
 * allocations made during capture `capture_id` are the owner's products, never inputs. */
mt_graph_mem *mt_graph_mem_new(mt_device *dev, const mt_pool *pool, uint64_t capture_id);
/* A copy for another owner (an executable, a clone), with holds of its own. With `inputs`,
 * it also lists the inputs a replay's check reads (mt_graph_mem_dead_input). NULL: out of
 * host memory (the error is set). */
mt_graph_mem *mt_graph_mem_copy(const mt_graph_mem *m, bool inputs);
/* Drop the owner's holds and references (NULL: nothing). */
void mt_graph_mem_free(mt_graph_mem *m);
/* A copy with holds of its own and no inputs: for an owner whose node indices differ. */
mt_graph_mem *mt_graph_mem_holds_of(const mt_graph_mem *m);
/* Node `node` gets new buffers: what it read first is no input of its any more (still held:
 * replays launched before use it). */
void mt_graph_mem_forget_reads(mt_graph_mem *m, size_t node);
/* Record in `m`, for its node `node`, the memory of a body that node runs (a child graph, a
 * conditional body, an executable launched into a capture): m holds what `body` holds (and
 * what lies in body's pool, while the program has not freed it); body's inputs that m's
 * nodes did not write before are node's inputs. */
mtiart_status mt_graph_mem_merge(mt_graph_mem *m, const mt_graph_mem *body, size_t node);
/* The input check: the index of the first input (allocations whose contents a replay reads
 * before the graph wrote them, by first reader) the program has freed since, or -1. */
long mt_graph_mem_dead_input(const mt_graph_mem *m);
/* Input i: the node that reads it first and the range it reads; `reused`: its memory now
 * lies in another live allocation. */
void mt_graph_mem_input(const mt_graph_mem *m, size_t i, uint32_t *node, uint64_t *address,
                        uint64_t *bytes, bool *reused);
/* Memory nodes' allocations (CUDA's graph-memory model; see alloc.c). `mt_graph_alloc_new`
 * reserves one on stream s's heap of `pool` (NULL: the default pool), with a reference for
 * the alloc node; free nodes take references too. */
mtiart_status mt_graph_alloc_new(mt_device *dev, mt_stream *s, mt_pool *pool, size_t size,
                                 mt_graph_alloc **out, void **ptr);
void mt_graph_alloc_ref(mt_graph_alloc *ga);
void mt_graph_alloc_unref(mt_graph_alloc *ga);
/* The allocation starting at ptr, with a reference; NULL if ptr starts none. */
mt_graph_alloc *mt_graph_alloc_find(mt_device *dev, const void *ptr);
/* Its address (and size) for messages and dumps. */
void *mt_graph_alloc_address(const mt_graph_alloc *ga, size_t *bytes);
/* A memory node of an executable: `own` (alloc) it frees the allocation itself, (free) it
 * frees one of its own alloc nodes' allocations. */
typedef struct mt_mem_node {
    mt_graph_alloc *alloc;
    uint32_t node; /* its index in the graph */
    uint32_t kind; /* MT_OP_MEM_ALLOC or MT_OP_MEM_FREE */
    bool own;
} mt_mem_node;
/* A launch of an executable with memory nodes on stream s: refused if an allocation it
 * makes is still live from an earlier launch (unless `auto_free`), or one it frees that it
 * does not allocate is not live; once the replay is enqueued, `launched` applies it: what
 * it allocates (and does not free) is the program's, what it frees is the graph's again. */
mtiart_status mt_graph_allocs_check(const mt_mem_node *nodes, size_t n, bool auto_free);
void mt_graph_allocs_launched(const mt_mem_node *nodes, size_t n, mt_stream *s, bool auto_free);
/* Pool use counts (graphs, executables, captures). `id` (0,0) creates a private pool. */
mtiart_status mt_pool_acquire(mt_device *dev, mtiart_pool_id id, mt_pool **out);
void mt_pool_retain(mt_pool *pool);
void mt_pool_release(mt_pool *pool);
mtiart_pool_id mt_pool_id_of(const mt_pool *pool);
int mt_pool_device(const mt_pool *pool);
/* Release frees that were deferred until the end of capture `capture_id`. */
void mt_alloc_end_capture(mt_device *dev, uint64_t capture_id);
/* Stream `stream_id` was destroyed: the blocks its heap kept for its reuse go back to the
 * heap, and its frees keep none from now on. */
void mt_alloc_stream_destroyed(mt_device *dev, uint64_t stream_id);
/* Under valgrind only (a no-op otherwise): complete the frees deferred until their
 * streams are done (called after host waits and at exit). */
void mt_alloc_vg_poll(mt_device *dev);
/* Under valgrind only: an op is about to touch its buffers (leave: it is done). The parts
 * that are no live allocation (freed after the op was enqueued, held by graphs, memory
 * nodes' between launches) are addressable and defined while it runs; memcheck reports
 * the host's accesses to them at any time. Takes only the allocator's lock. */
void mt_alloc_vg_enter(mt_device *dev, const mt_buffer *bufs, uint32_t n);
void mt_alloc_vg_leave(mt_device *dev, const mt_buffer *bufs, uint32_t n);

/* ---------------------------------------------------------------- memory notes (history.c)
 * Names the program gave device allocations (mtiart_memory_set_name), kept by the
 * allocation's start address until it is freed. */

/* Non-zero while some allocation has a note or history is recorded: the allocator then
 * tells history.c of frees. */
extern atomic_int mt_memory_notes;
/* The stack depth memory history keeps (0: not recording): the allocator then tells
 * history.c of allocations. */
extern atomic_int mt_memory_history;
/* The allocator freed the allocation starting at `ptr`. */
void mt_memory_note_free(const void *ptr);
static inline void mt_memory_freed(const void *ptr) {
    if (MT_UNLIKELY(atomic_load_explicit(&mt_memory_notes, memory_order_relaxed)))
        mt_memory_note_free(ptr);
}
/* A public allocation function made `ptr` (its caller's stack is the allocation's). */
void mt_memory_note_alloc(const void *ptr, size_t size, int device, uint64_t stream_id)
    __attribute__((noinline));
static inline void mt_memory_allocated(const void *ptr, size_t size, int device,
                                       uint64_t stream_id) {
    if (MT_UNLIKELY(atomic_load_explicit(&mt_memory_history, memory_order_relaxed)) && ptr)
        mt_memory_note_alloc(ptr, size, device, stream_id);
}
/* A copy of the name of the allocation containing `ptr` (malloc'ed), or NULL. */
char *mt_memory_name_of(const void *ptr);

/* ---------------------------------------------------------------- capture (capture.c) */

/* Room for who made a call (describe_caller) and for why a capture was invalidated. */
#define MT_CALLER_MAX 448
#define MT_INVALID_REASON_MAX 768

struct mt_capture {
    /* First: a capture that ends is kept for the next one (capture.c), all but its lock
     * cleared, so that a stream's capture may be locked before it is known to be live. */
    pthread_mutex_t lock;
    uint64_t id;
    mtiart_capture_mode mode;
    uint64_t flags; /* MTIART_CAPTURE_FLAG_* */
    pthread_t thread;
    mt_device *dev;
    mt_stream *origin;
    mt_graph *graph;
    mt_pool *pool;
    int status; /* mtiart_capture_status */
    char invalid_reason[MT_INVALID_REASON_MAX];
    mt_stream **streams; /* joined streams (origin first), each holding a reference */
    size_t num_streams, cap_streams;
    mt_event **events; /* events recorded in the capture, each holding a reference */
    size_t num_events, cap_events;
    mt_capture *next, *prev; /* active capture list */
};

/* Lock order: captures_lock (capture.c), then a capture's lock, then the allocator's lock
 * or a stream's or event's spinlocks. A capture is reached from a stream or event only
 * under captures_lock, and freed only after it has been unlinked under both locks. */
extern atomic_int mt_active_captures;
/* Record an op as a node of the stream's capture (the op is moved in or released).
 * MTIART_ERROR_NOT_CAPTURING, no message and the op untouched, when the capture has
 * ended since the caller saw the stream capturing: the caller runs the op eagerly. */
mtiart_status mt_capture_record(mt_stream *s, mt_op *op, const mtiart_arg *args, uint32_t num_args);
/* A call unsafe during capture (it waits for the device): fails with CAPTURE_UNSUPPORTED
 * and invalidates the captures it would disturb, according to their modes; the reason
 * kept in the capture names the public function being called. `stream`/`event`: the
 * object the call is about (may be NULL): a call on a capturing stream or a captured
 * event always fails. */
mtiart_status mt_capture_check_unsafe(mt_stream *stream, mt_event *event);
static inline mtiart_status mt_check_unsafe(mt_stream *stream, mt_event *event) {
    if (MT_LIKELY(atomic_load_explicit(&mt_active_captures, memory_order_acquire) == 0))
        return MTIART_SUCCESS;
    return mt_capture_check_unsafe(stream, event);
}
/* Event record on a capturing stream (MTIART_ERROR_NOT_CAPTURING as mt_capture_record):
 * an ordering point for the capture's streams, and with `external` also a record node that
 * records the event at every replay. A wait that involves a capture (the stream's, or the
 * event's): an edge from what the record saw, or a wait node for an outside event. */
mtiart_status mt_capture_event_record(mt_stream *s, mt_event *e, bool external);
mtiart_status mt_capture_event_wait(mt_stream *s, const mt_pin *pin, mt_event *e);
/* Destroy a stream's handle (pinned in `pin`) unless it takes part in a capture: one step
 * under captures_lock, so that a capture taking the stream in either comes first (and the
 * destroy is refused) or finds the handle destroyed. */
mtiart_status mt_capture_retire_stream(mt_stream *s, mt_pin *pin);
/* The pool a capturing stream allocates from, retained (mt_pool_release it after the
 * allocation); NULL if the stream is not capturing. */
mt_pool *mt_capture_pool_retain(mt_stream *s);
/* In a capture begun with MTIART_CAPTURE_FLAG_MEM_NODES: an allocation, or a free of a
 * graph allocation, on capturing stream s becomes a memory node. MTIART_ERROR_NOT_CAPTURING
 * (no message) when s takes part in no such capture: the caller goes on as usual. */
mtiart_status mt_capture_mem_alloc(mt_stream *s, size_t size, void **ptr);
mtiart_status mt_capture_mem_free(mt_stream *s, const void *ptr);
/* Record a child-graph node running `body` (a reference the node takes over; dropped on
 * failure), as mt_capture_record does an op: an executable launched on a capturing
 * stream, whose memory `mem` (may be NULL) the capture holds from then on. */
mtiart_status mt_capture_child(mt_stream *s, mt_dag *body, const mt_graph_mem *mem);

/* ---------------------------------------------------------------- graphs (graph.c, exec.c) */

/* What a node's buffer holds, as far as the launcher knew it: the tensor's dtype and shape
 * (dtype -1: unknown) and the name the program gave the allocation (NULL: none). */
typedef struct mt_buffer_meta {
    int32_t dtype;
    int32_t ndim;
    int64_t shape[MTIART_MAX_DIMS];
    char *name;
} mt_buffer_meta;

typedef struct mt_node {
    mt_op op;
    mtiart_buffer_use *buffers;
    uint32_t num_buffers;
    uint32_t num_deps;
    size_t *deps; /* in its dag's dep_chunks */
    mt_dag *body; /* CHILD and CONDITIONAL nodes: the graph they run (a reference) */
    /* Metadata for dumps, traces and checks (never needed to run the node): the id of the
     * stream that captured it (0: added by hand) and one mt_buffer_meta per buffer (NULL:
     * none known). A kernel's label is its op's (op.u.kernel.label). */
    uint64_t stream_id;
    mt_buffer_meta *buffer_meta;
} mt_node;

/* What a launcher knows about the buffers of the kernel launch it is making on this
 * thread (mtiart_launch_kernel_described): set for the duration of the launch, read by
 * mt_dag_append when the launch is captured. tensors[i] describes argument i (NULL:
 * unknown). */
typedef struct mt_launch_note {
    const struct mtiart_tensor_desc *const *tensors;
    uint32_t num_tensors;
} mt_launch_note;
/* Initial-exec, as mt_api_name (error.h): every launch of the kernel library sets it. */
extern __thread const mt_launch_note *mt_current_launch __attribute__((tls_model("initial-exec")));

/* The nodes of a graph. Shared copy-on-write: an executable, a child-graph node or a
 * conditional node holds a reference instead of a copy, and a change to a dag someone else
 * holds first gives the changer a copy of its own (mt_graph_own). A node is plain data
 * and function pointers (its op, buffers, dependencies) plus its body. */
struct mt_dag {
    atomic_int refcount;
    mt_node *nodes;
    size_t num_nodes, cap_nodes;
    size_t num_edges;
    /* The nodes' dependency lists (each node's `deps` points into one), in chunks that
     * never move while nodes are appended, freed with the dag: no allocation per node. */
    struct mt_dep_chunk *dep_chunks;
    uint32_t depth;    /* bodies inside bodies below this graph (0: none) */
    mt_blocks *blocks; /* loaded from a file: the memory its nodes use (a reference) */
    /* Loaded from a file with inputs or outputs not bound: some nodes point at
     * placeholders, so only an executable of the loaded graph, once bound, may run it. */
    bool placeholders;
};

/* How deep child and conditional bodies may nest: the walks over a graph recurse. */
#define MT_MAX_NESTING 64

struct mt_graph {
    uint64_t handle;
    pthread_mutex_t lock; /* public calls on one graph may come from several threads */
    mt_device *dev;
    mt_dag *dag;
    mt_pool *pool;     /* NULL for hand-built graphs */
    mt_graph_mem *mem; /* the device memory its nodes use, bodies included (NULL: none yet) */
    struct mt_replay_order *order; /* its replays' order, shared with its executables */
    mt_artifact *artifact;         /* a graph loaded from a file: what it was loaded from */
    /* captured graphs: the replay order of the pool (check.c) and this graph's place in it */
    struct mt_pool_order *pool_order;
    uint32_t pool_seq;
};

/* The order of a graph's replays (exec.c): made at the first instantiation, shared by the
 * graph and all its executables. */
typedef struct mt_replay_order mt_replay_order;
void mt_replay_order_unref(mt_replay_order *order);

mt_graph *mt_graph_new(mt_device *dev);
void mt_graph_free(mt_graph *g);
/* Give a graph a handle (the table owns it from now on; freed if that fails). */
mtiart_status mt_graph_publish(mt_graph *g, mtiart_graph *handle);
/* Hold the graph's lock until the calling function returns. */
static inline void mt_graph_unlock(mt_graph **g) { pthread_mutex_unlock(&(*g)->lock); }
#define LOCK_GRAPH(g)                                                                              \
    mt_graph *g##_locked_ __attribute__((cleanup(mt_graph_unlock), unused)) =                      \
        (pthread_mutex_lock(&(g)->lock), (g))
mt_dag *mt_dag_new(void);
static inline void mt_dag_ref(mt_dag *d) {
    atomic_fetch_add_explicit(&d->refcount, 1, memory_order_relaxed);
}
void mt_dag_unref(mt_dag *d);
/* A private copy (ops cloned; bodies, which nobody changes, shared); NULL on OOM. */
mt_dag *mt_dag_clone(const mt_dag *d);
/* A private copy of the first `count` nodes (their dependencies are earlier nodes). */
mt_dag *mt_dag_clone_prefix(const mt_dag *d, size_t count);
/* Make g's dag its own before changing it (under g's lock). */
mtiart_status mt_graph_own(mt_graph *g);
/* Append a node to a dag that no graph's memory record follows (a loaded graph's, whose
 * memory its dags hold): the op and `body` are moved in (the dag owns the op's blob and
 * references and the body reference; both are released on failure). A body nested deeper
 * than MT_MAX_NESTING is refused. */
mtiart_status mt_dag_append(mt_dag *d, mt_op *op, mt_dag *body, const size_t *deps, size_t num_deps,
                            const mtiart_arg *args, uint32_t num_args, size_t *index);
/* Re-pack a kernel node's arguments (same kernel and blocks) and its buffer list; the
 * buffers are checked against device dev (NULL: checked already) and recorded in `record`
 * (may be NULL) as node `index`. */
mtiart_status mt_node_set_kernel_args(mt_node *n, const mtiart_arg *args, uint32_t num_args,
                                      mt_device *dev, mt_graph_mem *record, size_t index);
/* A node's name for messages and dumps: the kernel's name, "memcpy HtoD", ... */
void mt_node_name(const mt_node *n, char *out, size_t cap);
/* How dumps and traces name a node: its label, else its op's description ("add",
 * "matmul 32x256 @ 256x512", "memcpy HtoD", "child graph (3 nodes)"). */
void mt_node_describe(const mt_node *n, char *out, size_t cap);
/* NOT_SUPPORTED, naming the node, when `body` (or a graph inside it) records or waits for
 * an event: such nodes cannot run inside a conditional body. */
mtiart_status mt_check_conditional_body(const mt_dag *body);

/* Fusion (fuse.c), a pass of instantiation: chains of nodes that one launch of the kernel
 * library runs in their place (a matmul and the elementwise operations on its result).
 * The pass sees a plan's nodes (child graphs flattened) through this view; a chain keeps
 * to one `scope` (the graph a node came from), so it never crosses into or out of a
 * child graph, and it stops at any node that is not a kernel (event, host, conditional). */
typedef struct mt_fuse_node {
    const mt_op *op;
    const size_t *deps; /* indices of the view */
    uint32_t num_deps;
    uint32_t scope;
} mt_fuse_node;

/* What is left of a view of n nodes: m <= n nodes, each either a node of the view or a
 * fused launch standing for a chain of them. */
typedef struct mt_fusion {
    uint32_t m;
    mt_fuse_node *nodes; /* op: the view's, or a fused one (ops[]); deps: indices < m */
    uint32_t *kept;      /* node left -> the view's node it is (a chain's first) */
    uint32_t *left;      /* view node -> the node left that does its work */
    uint32_t *group;     /* view node -> its chain (UINT32_MAX: not fused) */
    /* chain k: view nodes members[member_begin[k] .. member_begin[k + 1]), in order */
    uint32_t num_groups;
    uint32_t *member_begin, *members;
    mt_op *ops; /* chain k's launch */
    size_t *dep_store;
} mt_fusion;

/* Fuse what can be fused among view[0..n): *out is zeroed and left so (m = 0) when nothing
 * fuses (the common case costs one look at each node). */
mtiart_status mt_fuse_plan(const mt_fuse_node *view, uint32_t n, mt_fusion *out);
/* How many nodes the executable's plan runs (fewer than the graph's when nodes fused). */
size_t mt_exec_plan_nodes(const mt_exec *x);
/* The longest chain the pass fuses. */
#define MT_FUSE_MAX_CHAIN 9
void mt_fusion_free(mt_fusion *f);
/* The launch running ops[0..len) (a chain mt_fuse_plan fused, with new parameters) into
 * *fused: MTIART_SUCCESS, or MTIART_ERROR_NOT_SUPPORTED when they no longer fuse as one
 * (other shapes, dtypes, overlapping buffers), or out of host memory. */
mtiart_status mt_fuse_chain(const mt_op *const *ops, uint32_t len, mt_op *fused);
extern bool mt_graph_fusion;

/* ---------------------------------------------------------------- graph checks (check.c) */

/* The races of dag `d` (mtiart_graph_check_races): up to `cap` into `out`, how many in
 * *count. */
mtiart_status mt_dag_check_races(const mt_dag *d, mtiart_race *out, size_t cap, size_t *count);
/* INVALID_VALUE naming the races of `d` if it has any (an instantiation that checks). */
mtiart_status mt_dag_refuse_races(const mt_dag *d);

/* The replay order of the graphs captured into one pool, while anything holds one of them. */
typedef struct mt_pool_order mt_pool_order;
/* A capture into `pool` ended with a graph: the pool's order entry and the graph's place
 * in it (0 for the first); NULL when out of host memory (the graph is then not checked). */
mt_pool_order *mt_pool_order_captured(mt_pool *pool, uint32_t *seq);
/* A graph or executable of graph `seq` of the pool is made (delta 1) or freed (-1). */
void mt_pool_order_hold(mt_pool_order *order, uint32_t seq, int delta);
/* Whether the pool holds several graphs (so that their launches are checked). */
bool mt_pool_order_shared(const mt_pool_order *order);
/* A launch of graph `seq` of the pool on stream `stream_id`: checks its order (graphs no
 * graph or executable holds any more are skipped; the first launch starts the order).
 * Mode ERROR: NOT_PERMITTED, and the launch must not be made. No lock held. */
mtiart_status mt_pool_order_launch(mt_pool_order *order, uint32_t seq, uint64_t stream_id);
/* Worker: a replay of graph `seq` starts (false: another graph of the pool runs and mode
 * ERROR refuses it, `failure` says why) / has ended (after a true start). */
bool mt_pool_order_enter(mt_pool_order *order, uint32_t seq, uint64_t stream_id, char *failure,
                         size_t cap);
void mt_pool_order_leave(mt_pool_order *order);
/* Append a node to `d`, g's dag or a conditional body being captured for g: the node's
 * device buffers are checked and recorded in g's memory record as node `mem_node`
 * (SIZE_MAX: the index the node gets, d being g's dag; MT_BUFFERS_RECORDED: they were, when
 * the caller took them), and so is `body_mem` (the memory a child or conditional body
 * uses; may be NULL). The op and body are moved in or
 * released. A body nested deeper than MT_MAX_NESTING is refused. */
#define MT_BUFFERS_RECORDED (SIZE_MAX - 1)
mtiart_status mt_graph_append(mt_graph *g, mt_dag *d, mt_op *op, mt_dag *body,
                              const mt_graph_mem *body_mem, size_t mem_node, const size_t *deps,
                              size_t num_deps, const mtiart_arg *args, uint32_t num_args,
                              size_t *index);
/* Append a free node of `alloc` (its reference moves in; released on failure), refused
 * when the graph frees that allocation already. */
mtiart_status mt_graph_append_mem_free(mt_graph *g, mt_graph_alloc *alloc, const size_t *deps,
                                       size_t num_deps, size_t *index);
/* Whether a dag holds memory nodes (at its top level: bodies cannot). */
bool mt_dag_has_mem_nodes(const mt_dag *d);

/* A record node completed: stream.c's completion, which hands the streams parked on the
 * event back to their workers (passed down so that exec.c never calls up into stream.c). */
typedef void (*mt_record_fn)(mt_event *e, uint64_t generation);
/* Worker: run, or resume, the replay that GRAPH op `op` launched. Returns 0, or the code
 * of the first node that failed with `failure` describing it ("graph node N: kernel K
 * failed ..."); the caller records it as its stream's sticky error. When every node left
 * waits for an event record that has not completed, the replay is suspended instead: 0,
 * *park set to the event and *park_generation to the record; call again on the same op
 * once it has completed. */
int32_t mt_exec_run(mt_op *op, mt_record_fn record, mt_event **park, uint64_t *park_generation,
                    char *failure, size_t cap);
/* Release what a GRAPH op holds (stream.c's release of a queue slot). */
void mt_exec_release_launch(mt_op *op);
void mt_exec_ref(mt_exec *x);
void mt_exec_unref(mt_exec *x);
/* Called by the GRAPH op after the replay: lets launches on other streams proceed. */
mt_event *mt_exec_done_event(mt_exec *x);
mt_device *mt_exec_device(const mt_exec *x);
mt_bindings *mt_exec_bindings(const mt_exec *x);
/* What the executable runs now: its template with the latest update (a reference). */
mt_dag *mt_exec_template(mt_exec *x);
/* The pools the executable's memory lives in (its own, then those of graphs it was updated
 * from), up to `cap` of them into `out`; returns how many there are. */
size_t mt_exec_pools(mt_exec *x, mt_pool **out, size_t cap);
/* Update the executable from `dag` (a topologically identical graph) as
 * mtiart_graph_exec_update does; `pool` (may be NULL) is kept for as long as it runs, and
 * the memory `mem` records (may be NULL: none) is held and checked from now on. */
mtiart_status mt_exec_update_dag(mt_exec *x, mt_dag *dag, mt_pool *pool, const mt_graph_mem *mem,
                                 mtiart_update_info *info);

/* ---------------------------------------------------------------- saved graphs (serialize.c) */

void mt_artifact_unref(mt_artifact *a);
/* The device allocations of a loaded graph (its pool's regions, its constants), freed when
 * the last dag whose nodes use them goes: wherever the nodes went (an executable, a
 * child-graph node, a capture), their memory goes with them. */
void mt_blocks_ref(mt_blocks *b);
void mt_blocks_unref(mt_blocks *b);
/* An executable instantiated from `g`, a loaded graph or one holding placeholders (a
 * loaded graph's body): its bindings, all unbound but the constants (NULL and success
 * when it has no binding to make); refused for placeholders it could not bind. */
mtiart_status mt_bindings_new(const mt_graph *g, mt_bindings **out);
void mt_bindings_free(mt_bindings *b);
/* NOT_PERMITTED naming the first binding not bound yet, or success. */
mtiart_status mt_bindings_check(const mt_bindings *b);

/* The segment of private pool `pool` that holds [ptr, ptr+bytes), if any. (alloc.c) */
bool mt_pool_segment_of(const mt_pool *pool, const void *ptr, size_t bytes, uintptr_t *base,
                        size_t *size);
/* A GRAPH op with MT_LAUNCH_POOL_ORDER: whether its replay is starting (not resuming after a
 * wait), and the pool order and place of its executable. */
bool mt_exec_starting(const mt_exec *x);
mt_pool_order *mt_exec_pool_order(const mt_exec *x, uint32_t *seq);
/* The positions of the plan `plan` (an mt_plan) whose nodes, captured by another stream,
 * position `pos` depends on; returns how many (for the trace's arrows). */
uint32_t mt_plan_cross_stream_preds(const void *plan, uint32_t pos, const uint32_t **preds);

/* ---------------------------------------------------------------- timeline trace (trace.c) */

extern atomic_int mt_tracing;
/* Whether a trace is recording: the one test the hot paths make (relaxed, predictable). */
static inline bool mt_trace_on(void) {
    return atomic_load_explicit(&mt_tracing, memory_order_relaxed) != 0;
}
/* The trace's clock: the time-stamp counter where it ticks at a constant rate on every
 * core (x86-64; a third of the cost of clock_gettime), converted to nanoseconds when the
 * trace is written; mt_now_ns elsewhere. */
static inline uint64_t mt_trace_clock(void) {
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return mt_now_ns();
#endif
}
/* A worker ran `op` of stream `stream_id` from `start` (mt_trace_clock) until now (call
 * before the op is released). */
void mt_trace_op(int device, uint64_t stream_id, const mt_op *op, uint64_t start);
/* What a traced replay's node records share; the replay fills it once, the node loop the
 * per-node fields. */
typedef struct mt_trace_node_rec {
    const mt_node *node; /* the dag node the position runs */
    const void *plan;
    const mt_exec *exec;
    const mt_event *event; /* record and wait nodes */
    uint64_t stream_id;    /* the launching stream (nodes added by hand have none of their own) */
    uint64_t replay, generation;
    uint32_t type, pos;
    int device;
} mt_trace_node_rec;
void mt_trace_node(const mt_trace_node_rec *rec, uint64_t start, uint64_t end);
/* Keep executable x alive until the running trace is stopped (its records point into it);
 * `held_session` is x's note of the trace holding it. false: it could not be held, and
 * its nodes must not be recorded. */
bool mt_trace_hold(mt_exec *x, atomic_uint_least64_t *held_session);

#endif /* MTIART_INTERNAL_H */
