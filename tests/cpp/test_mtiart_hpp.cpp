/*
 * mtiart.hpp: errors as exceptions with their status, move-only owners with noexcept
 * destructors, capture scopes that abandon the capture on early exit or an exception,
 * host copies from pointers and contiguous containers (and std::span under C++20), and
 * the runtime staying usable after every failure. Run under memcheck by tools/memcheck c,
 * which also proves nothing here leaks.
 */
#include <array>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "mtiart.hpp"

namespace {

int failures = 0;

#define EXPECT(cond)                                                                     \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);     \
            failures++;                                                                  \
        }                                                                                \
    } while (0)

/* `body` must throw mtiart::error with `status`; returns its message. */
template <class F>
std::string expect_error(mtiart_status status, F &&body, int line) {
    try {
        body();
    } catch (const mtiart::error &e) {
        if (e.status() != status) {
            std::fprintf(stderr, "line %d: status %s, expected %s (%s)\n", line, e.status_name(),
                         mtiart_status_name(status), e.what());
            failures++;
        }
        return e.what();
    }
    std::fprintf(stderr, "line %d: no exception, expected %s\n", line, mtiart_status_name(status));
    failures++;
    return "";
}
#define EXPECT_ERROR(status, ...) expect_error(status, [&] { __VA_ARGS__; }, __LINE__)

int32_t add_one(void *const *args, uint32_t, uint32_t) {
    float *data = *static_cast<float *const *>(args[0]);
    uint32_t count = *static_cast<const uint32_t *>(args[1]);
    for (uint32_t i = 0; i < count; i++) data[i] += 1.0f;
    return 0;
}

void launch_add_one(mtiart::stream_ref s, mtiart::device_buffer<float> &buf) {
    uint32_t count = static_cast<uint32_t>(buf.size());
    s.launch(add_one, 1, {mtiart::arg::inout(buf), mtiart::arg::value(count)});
}

uint64_t active_blocks() { return mtiart::memory_stats().active_blocks; }

/* ------------------------------------------------------------------------ type rules */

template <class T>
constexpr bool move_only_owner = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                                 std::is_nothrow_move_constructible_v<T> &&
                                 std::is_nothrow_move_assignable_v<T> &&
                                 std::is_nothrow_destructible_v<T>;
static_assert(move_only_owner<mtiart::stream>);
static_assert(move_only_owner<mtiart::event>);
static_assert(move_only_owner<mtiart::graph>);
static_assert(move_only_owner<mtiart::executable>);
static_assert(move_only_owner<mtiart::device_buffer<float>>);
static_assert(std::is_nothrow_destructible_v<mtiart::capture>);
static_assert(!std::is_copy_constructible_v<mtiart::capture> &&
              !std::is_move_constructible_v<mtiart::capture>);
static_assert(std::is_copy_constructible_v<mtiart::stream_ref>);
static_assert(std::is_base_of_v<std::runtime_error, mtiart::error>);

/* ------------------------------------------------------------------------ tests */

void test_errors_carry_status_and_message() {
    std::string what = EXPECT_ERROR(MTIART_ERROR_INVALID_DEVICE, mtiart::stream bad(1000));
    EXPECT(what.find("mtiart_stream_create") == 0);
    EXPECT(what.find("MTIART_ERROR_INVALID_DEVICE") != std::string::npos);

    EXPECT_ERROR(MTIART_ERROR_INVALID_DEVICE, mtiart::device_buffer<int> b(16, mtiart::default_stream(77)));
    EXPECT_ERROR(MTIART_ERROR_OUT_OF_MEMORY, mtiart::device_buffer<char> b(size_t(1) << 50));
    try {
        mtiart::check(MTIART_ERROR_INVALID_HANDLE, "op");
    } catch (const mtiart::error &e) {
        EXPECT(e.status() == MTIART_ERROR_INVALID_HANDLE);
        EXPECT(std::string(e.status_name()) == "MTIART_ERROR_INVALID_HANDLE");
    }
    EXPECT(mtiart::check(MTIART_NOT_READY, "query") == MTIART_NOT_READY);
    // the runtime is still usable afterwards
    mtiart::device_buffer<int> ok(4);
    ok.fill_async(7);
    EXPECT((ok.to_vector() == std::vector<int>{7, 7, 7, 7}));
}

void test_moves_transfer_ownership() {
    uint64_t before = active_blocks();
    mtiart::device_buffer<float> a(256);
    float *data = a.data();
    mtiart::device_buffer<float> b(std::move(a));
    EXPECT(a.data() == nullptr && a.size() == 0 && a.empty());
    EXPECT(b.data() == data && b.size() == 256 && b.bytes() == 256 * sizeof(float));
    mtiart::device_buffer<float> c(64);
    c = std::move(b);  // c's own block is freed, b's moves in
    EXPECT(c.data() == data && b.data() == nullptr);
    mtiart::synchronize();
    EXPECT(active_blocks() == before + 1);
    c = std::move(c);  // self-move keeps the buffer
    EXPECT(c.data() == data);
    c.reset();
    mtiart::synchronize();
    EXPECT(active_blocks() == before && c.empty());

    mtiart::stream s1;
    mtiart_stream handle = s1.get();
    mtiart::stream s2(std::move(s1));
    EXPECT(!s1 && s2 && s2.get() == handle);
    mtiart::stream s3;
    s3 = std::move(s2);  // s3's first stream is destroyed
    EXPECT(s3.get() == handle && !s2);
    s3.synchronize();
    mtiart::stream_ref view = s3;  // a non-owning view of the same stream
    EXPECT(view == mtiart::stream_ref(handle));
    s3.reset();
    EXPECT(!s3);
    EXPECT_ERROR(MTIART_ERROR_INVALID_HANDLE, view.synchronize());  // destroyed: an error, no crash

    mtiart::event e1;
    mtiart::event e2(std::move(e1));
    EXPECT(!e1 && e2);
    e2.record(mtiart::default_stream());
    e2.synchronize();
    EXPECT(e2.query());
}

void test_host_copies_from_pointers_and_containers() {
    mtiart::stream s;
    std::vector<float> v(100);
    for (size_t i = 0; i < v.size(); i++) v[i] = float(i);
    mtiart::device_buffer<float> buf(v, s);  // from a container
    EXPECT(buf.size() == 100 && buf.stream() == mtiart::stream_ref(s));
    EXPECT(buf.to_vector() == v);

    std::array<float, 10> first{};
    buf.download(first);  // into a container: its size is the count
    EXPECT(first[9] == 9.0f);
    float raw[3] = {-1, -2, -3};
    buf.upload(raw, 3);  // pointer + count
    buf.download(first.data(), 3, mtiart::default_stream());
    EXPECT(first[0] == -1.0f && first[2] == -3.0f && first[3] == 3.0f);
    buf.upload(raw);  // a C array
    buf.upload_async(raw, 3, s);
    s.synchronize();

    std::vector<float> too_big(101);
    EXPECT_ERROR(MTIART_ERROR_INVALID_VALUE, buf.upload(too_big));
    EXPECT_ERROR(MTIART_ERROR_INVALID_VALUE, buf.download(too_big));
    EXPECT(buf.to_vector()[50] == 50.0f);  // untouched by the refused copies

#ifdef MTIART_HPP_HAVE_SPAN
    std::span<const float> part(v.data() + 10, 5);
    buf.upload(part);
    std::vector<float> back(5);
    buf.download(std::span<float>(back));
    EXPECT(back[0] == 10.0f && back[4] == 14.0f);
#endif

    mtiart::device_buffer<double> empty(0);
    EXPECT(empty.empty() && empty.to_vector().empty());
}

void test_capture_end_gives_a_graph_that_replays() {
    mtiart::stream s;
    mtiart::device_buffer<float> buf(std::vector<float>(8, 0.0f), s);
    mtiart::graph g;
    {
        mtiart::capture scope(s);
        EXPECT(scope.active() && s.capture_status() == MTIART_CAPTURE_STATUS_ACTIVE);
        launch_add_one(s, buf);
        launch_add_one(s, buf);
        g = scope.end();
        EXPECT(!scope.active());
        EXPECT_ERROR(MTIART_ERROR_INVALID_VALUE, scope.end());  // ended once only
    }
    EXPECT(g && g.node_count() == 2 && s.capture_status() == MTIART_CAPTURE_STATUS_NONE);
    EXPECT(g.to_dot().find("digraph") != std::string::npos);
    mtiart::executable exec = g.instantiate();
    g = mtiart::graph();  // the executable does not need the graph
    for (int i = 0; i < 3; i++) exec.launch(s);
    EXPECT(buf.to_vector()[7] == 6.0f);
    EXPECT(exec.node_count() == 2);

    mtiart::graph g2 = mtiart::capture_graph(s, [&](mtiart::stream_ref cs) { launch_add_one(cs, buf); });
    g2.instantiate().launch(s);
    EXPECT(buf.to_vector()[0] == 7.0f);
}

void test_capture_is_abandoned_by_an_exception() {
    mtiart::stream s;
    mtiart::device_buffer<float> buf(std::vector<float>(8, 1.0f), s);
    uint64_t before = active_blocks();
    bool caught = false;
    try {
        mtiart::capture scope(s);
        launch_add_one(s, buf);
        mtiart::device_buffer<float> temporary(1024, s);  // lives in the capture's pool
        throw std::runtime_error("failure in the middle of a capture");
    } catch (const std::runtime_error &) {
        caught = true;
    }
    EXPECT(caught);
    EXPECT(s.capture_status() == MTIART_CAPTURE_STATUS_NONE);
    EXPECT(buf.to_vector()[0] == 1.0f);  // the captured kernel never ran
    launch_add_one(s, buf);              // and the stream runs work again
    EXPECT(buf.to_vector()[0] == 2.0f);
    mtiart::synchronize();
    EXPECT(active_blocks() == before);

    // a runtime error inside the scope: the synchronize is refused and invalidates the
    // capture; the guard still takes the stream out of capture mode
    std::string what = EXPECT_ERROR(MTIART_ERROR_CAPTURE_UNSUPPORTED, {
        mtiart::capture scope(s);
        s.synchronize();
    });
    EXPECT(what.find("mtiart_stream_synchronize") == 0);
    EXPECT(s.capture_status() == MTIART_CAPTURE_STATUS_NONE);

    // leaving the scope early without end() abandons as well
    for (int i = 0; i < 2; i++) {
        mtiart::capture scope(s, MTIART_CAPTURE_MODE_THREAD_LOCAL);
        launch_add_one(s, buf);
        if (i == 0) continue;
        scope.abandon();
        EXPECT(!scope.active());
    }
    EXPECT(s.capture_status() == MTIART_CAPTURE_STATUS_NONE && buf.to_vector()[0] == 2.0f);
}

void test_end_of_an_invalidated_capture_throws() {
    mtiart::stream s;
    mtiart::capture scope(s, MTIART_CAPTURE_MODE_RELAXED);
    EXPECT_ERROR(MTIART_ERROR_CAPTURE_UNSUPPORTED, s.synchronize());
    EXPECT_ERROR(MTIART_ERROR_CAPTURE_INVALIDATED, scope.end());
    EXPECT(!scope.active() && s.capture_status() == MTIART_CAPTURE_STATUS_NONE);
}

void test_events_and_streams_across_threads() {
    mtiart::stream producer, consumer;
    mtiart::event done(MTIART_EVENT_TIMING);
    mtiart::event start(MTIART_EVENT_TIMING);
    mtiart::device_buffer<float> buf(std::vector<float>(16, 0.0f), producer);
    start.record(producer);
    std::thread t([&] {
        for (int i = 0; i < 10; i++) launch_add_one(producer, buf);
        done.record(producer);
    });
    t.join();
    consumer.wait(done);
    buf.record_stream(consumer);
    std::vector<float> host(16);
    buf.download(host, consumer);
    EXPECT(host[15] == 10.0f);
    EXPECT(mtiart::event::elapsed_ms(start, done) >= 0.0f);
    EXPECT(producer.query() && consumer.id() != producer.id());
    EXPECT(producer.device() == 0 && producer.priority() == 0);
}

}  // namespace

int main() {
    mtiart::init();
    EXPECT(mtiart::device_count() >= 1);
    EXPECT(mtiart::device_properties(0).total_memory > 0);
    test_errors_carry_status_and_message();
    test_moves_transfer_ownership();
    test_host_copies_from_pointers_and_containers();
    test_capture_end_gives_a_graph_that_replays();
    test_capture_is_abandoned_by_an_exception();
    test_end_of_an_invalidated_capture_throws();
    test_events_and_streams_across_threads();
    mtiart::synchronize();
    mtiart::empty_cache();
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("mtiart.hpp: all checks passed (C++%ld)\n", __cplusplus / 100 % 100);
    return 0;
}
