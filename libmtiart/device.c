/*
 * Runtime initialisation, devices and their workers.
 *
 * Each device owns worker threads. Streams with pending work sit on the device's ready
 * lists (one per priority, kept by stream.c); a worker takes a stream and drains it, so
 * each stream runs in order while different streams run in parallel. Idle workers spin
 * (one at a time, for as long as new work has lately taken to arrive) before sleeping on a
 * futex, which keeps a launch-and-wait round trip short without burning a core once work
 * stops coming; when waits block (valgrind, MTIART_SPIN_US=0) they sleep at once.
 * Multi-block kernels and graph replays post "jobs" (sync.c) that idle workers help with. The
 * worker loop is the top of the runtime's layering (see op.c): it calls down into stream.c and
 * nothing calls back into it.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifdef MTIART_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

int mt_num_devices;
mt_device *mt_devices;
atomic_int mt_initialized;
uint64_t mt_spin_ns = 50000;
uint64_t mt_linger_ns = 20000;
uint64_t mt_job_spin_ns = 200000;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static mtiart_status init_status = MTIART_SUCCESS;
static char init_message[256];
bool mt_forked_child;
static pid_t init_pid; /* the process that initialised the runtime */

/* ------------------------------------------------------------------ configuration */

static bool parse_size(const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text) return false;
    uint64_t scale = 1;
    switch (*end) {
    case 'k':
    case 'K':
        scale = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        scale = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        scale = 1ull << 30;
        end++;
        break;
    case 't':
    case 'T':
        scale = 1ull << 40;
        end++;
        break;
    default: break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end != '\0' || value > UINT64_MAX / scale) return false; /* 0: callers' minimum */
    *out = value * scale;
    return true;
}

static bool env_size(const char *name, uint64_t *out, uint64_t min, uint64_t max) {
    const char *text = getenv(name);
    if (!text || !*text) return true;
    uint64_t value;
    if (!parse_size(text, &value) || value < min || value > max) {
        snprintf(init_message, sizeof init_message,
                 "invalid %s='%s' (expected a number between %llu and %llu)", name, text,
                 (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = value;
    return true;
}

/* ------------------------------------------------------------------ workers */

bool mt_on_worker(void) { return mt_tl_on_worker; }

mtiart_status mt_check_may_wait(void) {
    if (MT_LIKELY(!mt_tl_on_worker)) return MTIART_SUCCESS;
    return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                        "not permitted from a kernel or host function running on a device "
                        "worker (waiting for the device there would deadlock)");
}

/* Give the spinner role back unless a waiting host took it over (take_spinner_role). */
static void stop_spinning(mt_device *dev) {
    int expected = MT_SPINNER_WORKER;
    atomic_compare_exchange_strong(&dev->spinning, &expected, 0);
}

/* One worker at a time spins for new work, for as long as work has recently taken to
 * arrive (the device's idle budget, which it then learns from); the others, and it once
 * its budget is spent or a host waiting for a stream takes its place, sleep until
 * mt_device_wake. */
static void worker_idle(mt_device *dev) {
    int expected = 0;
    uint64_t spin = mt_spin_budget_ns(&dev->idle_budget);
    bool spinner =
        spin && atomic_compare_exchange_strong(&dev->spinning, &expected, MT_SPINNER_WORKER);
    uint64_t start = spinner ? mt_now_ns() : 0;
    bool replaced = false;
    if (spinner) {
        for (unsigned i = 1;; i++) {
            if (mt_device_has_work(dev)) {
                stop_spinning(dev);
                mt_spin_budget_learn(&dev->idle_budget, mt_now_ns() - start, mt_spin_ns);
                return;
            }
            mt_cpu_relax();
            if ((i & 63) != 0) continue;
            if (atomic_load_explicit(&dev->spinning, memory_order_relaxed) != MT_SPINNER_WORKER) {
                replaced = true; /* the host runs what comes; this CPU is its own */
                break;
            }
            if (mt_now_ns() - start > spin) break;
        }
        stop_spinning(dev);
    }
    unsigned word = atomic_load(&dev->wake_word);
    atomic_fetch_add(&dev->sleepers, 1);
    uint64_t slept_at = 0;
    if (!mt_device_has_work(dev)) {
        if (spinner) slept_at = mt_now_ns();
        mt_futex_wait(&dev->wake_word, word);
    }
    atomic_fetch_sub(&dev->sleepers, 1);
    /* A replaced spin says nothing of how long work takes to arrive. */
    if (spinner && !replaced)
        mt_spin_budget_learn_wait(&dev->idle_budget, start, slept_at, mt_spin_ns);
}

static void *worker_main(void *arg) {
    mt_device *dev = arg;
    mt_tl_on_worker = true;
    for (;;) {
        if (atomic_load_explicit(&dev->open_jobs, memory_order_relaxed) &&
            mt_help_jobs(dev, NULL, MT_FOREVER))
            continue;
        mt_stream *s = mt_stream_pop_ready(dev);
        if (s) {
            mt_stream_run(s);
            continue;
        }
        if (atomic_load(&dev->shutdown)) break;
        worker_idle(dev);
    }
    return NULL;
}

/* ------------------------------------------------------------------ fork */

/* A child of fork has only the thread that forked: the workers, and whatever locks any other
 * thread held at that moment, stayed behind, so the runtime cannot run here (CUDA and torch
 * refuse the same way). Every public call refuses from now on (MT_API_ENTRY); a process
 * forked before initialisation is unaffected (the handler is registered by the init). */
static void forked_child(void) {
    mt_forked_child = true;
    atomic_store(&mt_initialized, 0);
}

mtiart_status mt_refuse_forked(void) {
    return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                        "the runtime was initialised in process %d before it forked this "
                        "process (%d), and cannot be used after fork: initialise it in the "
                        "child only, or start child processes with spawn or forkserver",
                        (int)init_pid, (int)getpid());
}

/* ------------------------------------------------------------------ init */

static void shutdown_runtime(void) {
    /* A forked child has no workers to stop (their handles are the parent's). */
    if (mt_forked_child) return;
    /* Workers are stopped at exit so that leak checkers see a quiet process; memory of
     * devices stays mapped (the process is ending). Pending work is finished first. */
    for (int d = 0; d < mt_num_devices; d++) {
        mt_device *dev = &mt_devices[d];
        atomic_store(&dev->shutdown, 1);
        atomic_fetch_add(&dev->wake_word, 1);
        mt_futex_wake(&dev->wake_word, dev->num_workers);
    }
    for (int d = 0; d < mt_num_devices; d++) {
        mt_device *dev = &mt_devices[d];
        /* A worker stuck in a host callback (for example one waiting for an interpreter
         * that is shutting down) must not hang the exit. */
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 2;
        for (int w = 0; w < dev->threads_started; w++)
            if (pthread_timedjoin_np(dev->threads[w], NULL, &deadline) != 0)
                pthread_detach(dev->threads[w]);
        dev->threads_started = 0;
        mt_alloc_vg_poll(dev); /* frees valgrind deferred until their streams were done */
    }
}

bool mt_under_valgrind;
uint64_t mt_vg_quarantine_bytes;

static void do_init(void) {
    uint64_t num_devices = 1, capacity = 4ull << 30, workers = 0, spin_us = 50;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    workers = cpus > 0 ? (uint64_t)cpus : 1;
    if (!env_size("MTIART_NUM_DEVICES", &num_devices, 1, 64) ||
        !env_size("MTIART_DEVICE_MEMORY", &capacity, 1ull << 21, 1ull << 44) ||
        !env_size("MTIART_NUM_WORKERS", &workers, 1, 256)) {
        init_status = MTIART_ERROR_INVALID_VALUE;
        return;
    }
    const char *spin = getenv("MTIART_SPIN_US");
    if (spin && *spin) {
        char *end;
        errno = 0;
        spin_us = strtoull(spin, &end, 10);
        if (errno || end == spin || *end != '\0' || spin_us > 1000000) {
            init_status = MTIART_ERROR_INVALID_VALUE;
            snprintf(init_message, sizeof init_message,
                     "invalid MTIART_SPIN_US='%s' (expected microseconds, 0 to 1000000)", spin);
            return;
        }
    }
    const char *fusion = getenv("MTIART_GRAPH_FUSION");
    if (fusion && *fusion) {
        if (strcmp(fusion, "0") != 0 && strcmp(fusion, "1") != 0) {
            init_status = MTIART_ERROR_INVALID_VALUE;
            snprintf(init_message, sizeof init_message,
                     "invalid MTIART_GRAPH_FUSION='%s' (expected 0 or 1)", fusion);
            return;
        }
        mt_graph_fusion = fusion[0] == '1';
    }
    /* As much as ASan's allocator keeps by default, within a quarter of the device. */
    uint64_t quarantine = capacity / 4 < (64ull << 20) ? capacity / 4 : 64ull << 20;
    if (!env_size("MTIART_VALGRIND_QUARANTINE", &quarantine, 0, 1ull << 44)) {
        init_status = MTIART_ERROR_INVALID_VALUE;
        return;
    }
#ifdef MTIART_HAVE_VALGRIND
    /* Under valgrind threads run one at a time: spinning only delays the others. */
    if (RUNNING_ON_VALGRIND) {
        spin_us = 0;
        mt_under_valgrind = true;
        mt_vg_quarantine_bytes = quarantine;
    }
#endif
    (void)quarantine;
    mt_waits_block = spin_us == 0;
    mt_spin_ns = spin_us * 1000;
    mt_linger_ns = mt_spin_ns < 20000 ? mt_spin_ns : 20000;
    mt_job_spin_ns = 4 * mt_spin_ns;

    mt_devices = calloc((size_t)num_devices, sizeof *mt_devices);
    if (!mt_devices) goto oom;
    mt_num_devices = (int)num_devices;
    for (int d = 0; d < mt_num_devices; d++) {
        mt_device *dev = &mt_devices[d];
        dev->index = d;
        dev->num_workers = (int)workers;
        dev->capacity = capacity;
        mt_spin_budget_init(&dev->idle_budget, mt_spin_ns);
        mt_spin_budget_init(&dev->job_budget, mt_job_spin_ns);
        pthread_mutex_init(&dev->streams_lock, NULL);
        mtiart_status st = mt_alloc_init(dev);
        if (st != MTIART_SUCCESS) {
            init_status = st;
            snprintf(init_message, sizeof init_message, "%s", mtiart_last_error_message());
            return;
        }
        st = mt_stream_create_default(dev);
        if (st != MTIART_SUCCESS) goto oom;
        dev->threads = calloc((size_t)workers, sizeof *dev->threads);
        if (!dev->threads) goto oom;
        for (int w = 0; w < dev->num_workers; w++) {
            if (pthread_create(&dev->threads[w], NULL, worker_main, dev) != 0) {
                init_status = MTIART_ERROR_INTERNAL;
                snprintf(init_message, sizeof init_message, "cannot start worker thread");
                return;
            }
            dev->threads_started++;
        }
    }
    atexit(shutdown_runtime);
    init_pid = getpid();
    if (pthread_atfork(NULL, NULL, forked_child) != 0) {
        init_status = MTIART_ERROR_INTERNAL;
        snprintf(init_message, sizeof init_message, "cannot register the fork handler");
        return;
    }
    atomic_store(&mt_initialized, 1);
    return;
oom:
    init_status = MTIART_ERROR_OUT_OF_MEMORY;
    snprintf(init_message, sizeof init_message, "out of host memory during initialisation");
}

mtiart_status mt_ensure_init(void) {
    /* init_message is reported by every later call, whichever it is: no prefix in it. */
    const char *api = mt_api_suspend();
    pthread_once(&init_once, do_init);
    mt_api_resume(api);
    if (init_status != MTIART_SUCCESS)
        return mt_set_error(init_status, "runtime initialisation failed: %s", init_message);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_init(void) {
    MT_API_ENTRY();
    return mt_ensure_init();
}

MTIART_API int mtiart_is_initialized(void) { return atomic_load(&mt_initialized); }

MTIART_API uint32_t mtiart_version(void) { return MTIART_VERSION_NUMBER; }

#define MT_STR2(x) #x
#define MT_STR(x) MT_STR2(x)
MTIART_API const char *mtiart_version_string(void) {
    return MT_STR(MTIART_VERSION_MAJOR) "." MT_STR(MTIART_VERSION_MINOR) "." MT_STR(
        MTIART_VERSION_PATCH);
}

mtiart_status mt_get_device(int index, mt_device **out) {
    MT_INIT_OR_RETURN();
    if (index < 0 || index >= mt_num_devices)
        return mt_set_error(MTIART_ERROR_INVALID_DEVICE,
                            "invalid device %d (the runtime has %d device%s)", index,
                            mt_num_devices, mt_num_devices == 1 ? "" : "s");
    *out = &mt_devices[index];
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_device_count(int *count) {
    MT_API_ENTRY();
    MT_INIT_OR_RETURN();
    MT_CHECK_NOT_NULL(count);
    *count = mt_num_devices;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_device_get_properties(int device, mtiart_device_properties *props) {
    MT_API_ENTRY();
    LOOKUP_DEVICE(dev, device);
    MT_CHECK_NOT_NULL(props);
    memset(props, 0, sizeof *props);
    snprintf(props->name, sizeof props->name, "mtiart CPU device %d", device);
    props->index = device;
    props->num_workers = dev->num_workers;
    props->capability_major = MTIART_VERSION_MAJOR;
    props->capability_minor = MTIART_VERSION_MINOR;
    props->total_memory = dev->capacity;
    props->segment_granularity = 2u << 20;
    props->least_stream_priority = 0;
    props->greatest_stream_priority = -(MT_NUM_PRIORITIES - 1);
    return MTIART_SUCCESS;
}
