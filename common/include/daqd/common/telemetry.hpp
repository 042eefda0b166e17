#pragma once
// Telemetry: the one counter type of the data path, the descriptors that name
// each series, and the snapshot every reader renders.
//
// Each module owns its counters (plain structs of `counter`, written by the
// module's own thread) and, next to them, a table of `descriptor`s. At read
// time the module's probe (`report(snapshot&)`) copies its counters into a
// `snapshot` under those descriptors; the pipeline asks every module and
// hands the one snapshot to `/metrics`, `/api/v1/status`, the exit summary
// and `--summary-json`. Nothing on the data path knows who reads.
//
// Threads: a counter has one writer (its owning thread) and any readers; a
// snapshot is a plain value built and read by one thread.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace daqd::telemetry {

// Single-writer counter: the owning thread adds without a locked
// instruction; readers on other threads see a recent value. Where more than
// one thread writes (rare: control-thread corrections), use add_shared().
struct counter {
    std::atomic<std::uint64_t> value{0};
    void add(std::uint64_t n = 1) noexcept {
        value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void sub(std::uint64_t n) noexcept {
        const std::uint64_t v = value.load(std::memory_order_relaxed);
        value.store(v - std::min(v, n), std::memory_order_relaxed);
    }
    void add_shared(std::uint64_t n = 1) noexcept { value.fetch_add(n, std::memory_order_relaxed); }
    void set(std::uint64_t n) noexcept { value.store(n, std::memory_order_relaxed); }
    [[nodiscard]] std::uint64_t get() const noexcept { return value.load(std::memory_order_relaxed); }
};

// Durations in fixed buckets (seconds), Prometheus style. observe_ns() is the
// owning thread's; buckets are not cumulative here (the snapshot makes them so).
struct histogram {
    static constexpr std::size_t bucket_count = 12;
    using bounds_type = std::array<double, bucket_count>;

    explicit constexpr histogram(const bounds_type& b) noexcept : bounds(b) {}
    void observe_ns(std::uint64_t ns) noexcept {
        const double s = static_cast<double>(ns) / 1e9;
        std::size_t b = 0;
        while (b < bounds.size() && s > bounds[b]) ++b;
        buckets[b].add();
        sum_ns.add(ns);
    }

    bounds_type bounds;
    std::array<counter, bucket_count + 1> buckets{};  // the last: above every bound
    counter sum_ns;
};

enum class kind { counter, gauge, histogram };

// One series family: what it is called, what it means, its labels.
// `exported` false: for the status page and the exit summary only, not
// /metrics (internal facts such as whether a unit has a live view).
struct descriptor {
    std::string_view name;
    std::string_view help;
    telemetry::kind kind = telemetry::kind::counter;
    std::string_view labels;  // label names, comma-separated ("link,unit")
    bool exported = true;
};

using label_set = std::vector<std::pair<std::string, std::string>>;

struct histogram_value {
    std::vector<double> bounds;              // upper bounds, +Inf not included
    std::vector<std::uint64_t> cumulative;   // bounds.size() + 1 (the last: +Inf = count)
    double sum = 0;
};

struct sample {
    label_set labels;
    double value = 0;
    histogram_value histogram;  // kind::histogram only
    bool exported = true;       // false: left out of /metrics (a unit whose slot was retired)
};

struct family {
    const descriptor* desc = nullptr;
    std::vector<sample> samples;
};

class snapshot {
public:
    // The family of `d` (added on first use, in order of first use).
    family& of(const descriptor& d);
    void add(const descriptor& d, label_set labels, double value, bool exported = true);
    // Adds `value` to the sample of `d` with exactly these labels (made if
    // none): for a family that more than one module counts into.
    void add_to(const descriptor& d, const label_set& labels, double value);
    void add_histogram(const descriptor& d, label_set labels, const histogram& h);

    // Leaves every sample with label `name`=one of `values` out of /metrics.
    void hide(std::string_view name, const std::vector<std::string>& values);

    [[nodiscard]] const std::vector<family>& families() const noexcept { return _families; }
    [[nodiscard]] const family* find(std::string_view name) const noexcept;
    // The sum of the values of `name` over the samples whose labels include
    // every pair of `match` (0 when none).
    [[nodiscard]] double sum(std::string_view name, const label_set& match = {}) const;
    [[nodiscard]] std::uint64_t count(std::string_view name, const label_set& match = {}) const {
        return static_cast<std::uint64_t>(sum(name, match));
    }
    // The sums of `name` by the value of its label `label`, over the samples
    // matching `match`: one pass, for readers that want every unit or link
    // (a lookup per unit would scan the family once per unit).
    [[nodiscard]] std::unordered_map<std::string, double> by(std::string_view name, std::string_view label,
                                                             const label_set& match = {}) const;
    // The value of label `label` of the first sample of `name` matching `match`, or "".
    [[nodiscard]] std::string label(std::string_view name, std::string_view label, const label_set& match = {}) const;
    // The distinct values of `label` over the samples of `name`, in order of appearance.
    [[nodiscard]] std::vector<std::string> label_values(std::string_view name, std::string_view label) const;

private:
    std::vector<family> _families;
};

// True when every pair of `match` is in `labels`.
bool matches(const label_set& labels, const label_set& match) noexcept;

}  // namespace daqd::telemetry
