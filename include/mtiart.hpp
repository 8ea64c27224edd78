/*
 * mtiart.hpp - a header-only C++17 layer over the C API of libmtiart (mtiart.h).
 *
 *   - Failures throw mtiart::error, which carries the mtiart_status (status()) and the
 *     runtime's detailed message; MTIART_NOT_READY from queries is a `false`, not an error.
 *   - Streams, events, graphs, executables and device buffers are move-only owners whose
 *     destructors release the handle and never throw. A moved-from owner is empty.
 *     stream_ref is the non-owning, copyable view every stream operation takes (the
 *     default stream is only ever a stream_ref: it is never destroyed).
 *   - mtiart::capture is a scope guard: end() returns the captured graph; leaving the
 *     scope without end() - by return or by an exception - abandons the capture, so the
 *     stream leaves capture mode and the recorded work is discarded.
 *   - Host copies take a pointer and a count, or any contiguous container (std::vector,
 *     std::array, C arrays, ...); under C++20 also std::span.
 *
 * It adds no symbols to link: programs link libmtiart as C programs do
 * (`pkg-config --cflags --libs mtiart`).
 */
#ifndef MTIART_HPP
#define MTIART_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if __cplusplus >= 202002L && defined(__has_include)
#if __has_include(<span>)
#include <span>
#define MTIART_HPP_HAVE_SPAN 1
#endif
#endif

#include "mtiart.h"

namespace mtiart {

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                               */
/* ------------------------------------------------------------------------------------ */

/* A failed libmtiart call: what() is "<operation>: <status name>: <detail>". */
class error : public std::runtime_error {
public:
    error(mtiart_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}

    mtiart_status status() const noexcept { return status_; }

    /* "MTIART_ERROR_INVALID_HANDLE", ... */
    const char *status_name() const noexcept { return mtiart_status_name(status_); }

private:
    mtiart_status status_;
};

/* Throw mtiart::error for a negative status (with the calling thread's detail message);
 * return the status otherwise, so that MTIART_NOT_READY reaches the caller. */
inline mtiart_status check(mtiart_status status, const char *operation) {
    if (status < 0) {
        std::string message = std::string(operation) + ": " + mtiart_status_name(status);
        const char *detail = mtiart_last_error_message();
        if (detail && *detail) message += std::string(": ") + detail;
        throw error(status, message);
    }
    return status;
}

namespace detail {

/* Contiguous containers of T: anything with std::data() convertible to T* and std::size(). */
template <class C, class T, class = void>
struct is_contiguous_of : std::false_type {};
template <class C, class T>
struct is_contiguous_of<C, T,
                        std::void_t<decltype(std::data(std::declval<C &>())),
                                    decltype(std::size(std::declval<C &>()))>>
    : std::is_convertible<decltype(std::data(std::declval<C &>())), T *> {};

/* Move-only ownership of a C handle, released with Destroy (errors ignored: destructors
 * never throw, and a handle the runtime already invalidated is simply gone). */
template <class Handle, mtiart_status (*Destroy)(Handle)>
class owner {
public:
    owner() noexcept = default;
    explicit owner(Handle handle) noexcept : handle_(handle) {}
    owner(const owner &) = delete;
    owner &operator=(const owner &) = delete;
    owner(owner &&other) noexcept : handle_(std::exchange(other.handle_, Handle{})) {}
    owner &operator=(owner &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, Handle{});
        }
        return *this;
    }
    ~owner() { reset(); }

    Handle get() const noexcept { return handle_; }
    explicit operator bool() const noexcept { return handle_ != Handle{}; }

    /* Give up ownership: the caller destroys the handle. */
    Handle release() noexcept { return std::exchange(handle_, Handle{}); }

    void reset() noexcept {
        if (handle_ != Handle{}) (void)Destroy(std::exchange(handle_, Handle{}));
    }

private:
    Handle handle_{};
};

inline void require(bool ok, const char *operation, const char *message) {
    if (!ok)
        throw error(MTIART_ERROR_INVALID_VALUE,
                    std::string(operation) + ": " +
                        mtiart_status_name(MTIART_ERROR_INVALID_VALUE) + ": " + message);
}

}  // namespace detail

/* ------------------------------------------------------------------------------------ */
/* Library and devices                                                                  */
/* ------------------------------------------------------------------------------------ */

inline void init() { check(mtiart_init(), "mtiart_init"); }

inline int device_count() {
    int count = 0;
    check(mtiart_device_count(&count), "mtiart_device_count");
    return count;
}

inline mtiart_device_properties device_properties(int device = 0) {
    mtiart_device_properties props{};
    check(mtiart_device_get_properties(device, &props), "mtiart_device_get_properties");
    return props;
}

/* Wait for all work of the device; reports a kernel failure of any of its streams. */
inline void synchronize(int device = 0) {
    check(mtiart_device_synchronize(device), "mtiart_device_synchronize");
}

inline mtiart_memory_stats memory_stats(int device = 0) {
    mtiart_memory_stats stats{};
    check(mtiart_memory_get_stats(device, &stats), "mtiart_memory_get_stats");
    return stats;
}

inline void empty_cache(int device = 0) { check(mtiart_empty_cache(device), "mtiart_empty_cache"); }

/* ------------------------------------------------------------------------------------ */
/* Kernel arguments                                                                     */
/* ------------------------------------------------------------------------------------ */

namespace arg {

/* Plain bytes copied at launch; `v` must live until the launch call returns. */
template <class T>
mtiart_arg value(const T &v) noexcept {
    static_assert(std::is_trivially_copyable_v<T>, "kernel values are copied as bytes");
    static_assert(sizeof(T) <= 4096, "kernel values are at most 4096 bytes");
    return mtiart_arg{MTIART_ARG_VALUE, static_cast<uint32_t>(sizeof(T)), &v, 0};
}

/* Device buffers, by pointer and byte extent, or by anything with data() and bytes(). */
inline mtiart_arg in(const void *ptr, std::size_t bytes) noexcept {
    return mtiart_arg{MTIART_ARG_BUFFER_IN, 0, ptr, bytes};
}
inline mtiart_arg out(void *ptr, std::size_t bytes) noexcept {
    return mtiart_arg{MTIART_ARG_BUFFER_OUT, 0, ptr, bytes};
}
inline mtiart_arg inout(void *ptr, std::size_t bytes) noexcept {
    return mtiart_arg{MTIART_ARG_BUFFER_INOUT, 0, ptr, bytes};
}
template <class B>
auto in(const B &buffer) noexcept -> decltype(buffer.bytes(), mtiart_arg{}) {
    return in(buffer.data(), buffer.bytes());
}
template <class B>
auto out(B &buffer) noexcept -> decltype(buffer.bytes(), mtiart_arg{}) {
    return out(buffer.data(), buffer.bytes());
}
template <class B>
auto inout(B &buffer) noexcept -> decltype(buffer.bytes(), mtiart_arg{}) {
    return inout(buffer.data(), buffer.bytes());
}

}  // namespace arg

class event;

/* ------------------------------------------------------------------------------------ */
/* Streams                                                                              */
/* ------------------------------------------------------------------------------------ */

/* A stream that something else owns (the runtime for default streams, a mtiart::stream
 * otherwise): copyable, never destroys the stream. The stream must outlive it. */
class stream_ref {
public:
    explicit stream_ref(mtiart_stream handle) noexcept : handle_(handle) {}

    mtiart_stream get() const noexcept { return handle_; }

    int device() const {
        int d = 0;
        check(mtiart_stream_get_device(handle_, &d), "mtiart_stream_get_device");
        return d;
    }
    int priority() const {
        int p = 0;
        check(mtiart_stream_get_priority(handle_, &p), "mtiart_stream_get_priority");
        return p;
    }
    uint64_t id() const {
        uint64_t i = 0;
        check(mtiart_stream_get_id(handle_, &i), "mtiart_stream_get_id");
        return i;
    }

    /* true when all work enqueued so far is done. */
    bool query() const { return check(mtiart_stream_query(handle_), "mtiart_stream_query") == 0; }

    void synchronize() const { check(mtiart_stream_synchronize(handle_), "mtiart_stream_synchronize"); }

    /* Later work on this stream waits for the event's most recent record. */
    inline void wait(const event &e) const;

    /* The capture state of the stream (MTIART_CAPTURE_STATUS_NONE when not capturing). */
    mtiart_capture_status capture_status() const {
        mtiart_capture_status status = MTIART_CAPTURE_STATUS_NONE;
        check(mtiart_stream_get_capture_info(handle_, &status, nullptr, nullptr),
              "mtiart_stream_get_capture_info");
        return status;
    }

    void launch(mtiart_kernel_fn kernel, uint32_t num_blocks,
                std::initializer_list<mtiart_arg> args) const {
        check(mtiart_launch_kernel(handle_, kernel, num_blocks, args.begin(),
                                   static_cast<uint32_t>(args.size())),
              "mtiart_launch_kernel");
    }

    void launch_host_func(mtiart_host_fn fn, void *user_data) const {
        check(mtiart_launch_host_func(handle_, fn, user_data), "mtiart_launch_host_func");
    }

    /* Raw byte copies; memcpy waits for the copy, memcpy_async only enqueues it. */
    void memcpy(void *dst, const void *src, std::size_t bytes,
                mtiart_memcpy_kind kind = MTIART_MEMCPY_DEFAULT) const {
        check(mtiart_memcpy(handle_, dst, src, bytes, kind), "mtiart_memcpy");
    }
    void memcpy_async(void *dst, const void *src, std::size_t bytes,
                      mtiart_memcpy_kind kind = MTIART_MEMCPY_DEFAULT) const {
        check(mtiart_memcpy_async(handle_, dst, src, bytes, kind), "mtiart_memcpy_async");
    }
    void memset_async(void *dst, int value, std::size_t bytes) const {
        check(mtiart_memset_async(handle_, dst, value, bytes), "mtiart_memset_async");
    }

    friend bool operator==(stream_ref a, stream_ref b) noexcept { return a.handle_ == b.handle_; }
    friend bool operator!=(stream_ref a, stream_ref b) noexcept { return a.handle_ != b.handle_; }

protected:
    mtiart_stream handle_;
};

/* The default stream of a device. */
inline stream_ref default_stream(int device = 0) {
    mtiart_stream s = nullptr;
    check(mtiart_stream_get_default(device, &s), "mtiart_stream_get_default");
    return stream_ref(s);
}

/* An owned stream, destroyed with the owner (enqueued work still completes). It is a
 * stream_ref too: every stream operation is available on it. */
class stream : public stream_ref {
public:
    explicit stream(int device = 0, int priority = 0) : stream_ref(create(device, priority)) {}
    stream(const stream &) = delete;
    stream &operator=(const stream &) = delete;
    stream(stream &&other) noexcept : stream_ref(std::exchange(other.handle_, nullptr)) {}
    stream &operator=(stream &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    ~stream() { reset(); }

    explicit operator bool() const noexcept { return handle_ != nullptr; }

    void reset() noexcept {
        if (handle_) (void)mtiart_stream_destroy(std::exchange(handle_, nullptr));
    }

private:
    static mtiart_stream create(int device, int priority) {
        mtiart_stream s = nullptr;
        check(mtiart_stream_create(device, priority, &s), "mtiart_stream_create");
        return s;
    }
};

/* ------------------------------------------------------------------------------------ */
/* Events                                                                               */
/* ------------------------------------------------------------------------------------ */

class event {
public:
    explicit event(uint32_t flags = MTIART_EVENT_DEFAULT) {
        mtiart_event e = nullptr;
        check(mtiart_event_create(flags, &e), "mtiart_event_create");
        owner_ = owner_type(e);
    }

    mtiart_event get() const noexcept { return owner_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(owner_); }

    /* Completes when the work enqueued on `s` so far is done. */
    void record(stream_ref s) const { check(mtiart_event_record(get(), s.get()), "mtiart_event_record"); }

    /* true when the most recent record is complete (or none was made). */
    bool query() const { return check(mtiart_event_query(get()), "mtiart_event_query") == 0; }

    void synchronize() const { check(mtiart_event_synchronize(get()), "mtiart_event_synchronize"); }

    /* Milliseconds between two completed records of timing events. */
    static float elapsed_ms(const event &start, const event &end) {
        float ms = 0;
        check(mtiart_event_elapsed_time(start.get(), end.get(), &ms), "mtiart_event_elapsed_time");
        return ms;
    }

private:
    using owner_type = detail::owner<mtiart_event, mtiart_event_destroy>;
    owner_type owner_;
};

inline void stream_ref::wait(const event &e) const {
    check(mtiart_stream_wait_event(handle_, e.get()), "mtiart_stream_wait_event");
}

/* ------------------------------------------------------------------------------------ */
/* Device memory                                                                        */
/* ------------------------------------------------------------------------------------ */

/* `count` elements of T in device memory, allocated stream-ordered on a stream and freed
 * (stream-ordered) by the owner. Allocated on a capturing stream, it lives in the
 * capture's pool. Copies to and from the host run on the stream given (the allocating
 * stream by default); the synchronous ones wait for it. */
template <class T>
class device_buffer {
    static_assert(std::is_trivially_copyable_v<T>, "device memory holds trivially copyable types");

public:
    using value_type = T;

    device_buffer() noexcept = default;

    explicit device_buffer(std::size_t count, stream_ref s = default_stream()) : stream_(s.get()) {
        detail::require(count <= SIZE_MAX / sizeof(T), "mtiart_malloc_async", "size overflows");
        void *p = nullptr;
        check(mtiart_malloc_async(s.get(), count * sizeof(T), &p), "mtiart_malloc_async");
        memory_ = memory(p);
        count_ = count;
    }

    /* A buffer holding a copy of host data (waits for the copy). */
    template <class C, std::enable_if_t<detail::is_contiguous_of<const C, const T>::value, int> = 0>
    explicit device_buffer(const C &host, stream_ref s = default_stream())
        : device_buffer(std::size(host), s) {
        upload(host, s);
    }

    device_buffer(device_buffer &&other) noexcept
        : memory_(std::move(other.memory_)), count_(std::exchange(other.count_, 0)),
          stream_(std::exchange(other.stream_, nullptr)) {}
    device_buffer &operator=(device_buffer &&other) noexcept {
        if (this != &other) {
            memory_ = std::move(other.memory_);
            count_ = std::exchange(other.count_, 0);
            stream_ = std::exchange(other.stream_, nullptr);
        }
        return *this;
    }

    T *data() const noexcept { return static_cast<T *>(memory_.get()); }
    std::size_t size() const noexcept { return count_; }
    std::size_t bytes() const noexcept { return count_ * sizeof(T); }
    bool empty() const noexcept { return count_ == 0; }
    /* The stream the buffer was allocated on (its copies' default stream). */
    stream_ref stream() const noexcept { return stream_ref(stream_); }

    /* Host -> device: the first n elements (n <= size()). upload waits for the copy;
     * upload_async only enqueues it (the host memory must stay valid until it has run). */
    void upload(const T *src, std::size_t n) const { upload(src, n, stream()); }
    void upload(const T *src, std::size_t n, stream_ref s) const {
        copy_check(n, "upload");
        s.memcpy(data(), src, n * sizeof(T), MTIART_MEMCPY_HOST_TO_DEVICE);
    }
    void upload_async(const T *src, std::size_t n, stream_ref s) const {
        copy_check(n, "upload_async");
        s.memcpy_async(data(), src, n * sizeof(T), MTIART_MEMCPY_HOST_TO_DEVICE);
    }
    template <class C, std::enable_if_t<detail::is_contiguous_of<const C, const T>::value, int> = 0>
    void upload(const C &host) const { upload(std::data(host), std::size(host), stream()); }
    template <class C, std::enable_if_t<detail::is_contiguous_of<const C, const T>::value, int> = 0>
    void upload(const C &host, stream_ref s) const { upload(std::data(host), std::size(host), s); }

    /* Device -> host: the first n elements (n <= size()); waits for the copy. */
    void download(T *dst, std::size_t n) const { download(dst, n, stream()); }
    void download(T *dst, std::size_t n, stream_ref s) const {
        copy_check(n, "download");
        s.memcpy(dst, data(), n * sizeof(T), MTIART_MEMCPY_DEVICE_TO_HOST);
    }
    template <class C, std::enable_if_t<detail::is_contiguous_of<C, T>::value, int> = 0>
    void download(C &host) const { download(std::data(host), std::size(host), stream()); }
    template <class C, std::enable_if_t<detail::is_contiguous_of<C, T>::value, int> = 0>
    void download(C &host, stream_ref s) const { download(std::data(host), std::size(host), s); }

    std::vector<T> to_vector() const { return to_vector(stream()); }
    std::vector<T> to_vector(stream_ref s) const {
        std::vector<T> host(count_);
        if (count_) download(host.data(), count_, s);
        return host;
    }

#ifdef MTIART_HPP_HAVE_SPAN
    void upload(std::span<const T> host) const { upload(host.data(), host.size(), stream()); }
    void upload(std::span<const T> host, stream_ref s) const { upload(host.data(), host.size(), s); }
    void download(std::span<T> host) const { download(host.data(), host.size(), stream()); }
    void download(std::span<T> host, stream_ref s) const { download(host.data(), host.size(), s); }
#endif

    /* Every element = value (enqueued on s), for element sizes of 1, 2, 4 or 8 bytes. */
    void fill_async(const T &value, stream_ref s) const {
        static_assert(sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8,
                      "fill patterns are 1, 2, 4 or 8 bytes");
        if (count_)
            check(mtiart_fill_async(s.get(), data(), &value, sizeof(T), count_), "mtiart_fill_async");
    }
    void fill_async(const T &value) const { fill_async(value, stream()); }

    /* Mark the memory as used by another stream too (torch's record_stream). */
    void record_stream(stream_ref s) const {
        if (count_) check(mtiart_record_stream(data(), s.get()), "mtiart_record_stream");
    }

    /* Free now (stream-ordered); the buffer becomes empty. */
    void reset() noexcept {
        memory_.reset();
        count_ = 0;
    }

private:
    void copy_check(std::size_t n, const char *what) const {
        detail::require(n <= count_, what, "more elements than the buffer holds");
    }

    using memory = detail::owner<void *, mtiart_free>;

    memory memory_;
    std::size_t count_ = 0;
    mtiart_stream stream_ = nullptr;
};

/* ------------------------------------------------------------------------------------ */
/* Graphs                                                                               */
/* ------------------------------------------------------------------------------------ */

/* The executable form of a graph: one launch replays it on a stream. */
class executable {
public:
    executable() noexcept = default;
    explicit executable(mtiart_graph_exec handle) noexcept : owner_(handle) {}

    mtiart_graph_exec get() const noexcept { return owner_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(owner_); }

    /* Enqueue one replay on `s` (asynchronous). */
    void launch(stream_ref s) const { check(mtiart_graph_launch(get(), s.get()), "mtiart_graph_launch"); }

    std::size_t node_count() const {
        std::size_t n = 0;
        check(mtiart_graph_exec_get_node_count(get(), &n), "mtiart_graph_exec_get_node_count");
        return n;
    }

    /* Bind input or output `name` of an executable of a loaded graph (see graph::load). */
    void bind(const std::string &name, void *ptr, std::size_t bytes) const {
        check(mtiart_graph_exec_bind(get(), name.c_str(), ptr, bytes), "mtiart_graph_exec_bind");
    }
    template <class B>
    auto bind(const std::string &name, B &buffer) const -> decltype(buffer.bytes(), void()) {
        bind(name, buffer.data(), buffer.bytes());
    }

    /* The size in bytes of binding `name`. */
    std::size_t binding_size(const std::string &name) const {
        std::size_t n = 0;
        check(mtiart_graph_exec_get_binding_size(get(), name.c_str(), &n),
              "mtiart_graph_exec_get_binding_size");
        return n;
    }

    /* Save what the executable runs (see graph::save). */
    void save(const std::string &path, const std::vector<mtiart_graph_binding> &bindings = {}) const {
        check(mtiart_graph_exec_save(get(), path.c_str(), bindings.data(), bindings.size()),
              "mtiart_graph_exec_save");
    }

private:
    detail::owner<mtiart_graph_exec, mtiart_graph_exec_destroy> owner_;
};

/* A captured (or hand-built) graph of device work. */
class graph {
public:
    graph() noexcept = default;
    explicit graph(mtiart_graph handle) noexcept : owner_(handle) {}

    /* An empty graph to build by hand on `device`. */
    static graph create(int device = 0) {
        mtiart_graph g = nullptr;
        check(mtiart_graph_create(device, &g), "mtiart_graph_create");
        return graph(g);
    }

    mtiart_graph get() const noexcept { return owner_.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(owner_); }

    std::size_t node_count() const {
        std::size_t n = 0;
        check(mtiart_graph_get_node_count(get(), &n), "mtiart_graph_get_node_count");
        return n;
    }
    std::size_t edge_count() const {
        std::size_t n = 0;
        check(mtiart_graph_get_edge_count(get(), &n), "mtiart_graph_get_edge_count");
        return n;
    }
    mtiart_pool_id pool() const {
        mtiart_pool_id p{0, 0};
        check(mtiart_graph_get_pool(get(), &p), "mtiart_graph_get_pool");
        return p;
    }

    /* The Graphviz DOT description. */
    std::string to_dot() const {
        std::size_t length = 0;
        check(mtiart_graph_to_dot(get(), nullptr, 0, &length), "mtiart_graph_to_dot");
        std::string dot(length + 1, '\0');
        check(mtiart_graph_to_dot(get(), dot.data(), dot.size(), &length), "mtiart_graph_to_dot");
        dot.resize(length);
        return dot;
    }

    executable instantiate() const {
        mtiart_graph_exec e = nullptr;
        check(mtiart_graph_instantiate(get(), &e), "mtiart_graph_instantiate");
        return executable(e);
    }

    /* Save to `path` with named inputs, outputs and constants (mtiart_graph_save). */
    void save(const std::string &path, const std::vector<mtiart_graph_binding> &bindings = {}) const {
        check(mtiart_graph_save(get(), path.c_str(), bindings.data(), bindings.size()),
              "mtiart_graph_save");
    }

    /* A graph saved by any process (mtiart_graph_load; `options` may be null). */
    static graph load(const std::string &path, int device = 0,
                      const mtiart_load_options *options = nullptr) {
        mtiart_graph g = nullptr;
        check(mtiart_graph_load(path.c_str(), device, options, &g), "mtiart_graph_load");
        return graph(g);
    }

private:
    detail::owner<mtiart_graph, mtiart_graph_destroy> owner_;
};

/* Stream capture as a scope: work enqueued on the stream (by any thread) between the
 * constructor and end() is recorded, not run. Leaving the scope without end() abandons
 * the capture: the stream leaves capture mode and what was recorded is released, also
 * when an exception unwinds the scope. */
class capture {
public:
    explicit capture(stream_ref s, mtiart_capture_mode mode = MTIART_CAPTURE_MODE_GLOBAL,
                     mtiart_pool_id pool = mtiart_pool_id{0, 0})
        : stream_(s.get()) {
        check(mtiart_stream_begin_capture(stream_, mode, pool), "mtiart_stream_begin_capture");
    }
    capture(const capture &) = delete;
    capture &operator=(const capture &) = delete;
    capture(capture &&) = delete;
    capture &operator=(capture &&) = delete;

    ~capture() {
        if (active_) abandon();
    }

    /* End the capture and return its graph. Throws if the capture was invalidated or a
     * forked stream never rejoined (the capture is over either way). */
    graph end() {
        detail::require(active_, "mtiart_stream_end_capture", "the capture has already ended");
        active_ = false;
        mtiart_graph g = nullptr;
        check(mtiart_stream_end_capture(stream_, &g), "mtiart_stream_end_capture");
        return graph(g);
    }

    /* End the capture and discard what it recorded. */
    void abandon() noexcept {
        if (!active_) return;
        active_ = false;
        mtiart_graph g = nullptr;
        if (mtiart_stream_end_capture(stream_, &g) == MTIART_SUCCESS) (void)mtiart_graph_destroy(g);
    }

    bool active() const noexcept { return active_; }
    stream_ref stream() const noexcept { return stream_ref(stream_); }

private:
    mtiart_stream stream_;
    bool active_ = true;
};

/* Capture what `record(stream)` enqueues on `s` into a graph. */
template <class F>
graph capture_graph(stream_ref s, F &&record, mtiart_capture_mode mode = MTIART_CAPTURE_MODE_GLOBAL,
                    mtiart_pool_id pool = mtiart_pool_id{0, 0}) {
    capture c(s, mode, pool);
    std::forward<F>(record)(s);
    return c.end();
}

}  // namespace mtiart

#endif /* MTIART_HPP */
