/*
 * Stream capture. A capturing stream records its operations as graph nodes instead of
 * running them. Each stream in a capture keeps a "frontier": the nodes its next operation
 * must depend on. Recording an event snapshots the frontier; a stream that waits on such
 * an event joins the capture (fork) or merges the snapshot into its own frontier (join).
 * Fork and join are edges, as in CUDA: an event record or wait becomes a node only where
 * the program asked for one, an event recorded with MTIART_EVENT_RECORD_EXTERNAL (a
 * record node) or a wait on an event recorded outside the capture (a wait node).
 *
 * A conditional body (mtiart_stream_begin_conditional) is a scope of one stream: its work
 * goes into the body's graph until the scope ends and becomes one conditional node.
 *
 * Unsafe calls (anything that waits for the device) are refused while a capture they
 * could disturb is active, and invalidate that capture: calls on a capturing stream or a
 * captured event always; other calls according to the capture's mode, as in CUDA.
 *
 * Locks: captures_lock guards the list of active captures and every change of which
 * capture a stream or event belongs to (begin, a stream joining, the end, a stream's
 * destruction), and is taken before a capture's own lock, which guards its graph, its
 * streams' frontiers and scopes. A capture pointer read from a stream or event is used
 * only under captures_lock, or under the capture's lock taken while captures_lock was held
 * or once the stream is seen to name it under that lock (lock_capture_of).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

atomic_int mt_active_captures;
static pthread_mutex_t captures_lock = PTHREAD_MUTEX_INITIALIZER;
static mt_capture *captures;
static atomic_uint_least64_t next_capture_id = 1;

/* A conditional body being captured on one stream. */
typedef struct mt_scope {
    uint64_t id;
    mt_dag *body;
    mt_op op;               /* the conditional node's */
    size_t *outer_frontier; /* the stream's frontier when the body began */
    size_t outer_len;
    struct mt_scope *outer;
} mt_scope;

static atomic_uint_least64_t next_scope_id = 1;

static bool reserve(size_t **array, size_t *cap, size_t count) {
    if (count <= *cap) return true;
    size_t grown_cap = count < 4 ? 4 : count;
    size_t *grown = realloc(*array, grown_cap * sizeof *grown);
    if (!grown) return false;
    *array = grown;
    *cap = grown_cap;
    return true;
}

static bool frontier_set(mt_stream *s, const size_t *nodes, size_t count) {
    if (!reserve(&s->frontier, &s->frontier_cap, count)) return false;
    if (count) memcpy(s->frontier, nodes, count * sizeof *nodes);
    s->frontier_len = count;
    return true;
}

/* A join: the stream's next operation also depends on `nodes`. */
static bool frontier_merge(mt_stream *s, const size_t *nodes, size_t count) {
    if (!reserve(&s->frontier, &s->frontier_cap, s->frontier_len + count)) return false;
    size_t had = s->frontier_len;
    for (size_t i = 0; i < count; i++) {
        bool seen = false;
        for (size_t k = 0; k < had && !seen; k++) seen = s->frontier[k] == nodes[i];
        if (!seen) s->frontier[s->frontier_len++] = nodes[i];
    }
    return true;
}

/* The graph the stream records into: its innermost conditional body, or the capture's. */
static mt_dag *dag_of(const mt_capture *c, const mt_stream *s) {
    return s->scope ? s->scope->body : c->graph->dag;
}

static uint64_t scope_id(const mt_stream *s) { return s->scope ? s->scope->id : 0; }

/* The stream's frontier in the capture's graph (under any open bodies). */
static const size_t *top_frontier(const mt_stream *s, size_t *len) {
    const mt_scope *sc = s->scope;
    if (!sc) {
        *len = s->frontier_len;
        return s->frontier;
    }
    while (sc->outer) sc = sc->outer;
    *len = sc->outer_len;
    return sc->outer_frontier;
}

static void free_scope(mt_scope *sc) {
    if (sc->body) mt_dag_unref(sc->body);
    free(sc->outer_frontier);
    free(sc);
}

static void invalidate_locked(mt_capture *c, const char *reason) {
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) return;
    c->status = MTIART_CAPTURE_STATUS_INVALIDATED;
    snprintf(c->invalid_reason, sizeof c->invalid_reason, "%s", reason);
}

/* Captures that ended, kept for the next ones (under captures_lock): a capture's memory
 * and lock stay valid for as long as the process runs, which lock_capture_of relies on. */
static mt_capture *spare_captures;

/* A capture with every field zero but its lock (initialised), or NULL. */
static mt_capture *capture_new(void) {
    pthread_mutex_lock(&captures_lock);
    mt_capture *c = spare_captures;
    if (c) spare_captures = c->next;
    pthread_mutex_unlock(&captures_lock);
    if (c) {
        memset((char *)c + sizeof c->lock, 0, sizeof *c - sizeof c->lock);
        return c;
    }
    if ((c = calloc(1, sizeof *c))) pthread_mutex_init(&c->lock, NULL);
    return c;
}

/* A capture no stream or event names any more (nor will: detached, or never attached). */
static void capture_recycle(mt_capture *c) {
    pthread_mutex_lock(&captures_lock);
    c->next = spare_captures;
    spare_captures = c;
    pthread_mutex_unlock(&captures_lock);
}

/* The capture stream s takes part in, with its lock held (which keeps it alive: ending a
 * capture takes captures_lock, then its lock); NULL if the stream is not capturing. A
 * stream leaves a capture only under the capture's lock, joins one only once the capture
 * is whole (its beginning, or under its lock), and a capture's memory is never freed: so
 * the capture the stream names while its lock is held is its live capture, and
 * captures_lock is taken only when the stream changed captures between the look and the
 * lock. */
static mt_capture *lock_capture_of(mt_stream *s) {
    mt_capture *c = atomic_load(&s->capture);
    if (!c) return NULL;
    pthread_mutex_lock(&c->lock);
    if (MT_LIKELY(atomic_load(&s->capture) == c)) return c;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&captures_lock);
    c = atomic_load(&s->capture);
    if (c) pthread_mutex_lock(&c->lock);
    pthread_mutex_unlock(&captures_lock);
    return c;
}

/* Make s part of capture c, or leave it (c NULL); captures_lock and c's lock held. */
static void set_capture(mt_stream *s, mt_capture *c) {
    atomic_store(&s->capture_id, c ? c->id : 0);
    atomic_store(&s->capture, c);
}

/* The error for work on stream s that capture c, invalidated, refuses. Called with c's lock
 * held, and releases it: once it is released the capture may be ended and freed. */
static mtiart_status refuse_invalidated(mt_capture *c, const mt_stream *s) {
    mtiart_status st =
        mt_set_error(MTIART_ERROR_CAPTURE_INVALIDATED,
                     "stream %llu takes part in capture %llu, which was "
                     "invalidated: %s",
                     (unsigned long long)s->id, (unsigned long long)c->id, c->invalid_reason);
    pthread_mutex_unlock(&c->lock);
    return st;
}

/* Append a node to the graph s records into, after its frontier, which becomes the node
 * (c's lock held). The op and body are moved in or released. */
/* The top-level node a node of stream s is recorded as in the capture's memory record:
 * itself, or inside a conditional body the conditional node, the next top-level node. */
static size_t mem_node_of(const mt_capture *c, const mt_stream *s) {
    return s->scope ? c->graph->dag->num_nodes : SIZE_MAX;
}

static mtiart_status append_locked(mt_capture *c, mt_stream *s, mt_op *op, mt_dag *body,
                                   const mt_graph_mem *body_mem, const mtiart_arg *args,
                                   uint32_t num_args) {
    size_t index;
    /* The capture's graph holds what every node touches, also inside conditional bodies;
     * a conditional's flag is held from the body's beginning. */
    size_t mem_node = op->type == MT_OP_CONDITIONAL ? MT_BUFFERS_RECORDED : mem_node_of(c, s);
    mt_dag *d = dag_of(c, s);
    mtiart_status st = mt_graph_append(c->graph, d, op, body, body_mem, mem_node, s->frontier,
                                       s->frontier_len, args, num_args, &index);
    if (st == MTIART_SUCCESS) d->nodes[index].stream_id = s->id;
    if (st == MTIART_SUCCESS && !frontier_set(s, &index, 1)) st = mt_oom();
    return st;
}

mtiart_status mt_capture_record(mt_stream *s, mt_op *op, const mtiart_arg *args,
                                uint32_t num_args) {
    mt_capture *c = lock_capture_of(s);
    if (!c) return MTIART_ERROR_NOT_CAPTURING; /* the capture ended meanwhile */
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) {
        mt_op_release(op);
        return refuse_invalidated(c, s);
    }
    mtiart_status st = append_locked(c, s, op, NULL, NULL, args, num_args);
    pthread_mutex_unlock(&c->lock);
    return st;
}

mtiart_status mt_capture_child(mt_stream *s, mt_dag *body, const mt_graph_mem *mem) {
    mt_capture *c = lock_capture_of(s);
    if (!c) {
        mt_dag_unref(body);
        return MTIART_ERROR_NOT_CAPTURING; /* the capture ended meanwhile */
    }
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) {
        mt_dag_unref(body);
        return refuse_invalidated(c, s);
    }
    mtiart_status st = s->scope ? mt_check_conditional_body(body) : MTIART_SUCCESS;
    if (st == MTIART_SUCCESS) {
        mt_op op = {.type = MT_OP_CHILD, .num_blocks = 1};
        st = append_locked(c, s, &op, body, mem, NULL, 0); /* takes the body */
    } else {
        mt_dag_unref(body);
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

mt_pool *mt_capture_pool_retain(mt_stream *s) {
    if (MT_LIKELY(!atomic_load(&s->capture))) return NULL;
    pthread_mutex_lock(&captures_lock);
    mt_capture *c = atomic_load(&s->capture);
    mt_pool *pool = c ? c->pool : NULL;
    if (pool) mt_pool_retain(pool);
    pthread_mutex_unlock(&captures_lock);
    return pool;
}

static const char *mode_name(mtiart_capture_mode mode) {
    switch (mode) {
    case MTIART_CAPTURE_MODE_GLOBAL: return "global";
    case MTIART_CAPTURE_MODE_THREAD_LOCAL: return "thread_local";
    default: return "relaxed";
    }
}

/* The hook that says who is calling (mtiart_set_caller_hook), under hook_lock. */
static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static mtiart_caller_hook caller_hook;
static void *caller_hook_data;

MTIART_API mtiart_status mtiart_set_caller_hook(mtiart_caller_hook hook, void *user_data) {
    MT_API_ENTRY();
    pthread_mutex_lock(&hook_lock);
    caller_hook = hook;
    caller_hook_data = hook ? user_data : NULL;
    pthread_mutex_unlock(&hook_lock);
    return MTIART_SUCCESS;
}

/* "synchronize() (mtiart_device_synchronize) on thread 'worker-2' (tid 812) at
 * train.py:88": the public function being called, the calling thread, and what the caller
 * hook adds (no lock held: the hook may call into Python, which may call back in). */
static void describe_caller(char *out, size_t cap) {
    mtiart_caller_info info;
    memset(&info, 0, sizeof info);
    if (pthread_getname_np(pthread_self(), info.thread, sizeof info.thread) != 0)
        info.thread[0] = '\0';
    pthread_mutex_lock(&hook_lock);
    mtiart_caller_hook hook = caller_hook;
    void *data = caller_hook_data;
    pthread_mutex_unlock(&hook_lock);
    if (hook) {
        const char *api = mt_api_suspend(); /* the hook's own calls name their errors */
        hook(&info, data);
        mt_api_resume(api);
        info.thread[sizeof info.thread - 1] = '\0';
        info.call[sizeof info.call - 1] = '\0';
        info.location[sizeof info.location - 1] = '\0';
    }
    const char *api = mt_api_name ? mt_api_name : "a call";
    char call[160];
    if (info.call[0]) snprintf(call, sizeof call, "%s (%s)", info.call, api);
    else snprintf(call, sizeof call, "%s", api);
    snprintf(out, cap, "%s on thread '%s' (tid %ld)%s%s", call, info.thread,
             (long)syscall(SYS_gettid), info.location[0] ? " at " : "", info.location);
}

static mt_capture *find_victim(mt_stream *stream, mt_event *event, const char **why_out);

mtiart_status mt_capture_check_unsafe(mt_stream *stream, mt_event *event) {
    pthread_mutex_lock(&captures_lock);
    const char *why = "";
    mt_capture *victim = find_victim(stream, event, &why);
    if (!victim) {
        pthread_mutex_unlock(&captures_lock);
        return MTIART_SUCCESS;
    }
    /* Who is calling, asked with no lock held (the hook may run Python); then the search
     * again, as the captures may have changed meanwhile. */
    pthread_mutex_unlock(&captures_lock);
    char caller[MT_CALLER_MAX];
    describe_caller(caller, sizeof caller);
    pthread_mutex_lock(&captures_lock);
    victim = find_victim(stream, event, &why);
    if (!victim) {
        pthread_mutex_unlock(&captures_lock);
        return MTIART_SUCCESS;
    }
    /* The capture keeps the reason for the calls that find it invalidated later and for
     * its end, so it names the call and its caller; this call's own message has the name
     * in front already. */
    char detail[320], reason[MT_INVALID_REASON_MAX];
    snprintf(detail, sizeof detail,
             "not permitted while stream %llu is capturing (capture %llu, mode %s): %s",
             (unsigned long long)victim->origin->id, (unsigned long long)victim->id,
             mode_name(victim->mode), why);
    snprintf(reason, sizeof reason,
             "capture invalidated by %s while stream %llu was capturing in %s mode (%s)", caller,
             (unsigned long long)victim->origin->id, mode_name(victim->mode), why);
    pthread_mutex_lock(&victim->lock);
    invalidate_locked(victim, reason);
    pthread_mutex_unlock(&victim->lock);
    pthread_mutex_unlock(&captures_lock);
    return mt_set_error(MTIART_ERROR_CAPTURE_UNSUPPORTED,
                        "%s; the capture has been invalidated (%s)", detail, caller);
}

/* The capture an unsafe call on `stream` / `event` disturbs, and why (captures_lock held). */
static mt_capture *find_victim(mt_stream *stream, mt_event *event, const char **why_out) {
    mt_capture *victim = NULL;
    const char *why = "";
    mt_capture *sc = stream ? atomic_load(&stream->capture) : NULL;
    if (sc) {
        victim = sc;
        why = "the stream it waits for is capturing";
    } else if (event && event->capture) {
        victim = event->capture;
        why = "the event was recorded in an active capture";
    } else {
        pthread_t self = pthread_self();
        for (mt_capture *c = captures; c; c = c->next) {
            if (c->mode == MTIART_CAPTURE_MODE_GLOBAL ||
                (c->mode == MTIART_CAPTURE_MODE_THREAD_LOCAL && pthread_equal(c->thread, self))) {
                victim = c;
                why = c->mode == MTIART_CAPTURE_MODE_GLOBAL
                          ? "a capture in global mode is active"
                          : "this thread has a capture in thread_local mode active";
                break;
            }
        }
    }
    *why_out = why;
    return victim;
}

mtiart_status mt_capture_event_record(mt_stream *s, mt_event *e, bool external) {
    mt_capture *c = lock_capture_of(s);
    if (!c) return MTIART_ERROR_NOT_CAPTURING; /* the capture ended meanwhile */
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) return refuse_invalidated(c, s);
    mtiart_status st = MTIART_SUCCESS;
    if (e->capture && e->capture != c)
        st = mt_set_error(MTIART_ERROR_CAPTURE_ISOLATION,
                          "the event is already recorded in another active capture");
    else if (external && s->scope)
        st = mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                          "an event record node inside a conditional body (its replays would "
                          "record the event a number of times known only at run time)");
    /* Remember the event so its capture state is cleared when the capture ends. */
    else if (!e->capture && c->num_events == c->cap_events) {
        size_t cap = c->cap_events ? c->cap_events * 2 : 8;
        mt_event **grown = realloc(c->events, cap * sizeof *grown);
        if (!grown) st = mt_oom();
        else {
            c->events = grown;
            c->cap_events = cap;
        }
    }
    /* A wait on the event in this capture depends on what the stream's next operation
     * would: the record node, or the frontier itself (an edge, no node). Room first, so
     * that a failure leaves the graph as it was. */
    if (st == MTIART_SUCCESS &&
        !reserve(&e->capture_deps, &e->capture_deps_cap, external ? 1 : s->frontier_len))
        st = mt_oom();
    if (st == MTIART_SUCCESS && external) {
        mt_op op = {.type = MT_OP_EVENT_RECORD, .num_blocks = 1};
        mt_event_ref(e);
        op.u.event.event = e;
        st = append_locked(c, s, &op, NULL, NULL, NULL, 0);
    }
    if (st == MTIART_SUCCESS) {
        if (s->frontier_len)
            memcpy(e->capture_deps, s->frontier, s->frontier_len * sizeof *s->frontier);
        e->capture_deps_len = s->frontier_len;
        e->capture_scope = scope_id(s);
        if (!e->capture) {
            mt_event_ref(e);
            c->events[c->num_events++] = e;
        }
        e->capture = c;
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

static bool add_stream(mt_capture *c, mt_stream *s) {
    if (c->num_streams == c->cap_streams) {
        size_t cap = c->cap_streams ? c->cap_streams * 2 : 4;
        mt_stream **grown = realloc(c->streams, cap * sizeof *grown);
        if (!grown) return false;
        c->streams = grown;
        c->cap_streams = cap;
    }
    mt_stream_ref(s);
    c->streams[c->num_streams++] = s;
    return true;
}

/* mt_capture_event_wait with captures_lock held: sc and ec (the stream's and the event's
 * captures, not both NULL) stay alive. */
static mtiart_status capture_wait_locked(mt_stream *s, const mt_pin *pin, mt_event *e,
                                         mt_capture *sc, mt_capture *ec) {
    if (ec && sc && ec != sc)
        return mt_set_error(MTIART_ERROR_CAPTURE_ISOLATION,
                            "stream %llu (capture %llu) cannot wait on an event recorded "
                            "in capture %llu",
                            (unsigned long long)s->id, (unsigned long long)sc->id,
                            (unsigned long long)ec->id);
    mt_capture *c = ec ? ec : sc;
    if (c->dev != s->dev)
        return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                            "a capture cannot span devices (stream on device %d, capture "
                            "on device %d)",
                            s->dev->index, c->dev->index);
    pthread_mutex_lock(&c->lock);
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) return refuse_invalidated(c, s);
    mtiart_status st = MTIART_SUCCESS;
    if (ec && e->capture_scope != (sc ? scope_id(s) : 0)) {
        st = mt_set_error(MTIART_ERROR_CAPTURE_ISOLATION,
                          "the event was recorded %s a conditional body that stream %llu is "
                          "not capturing into (a body's work joins only work of that body)",
                          e->capture_scope ? "inside" : "outside", (unsigned long long)s->id);
    } else if (ec && sc) {
        /* A join inside the capture: an edge from what the record saw. */
        if (!frontier_merge(s, e->capture_deps, e->capture_deps_len)) st = mt_oom();
    } else if (ec) {
        /* A fork: the stream joins the capture, its next operation after the record.
         * Joining is atomic with the stream's destruction (both under captures_lock): a
         * stream destroyed before it could join must not become part of the capture. */
        if (!mt_handle_alive(pin))
            st = mt_set_error(MTIART_ERROR_INVALID_HANDLE, "stream %llu destroyed concurrently",
                              (unsigned long long)s->id);
        else if (!add_stream(c, s)) st = mt_oom();
        else if (!frontier_set(s, e->capture_deps, e->capture_deps_len)) {
            c->num_streams--;
            mt_stream_unref(s);
            st = mt_oom();
        } else {
            set_capture(s, c);
        }
    } else if (s->scope) {
        st = mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                          "a wait for an event recorded outside the capture inside a "
                          "conditional body");
    } else {
        /* An event recorded outside the capture (eagerly, by a replay, or not yet): each
         * replay waits for its most recent record made before that replay was launched. */
        mt_op op = {.type = MT_OP_EVENT_WAIT, .num_blocks = 1};
        mt_event_ref(e);
        op.u.event.event = e;
        st = append_locked(c, s, &op, NULL, NULL, NULL, 0);
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

mtiart_status mt_capture_event_wait(mt_stream *s, const mt_pin *pin, mt_event *e) {
    /* captures_lock keeps the captures read here alive: one is freed only after it has
     * been unlinked under this lock. */
    pthread_mutex_lock(&captures_lock);
    mt_capture *sc = atomic_load(&s->capture), *ec = atomic_load(&e->capture);
    mtiart_status st = MTIART_SUCCESS;
    bool eager = !sc && !ec; /* the capture ended meanwhile: an ordinary wait */
    if (!eager) st = capture_wait_locked(s, pin, e, sc, ec);
    pthread_mutex_unlock(&captures_lock);
    return eager ? mt_stream_enqueue_wait(s, e, atomic_load(&e->recorded)) : st;
}

/* Nodes reachable backwards from `roots` (and the roots). */
static bool *ancestors(const mt_dag *g, const size_t *roots, size_t num_roots, bool *seen) {
    size_t *stack = malloc((g->num_nodes ? g->num_nodes : 1) * sizeof *stack);
    if (!seen || !stack) {
        free(seen);
        free(stack);
        return NULL;
    }
    size_t top = 0;
    for (size_t i = 0; i < num_roots; i++)
        if (!seen[roots[i]]) {
            seen[roots[i]] = true;
            stack[top++] = roots[i];
        }
    while (top) {
        const mt_node *n = &g->nodes[stack[--top]];
        for (uint32_t d = 0; d < n->num_deps; d++)
            if (!seen[n->deps[d]]) {
                seen[n->deps[d]] = true;
                stack[top++] = n->deps[d];
            }
    }
    free(stack);
    return seen;
}

static bool *new_marks(const mt_dag *g) { return calloc(g->num_nodes ? g->num_nodes : 1, 1); }

/* Whether the work of forked stream s has been joined back: every node of its frontier
 * is something another stream of the capture depends on (c's lock held). 1, 0, or -1 when
 * out of host memory. */
static int joined_back(mt_capture *c, const mt_stream *s) {
    if (s->frontier_len == 0) return 1;
    const mt_dag *g = c->graph->dag;
    bool *seen = new_marks(g);
    for (size_t i = 0; i < c->num_streams && seen; i++) {
        if (c->streams[i] == s) continue;
        size_t len;
        const size_t *f = top_frontier(c->streams[i], &len);
        seen = ancestors(g, f, len, seen);
    }
    if (!seen) return -1;
    int all = 1;
    for (size_t k = 0; k < s->frontier_len; k++) all &= seen[s->frontier[k]];
    free(seen);
    return all;
}

mtiart_status mt_capture_retire_stream(mt_stream *s, mt_pin *pin) {
    pthread_mutex_lock(&captures_lock);
    mt_capture *c = atomic_load(&s->capture);
    mtiart_status st = MTIART_SUCCESS;
    if (c) {
        pthread_mutex_lock(&c->lock);
        int joined = c->origin == s || s->scope ? 0 : joined_back(c, s);
        if (c->origin == s)
            st = mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                              "stream %llu is capturing (capture %llu); end the capture before "
                              "destroying it",
                              (unsigned long long)s->id, (unsigned long long)c->id);
        else if (s->scope)
            st = mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                              "stream %llu is capturing a conditional body (capture %llu); end "
                              "it before destroying the stream",
                              (unsigned long long)s->id, (unsigned long long)c->id);
        else if (joined < 0) st = mt_oom();
        else if (!joined)
            st = mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                              "stream %llu was forked into capture %llu and its work has not "
                              "been joined back (record an event on it and make another "
                              "stream of the capture wait on that event first)",
                              (unsigned long long)s->id, (unsigned long long)c->id);
        pthread_mutex_unlock(&c->lock);
    }
    bool retired = st == MTIART_SUCCESS && mt_handle_retire(pin);
    /* Joined: its work is the other streams' to join now, and it no longer covers theirs
     * (the capture keeps its reference until it ends, as for any stream). */
    if (c && retired) {
        pthread_mutex_lock(&c->lock);
        s->frontier_len = 0;
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&captures_lock);
    if (st == MTIART_SUCCESS && !retired)
        return mt_set_error(MTIART_ERROR_INVALID_HANDLE, "stream %llu destroyed concurrently",
                            (unsigned long long)s->id);
    return st;
}

static mtiart_status already_capturing(const mt_stream *s, uint64_t capture_id) {
    return mt_set_error(MTIART_ERROR_ALREADY_CAPTURING,
                        "stream %llu is already capturing (capture %llu)",
                        (unsigned long long)s->id, (unsigned long long)capture_id);
}

#define KNOWN_CAPTURE_FLAGS MTIART_CAPTURE_FLAG_MEM_NODES

MTIART_API mtiart_status mtiart_stream_begin_capture_with_flags(mtiart_stream stream,
                                                                mtiart_capture_mode mode,
                                                                mtiart_pool_id pool_id,
                                                                uint64_t flags) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    if ((unsigned)mode > MTIART_CAPTURE_MODE_RELAXED)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown capture mode %d", (int)mode);
    if (flags & ~(uint64_t)KNOWN_CAPTURE_FLAGS)
        return mt_set_error(MTIART_ERROR_INVALID_VALUE, "unknown capture flags 0x%llx",
                            (unsigned long long)(flags & ~(uint64_t)KNOWN_CAPTURE_FLAGS));
    if (atomic_load(&s->capture)) return already_capturing(s, atomic_load(&s->capture_id));
    mt_capture *c = capture_new();
    MT_CHECK_ALLOC(c);
    mtiart_status st = mt_pool_acquire(s->dev, pool_id, &c->pool);
    if (st) {
        capture_recycle(c);
        return st;
    }
    c->id = atomic_fetch_add(&next_capture_id, 1);
    c->graph = mt_graph_new(s->dev);
    /* The capture holds what its nodes touch outside its pool, as its graph will. */
    if (c->graph) c->graph->mem = mt_graph_mem_new(s->dev, c->pool, c->id);
    if (!c->graph || !c->graph->mem || !add_stream(c, s)) {
        if (c->graph) mt_graph_free(c->graph);
        mt_pool_release(c->pool);
        capture_recycle(c);
        return mt_oom();
    }
    c->mode = mode;
    c->flags = flags;
    c->thread = pthread_self();
    c->dev = s->dev;
    c->origin = s;
    c->status = MTIART_CAPTURE_STATUS_ACTIVE;
    /* The checks and the start are one step under captures_lock, against another begin
     * on the same stream, its joining another capture, and its destruction. */
    pthread_mutex_lock(&captures_lock);
    mt_capture *current = atomic_load(&s->capture);
    uint64_t current_id = current ? current->id : 0;
    bool alive = mt_handle_alive(&s_pin);
    if (!current && alive) {
        s->frontier_len = 0;
        free(s->last_invalidation);
        s->last_invalidation = NULL;
        c->next = captures;
        if (captures) captures->prev = c;
        captures = c;
        atomic_fetch_add(&mt_active_captures, 1);
        set_capture(s, c);
    }
    pthread_mutex_unlock(&captures_lock);
    if (!current && alive) return MTIART_SUCCESS;
    mt_graph_free(c->graph);
    mt_pool_release(c->pool);
    mt_stream_unref(s);
    free(c->streams);
    capture_recycle(c);
    if (current) return already_capturing(s, current_id);
    return mt_set_error(MTIART_ERROR_INVALID_HANDLE, "stream %llu destroyed concurrently",
                        (unsigned long long)s->id);
}

MTIART_API mtiart_status mtiart_stream_begin_capture(mtiart_stream stream, mtiart_capture_mode mode,
                                                     mtiart_pool_id pool_id) {
    MT_API_ENTRY();
    return mtiart_stream_begin_capture_with_flags(stream, mode, pool_id, 0);
}

/* The capture stream s takes part in, locked, if it makes memory nodes (else NULL). */
static mt_capture *lock_mem_capture_of(mt_stream *s) {
    mt_capture *c = lock_capture_of(s);
    if (c && !(c->flags & MTIART_CAPTURE_FLAG_MEM_NODES)) {
        pthread_mutex_unlock(&c->lock);
        return NULL;
    }
    return c;
}

/* Memory nodes are top-level nodes only (a body runs any number of times). Releases c's
 * lock. */
static mtiart_status refuse_mem_node_in_body(mt_capture *c, const mt_stream *s) {
    pthread_mutex_unlock(&c->lock);
    return mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                        "stream %llu captures a conditional body, which cannot allocate or free "
                        "graph memory: allocate before the body",
                        (unsigned long long)s->id);
}

mtiart_status mt_capture_mem_alloc(mt_stream *s, size_t size, void **ptr) {
    mt_capture *c = lock_mem_capture_of(s);
    if (!c) return MTIART_ERROR_NOT_CAPTURING;
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) return refuse_invalidated(c, s);
    if (s->scope) return refuse_mem_node_in_body(c, s);
    uint64_t id = c->id;
    mt_pool *pool = c->pool;
    mt_pool_retain(pool);
    pthread_mutex_unlock(&c->lock);
    /* Reserved with no capture lock held: the allocator may wait for the device. */
    mt_op op = {.type = MT_OP_MEM_ALLOC, .num_blocks = 1};
    void *address;
    mtiart_status st = mt_graph_alloc_new(s->dev, s, pool, size, &op.u.mem.alloc, &address);
    mt_pool_release(pool);
    if (st) return st;
    c = lock_mem_capture_of(s);
    if (!c || c->id != id) { /* the capture ended meanwhile: an ordinary allocation */
        if (c) pthread_mutex_unlock(&c->lock);
        mt_op_release(&op);
        return MTIART_ERROR_NOT_CAPTURING;
    }
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED || s->scope) {
        mt_op_release(&op);
        return s->scope ? refuse_mem_node_in_body(c, s) : refuse_invalidated(c, s);
    }
    size_t index;
    st = mt_graph_append(c->graph, c->graph->dag, &op, NULL, NULL, SIZE_MAX, s->frontier,
                         s->frontier_len, NULL, 0, &index);
    if (st == MTIART_SUCCESS) c->graph->dag->nodes[index].stream_id = s->id;
    if (st == MTIART_SUCCESS && !frontier_set(s, &index, 1)) st = mt_oom();
    pthread_mutex_unlock(&c->lock);
    if (st == MTIART_SUCCESS) *ptr = address;
    return st;
}

mtiart_status mt_capture_mem_free(mt_stream *s, const void *ptr) {
    mt_capture *c = lock_mem_capture_of(s);
    if (!c) return MTIART_ERROR_NOT_CAPTURING;
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) return refuse_invalidated(c, s);
    if (s->scope) return refuse_mem_node_in_body(c, s);
    mt_graph_alloc *alloc = mt_graph_alloc_find(s->dev, ptr);
    mtiart_status st;
    if (!alloc) {
        st = mt_set_error(MTIART_ERROR_NOT_SUPPORTED,
                          "stream %llu captures memory nodes (capture %llu), and %p is not a "
                          "graph allocation: free it before or after the capture",
                          (unsigned long long)s->id, (unsigned long long)c->id, ptr);
    } else {
        size_t index;
        st = mt_graph_append_mem_free(c->graph, alloc, s->frontier, s->frontier_len, &index);
        if (st == MTIART_SUCCESS) c->graph->dag->nodes[index].stream_id = s->id;
        if (st == MTIART_SUCCESS && !frontier_set(s, &index, 1)) st = mt_oom();
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

/* A stream of the capture with a conditional body still open, or NULL (c's lock held). */
static const mt_stream *open_scope(const mt_capture *c) {
    for (size_t i = 0; i < c->num_streams; i++)
        if (c->streams[i]->scope) return c->streams[i];
    return NULL;
}

/* Unlink the capture and detach its streams and events (captures_lock and its lock held):
 * from here on no call can reach it. */
static void detach_locked(mt_capture *c) {
    if (c->prev) c->prev->next = c->next;
    else captures = c->next;
    if (c->next) c->next->prev = c->prev;
    atomic_fetch_sub(&mt_active_captures, 1);
    for (size_t i = 0; i < c->num_streams; i++) {
        mt_stream *s = c->streams[i];
        set_capture(s, NULL);
        s->frontier_len = 0;
        while (s->scope) {
            mt_scope *sc = s->scope;
            s->scope = sc->outer;
            free_scope(sc);
        }
    }
    for (size_t i = 0; i < c->num_events; i++) {
        mt_event *e = c->events[i];
        /* Only if the event is still ours: an eager record detaches it, and another
         * capture may have recorded it since (clearing that would turn its in-capture
         * waits into external ones). */
        if (atomic_load(&e->capture) == c) {
            e->capture = NULL;
            e->capture_deps_len = 0;
        }
    }
}

/* Release what a detached capture holds, except its graph and pool use. */
static void release_detached(mt_capture *c) {
    for (size_t i = 0; i < c->num_streams; i++) mt_stream_unref(c->streams[i]);
    for (size_t i = 0; i < c->num_events; i++) mt_event_unref(c->events[i]);
    free(c->events);
    free(c->streams);
    mt_alloc_end_capture(c->dev, c->id);
}

MTIART_API mtiart_status mtiart_stream_end_capture(mtiart_stream stream, mtiart_graph *graph) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    MT_CHECK_NOT_NULL(graph);
    /* Checking and ending are one step under captures_lock: a second end_capture, or a
     * call recording into the capture, finds it whole or not at all. */
    pthread_mutex_lock(&captures_lock);
    mt_capture *c = atomic_load(&s->capture);
    if (!c || c->origin != s) {
        uint64_t id = c ? c->id : 0, origin = c ? c->origin->id : 0;
        pthread_mutex_unlock(&captures_lock);
        if (!c)
            return mt_set_error(MTIART_ERROR_NOT_CAPTURING, "stream %llu is not capturing",
                                (unsigned long long)s->id);
        return mt_set_error(MTIART_ERROR_CAPTURE_WRONG_STREAM,
                            "capture %llu was begun on stream %llu, not on stream %llu",
                            (unsigned long long)id, (unsigned long long)origin,
                            (unsigned long long)s->id);
    }
    pthread_mutex_lock(&c->lock);
    mtiart_status st = MTIART_SUCCESS;
    char message[MT_INVALID_REASON_MAX + 128] = "";
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) {
        st = MTIART_ERROR_CAPTURE_INVALIDATED;
        snprintf(message, sizeof message, "capture %llu on stream %llu was invalidated: %s",
                 (unsigned long long)c->id, (unsigned long long)s->id, c->invalid_reason);
        free(s->last_invalidation); /* kept for mtiart_stream_get_capture_invalidation */
        s->last_invalidation = strdup(c->invalid_reason);
    } else if (open_scope(c)) {
        st = MTIART_ERROR_CAPTURE_UNJOINED;
        snprintf(message, sizeof message,
                 "capture %llu: stream %llu began a conditional body that was not ended "
                 "(mtiart_stream_end_conditional)",
                 (unsigned long long)c->id, (unsigned long long)open_scope(c)->id);
    } else if (c->num_streams > 1) {
        const mt_dag *dag = c->graph->dag;
        bool *joined = ancestors(dag, s->frontier, s->frontier_len, new_marks(dag));
        if (!joined) {
            st = MTIART_ERROR_OUT_OF_MEMORY;
            snprintf(message, sizeof message, "out of host memory");
        }
        for (size_t i = 1; joined && i < c->num_streams && st == MTIART_SUCCESS; i++) {
            mt_stream *other = c->streams[i];
            for (size_t k = 0; k < other->frontier_len; k++) {
                if (!joined[other->frontier[k]]) {
                    st = MTIART_ERROR_CAPTURE_UNJOINED;
                    snprintf(message, sizeof message,
                             "capture %llu: stream %llu was forked into the capture but its "
                             "work was not joined back into the origin stream %llu (record "
                             "an event on it and make the origin stream wait on that event "
                             "before ending the capture)",
                             (unsigned long long)c->id, (unsigned long long)other->id,
                             (unsigned long long)s->id);
                    break;
                }
            }
        }
        free(joined);
    }
    detach_locked(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&captures_lock);
    release_detached(c);
    mt_graph *g = c->graph;
    if (st != MTIART_SUCCESS) {
        mt_graph_free(g); /* releases nothing of the pool: the capture's use goes below */
        mt_pool_release(c->pool);
        capture_recycle(c);
        return mt_set_error(st, "%s; the capture was discarded", message);
    }
    g->pool = c->pool; /* the capture's use of the pool passes to the graph */
    g->pool_order = mt_pool_order_captured(c->pool, &g->pool_seq);
    capture_recycle(c);
    return mt_graph_publish(g, graph);
}

MTIART_API mtiart_status mtiart_stream_get_capture_info(mtiart_stream stream,
                                                        mtiart_capture_status *status,
                                                        uint64_t *capture_id,
                                                        mtiart_pool_id *pool) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    pthread_mutex_lock(&captures_lock);
    mt_capture *c = atomic_load(&s->capture);
    mtiart_capture_status state = MTIART_CAPTURE_STATUS_NONE;
    uint64_t id = 0;
    mtiart_pool_id pid = {0, 0};
    if (c) {
        pthread_mutex_lock(&c->lock);
        state = (mtiart_capture_status)c->status;
        id = c->id;
        pid = mt_pool_id_of(c->pool);
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&captures_lock);
    if (status) *status = state;
    if (capture_id) *capture_id = id;
    if (pool) *pool = pid;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_get_capture_invalidation(mtiart_stream stream, char *buffer,
                                                                size_t capacity, size_t *length) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    if (capacity && !buffer) return mt_set_error(MTIART_ERROR_INVALID_VALUE, "buffer is NULL");
    char reason[MT_INVALID_REASON_MAX] = "";
    pthread_mutex_lock(&captures_lock);
    mt_capture *c = atomic_load(&s->capture);
    if (c) {
        pthread_mutex_lock(&c->lock);
        if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED)
            snprintf(reason, sizeof reason, "%s", c->invalid_reason);
        pthread_mutex_unlock(&c->lock);
    } else if (s->last_invalidation) {
        snprintf(reason, sizeof reason, "%s", s->last_invalidation);
    }
    pthread_mutex_unlock(&captures_lock);
    size_t len = strlen(reason);
    if (capacity) {
        size_t n = len < capacity ? len : capacity - 1;
        memcpy(buffer, reason, n);
        buffer[n] = '\0';
    }
    if (length) *length = len;
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_begin_conditional(mtiart_stream stream,
                                                         mtiart_conditional_type type,
                                                         const void *condition,
                                                         uint32_t condition_size) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    mt_scope *sc = calloc(1, sizeof *sc);
    MT_CHECK_ALLOC(sc);
    mtiart_status st =
        mt_op_pack_conditional(&sc->op, s->dev, "stream", type, condition, condition_size);
    if (st) {
        free(sc);
        return st;
    }
    if (!(sc->body = mt_dag_new())) {
        free(sc);
        return mt_oom();
    }
    mt_capture *c = lock_capture_of(s);
    if (!c) {
        free_scope(sc);
        return mt_set_error(MTIART_ERROR_NOT_CAPTURING,
                            "stream %llu is not capturing (a conditional body is captured "
                            "inside a stream capture)",
                            (unsigned long long)s->id);
    }
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) {
        free_scope(sc);
        return refuse_invalidated(c, s);
    }
    /* The capture holds the condition from here on (the body's end takes it as it is), as
     * read by the conditional node, the next top-level node. */
    mt_buffer flag;
    mt_op_buffers(&sc->op, NULL, 0, &flag);
    size_t cap = 0;
    if ((st = mt_check_buffers(s->dev, &flag, 1, "stream", c->graph->mem,
                               c->graph->dag->num_nodes)) ||
        !reserve(&sc->outer_frontier, &cap, s->frontier_len)) {
        pthread_mutex_unlock(&c->lock);
        free_scope(sc);
        return st ? st : mt_oom();
    }
    if (s->frontier_len) memcpy(sc->outer_frontier, s->frontier, s->frontier_len * sizeof(size_t));
    sc->outer_len = s->frontier_len;
    sc->id = atomic_fetch_add(&next_scope_id, 1);
    sc->outer = s->scope;
    s->scope = sc;
    s->frontier_len = 0; /* the body's first nodes depend on nothing inside it */
    pthread_mutex_unlock(&c->lock);
    return MTIART_SUCCESS;
}

MTIART_API mtiart_status mtiart_stream_end_conditional(mtiart_stream stream) {
    MT_API_ENTRY();
    LOOKUP_STREAM(s, stream);
    mt_capture *c = lock_capture_of(s);
    if (!c)
        return mt_set_error(MTIART_ERROR_NOT_CAPTURING, "stream %llu is not capturing",
                            (unsigned long long)s->id);
    mt_scope *sc = s->scope;
    if (!sc) {
        pthread_mutex_unlock(&c->lock);
        return mt_set_error(MTIART_ERROR_NOT_PERMITTED,
                            "stream %llu has no conditional body open (begin one with "
                            "mtiart_stream_begin_conditional)",
                            (unsigned long long)s->id);
    }
    s->scope = sc->outer;
    mtiart_status st;
    if (c->status == MTIART_CAPTURE_STATUS_INVALIDATED) {
        frontier_set(s, NULL, 0);
        free_scope(sc);
        return refuse_invalidated(c, s);
    }
    if (!frontier_set(s, sc->outer_frontier, sc->outer_len)) {
        st = mt_oom();
    } else {
        st = append_locked(c, s, &sc->op, sc->body, NULL, NULL, 0);
        sc->body = NULL; /* moved into the node (or released) */
    }
    if (st) invalidate_locked(c, "a conditional body could not be added to the graph");
    pthread_mutex_unlock(&c->lock);
    free_scope(sc);
    return st;
}
