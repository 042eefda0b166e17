// compressor: the writer's pool of compression threads (compressor.hpp).
#include "daqd/storage/compressor.hpp"

#include "daqd/codec/bslz4.hpp"
#include "daqd/common/worker.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <sched.h>

namespace daqd::storage {

unsigned default_compress_threads() noexcept {
    unsigned cpus = std::thread::hardware_concurrency();
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) cpus = static_cast<unsigned>(CPU_COUNT(&set));
    return std::clamp(cpus / 2, 1u, 8u);
}

compressor::compressor(unsigned threads, compressor_counters* counters, common::wake_event* ready)
    : _counters(counters), _ready(ready) {
    _threads.reserve(threads);
    for (unsigned k = 0; k < threads; ++k) _threads.emplace_back([this, k] { loop(k + 1); });
}

compressor::~compressor() {
    {
        std::lock_guard lock(_mutex);
        _stopping = true;
    }
    _work.notify_all();
    for (auto& t : _threads) t.join();
}

void compressor::run(chunk_job& job, compressor_counters* counters) noexcept {
    const std::uint64_t t0 = common::monotonic_ns();
    std::uint64_t in = 0, out = 0;
    thread_local codec::bslz4_scratch scratch;
    try {
        for (std::size_t i = 0; i < job.count; ++i) {
            auto& p = job.parts[i];
            const void* src = p.in != nullptr ? p.in : p.owned.data();
            const std::size_t bound = codec::bslz4_bound(p.bytes, p.elem_size);
            if (p.out.size() < bound) p.out.resize(bound);
            p.out_bytes = codec::bslz4_compress(src, p.bytes, p.elem_size, p.out.data(), scratch);
            in += p.bytes;
            out += p.out_bytes;
        }
    } catch (const std::exception& e) {
        job.error = fmt::format("compressing a chunk failed: {}", e.what());
        if (counters != nullptr) counters->failures.add_shared();
    }
    if (counters != nullptr) {
        counters->bytes_in.add_shared(in);
        counters->bytes_out.add_shared(out);
        counters->chunks.add_shared(job.count);
        counters->busy_ns.add_shared(common::monotonic_ns() - t0);
    }
}

void compressor::submit(std::shared_ptr<chunk_job> job) {
    job->submitted_ns = common::monotonic_ns();
    if (_threads.empty()) {
        run(*job, _counters);
        job->done.store(true, std::memory_order_release);
        return;
    }
    {
        std::lock_guard lock(_mutex);
        _queue.push_back(std::move(job));
    }
    _work.notify_one();
}

void compressor::wait(const chunk_job& job) {
    if (job.done.load(std::memory_order_acquire)) return;
    const std::uint64_t t0 = common::monotonic_ns();
    {
        std::unique_lock lock(_mutex);
        _done.wait(lock, [&] { return job.done.load(std::memory_order_acquire); });
    }
    if (_counters != nullptr) _counters->wait_ns.add_shared(common::monotonic_ns() - t0);
}

void compressor::loop(unsigned index) {
    common::name_and_pin_this_thread(fmt::format("daqd-compress-{}", index), {});
    for (;;) {
        std::shared_ptr<chunk_job> job;
        {
            std::unique_lock lock(_mutex);
            _work.wait(lock, [&] { return _stopping || !_queue.empty(); });
            if (_queue.empty()) return;  // stopping, nothing left
            job = std::move(_queue.front());
            _queue.pop_front();
        }
        run(*job, _counters);
        {
            std::lock_guard lock(_mutex);
            job->done.store(true, std::memory_order_release);
        }
        _done.notify_all();
        if (_ready != nullptr) _ready->notify();
    }
}

}  // namespace daqd::storage
