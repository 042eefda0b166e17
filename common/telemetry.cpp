// The telemetry snapshot (telemetry.hpp).
#include "daqd/common/telemetry.hpp"

namespace daqd::telemetry {

bool matches(const label_set& labels, const label_set& match) noexcept {
    return std::all_of(match.begin(), match.end(), [&](const auto& m) {
        return std::find(labels.begin(), labels.end(), m) != labels.end();
    });
}

family& snapshot::of(const descriptor& d) {
    for (auto& f : _families)
        if (f.desc->name == d.name) return f;
    _families.push_back(family{&d, {}});
    return _families.back();
}

void snapshot::add(const descriptor& d, label_set labels, double value, bool exported) {
    sample s;
    s.labels = std::move(labels);
    s.value = value;
    s.exported = exported;
    of(d).samples.push_back(std::move(s));
}

void snapshot::add_to(const descriptor& d, const label_set& labels, double value) {
    auto& f = of(d);
    for (auto& s : f.samples)
        if (s.labels == labels) {
            s.value += value;
            return;
        }
    add(d, labels, value);
}

void snapshot::add_histogram(const descriptor& d, label_set labels, const histogram& h) {
    sample s;
    s.labels = std::move(labels);
    s.histogram.bounds.assign(h.bounds.begin(), h.bounds.end());
    std::uint64_t cumulative = 0;
    for (const auto& b : h.buckets) {
        cumulative += b.get();
        s.histogram.cumulative.push_back(cumulative);
    }
    s.histogram.sum = static_cast<double>(h.sum_ns.get()) / 1e9;
    s.value = static_cast<double>(cumulative);  // the count, consistent with the buckets read
    of(d).samples.push_back(std::move(s));
}

void snapshot::hide(std::string_view name, const std::vector<std::string>& values) {
    if (values.empty()) return;
    for (auto& f : _families)
        for (auto& s : f.samples)
            for (const auto& [k, v] : s.labels)
                if (k == name && std::find(values.begin(), values.end(), v) != values.end()) s.exported = false;
}

const family* snapshot::find(std::string_view name) const noexcept {
    for (const auto& f : _families)
        if (f.desc->name == name) return &f;
    return nullptr;
}

double snapshot::sum(std::string_view name, const label_set& match) const {
    double total = 0;
    if (const auto* f = find(name))
        for (const auto& s : f->samples)
            if (matches(s.labels, match)) total += s.value;
    return total;
}

std::unordered_map<std::string, double> snapshot::by(std::string_view name, std::string_view label,
                                                      const label_set& match) const {
    std::unordered_map<std::string, double> out;
    if (const auto* f = find(name))
        for (const auto& s : f->samples) {
            if (!matches(s.labels, match)) continue;
            for (const auto& [k, v] : s.labels)
                if (k == label) out[v] += s.value;
        }
    return out;
}

std::string snapshot::label(std::string_view name, std::string_view label, const label_set& match) const {
    if (const auto* f = find(name))
        for (const auto& s : f->samples)
            if (matches(s.labels, match))
                for (const auto& [k, v] : s.labels)
                    if (k == label) return v;
    return {};
}

std::vector<std::string> snapshot::label_values(std::string_view name, std::string_view label) const {
    std::vector<std::string> out;
    if (const auto* f = find(name))
        for (const auto& s : f->samples)
            for (const auto& [k, v] : s.labels)
                if (k == label && std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    return out;
}

}  // namespace daqd::telemetry

// ---- run_counts (common/runs.hpp) ----

#include "daqd/common/runs.hpp"

namespace daqd::common {

run_counts run_counts::of(const telemetry::snapshot& t) {
    run_counts c;
    c.packets_received = t.count("daq_datagrams_received_total");
    c.bytes_received = t.count("daq_bytes_received_total");
    c.packets_lost = t.count("daq_packets_lost_total");
    c.duplicates = t.count("daq_packets_duplicate_total");
    c.late = t.count("daq_packets_late_total");
    c.invalid = t.count("daq_packets_invalid_total");
    c.kernel_drops = t.count("daq_socket_drops_total");
    c.ring_dropped = t.count("daq_ring_dropped_total");
    c.frames_complete = t.count("daq_frames_total", {{"state", "complete"}});
    c.frames_incomplete = t.count("daq_frames_total", {{"state", "incomplete"}});
    c.frames_lost = t.count("daq_frames_total", {{"state", "lost"}});
    c.frames_overflow = t.count("daq_frames_total", {{"state", "overflow"}});
    c.frames_written = t.count("daq_storage_frames_written");
    c.bytes_written = t.count("daq_storage_bytes_written_total");
    c.frames_failed = t.count("daq_frames_unwritten_total");
    return c;
}

run_counts run_counts::since(const run_counts& b) const {
    auto d = [](std::uint64_t now, std::uint64_t before) { return now > before ? now - before : 0; };
    run_counts r;
    r.packets_received = d(packets_received, b.packets_received);
    r.bytes_received = d(bytes_received, b.bytes_received);
    r.packets_lost = d(packets_lost, b.packets_lost);
    r.duplicates = d(duplicates, b.duplicates);
    r.late = d(late, b.late);
    r.invalid = d(invalid, b.invalid);
    r.kernel_drops = d(kernel_drops, b.kernel_drops);
    r.ring_dropped = d(ring_dropped, b.ring_dropped);
    r.frames_complete = d(frames_complete, b.frames_complete);
    r.frames_incomplete = d(frames_incomplete, b.frames_incomplete);
    r.frames_lost = d(frames_lost, b.frames_lost);
    r.frames_overflow = d(frames_overflow, b.frames_overflow);
    r.frames_written = d(frames_written, b.frames_written);
    r.bytes_written = d(bytes_written, b.bytes_written);
    r.frames_failed = d(frames_failed, b.frames_failed);
    return r;
}

std::vector<std::pair<const char*, std::uint64_t>> run_counts::fields() const {
    return {{"packets_received", packets_received}, {"bytes_received", bytes_received},
            {"packets_lost", packets_lost},         {"duplicates", duplicates},
            {"late", late},                         {"invalid", invalid},
            {"kernel_drops", kernel_drops},         {"ring_dropped", ring_dropped},
            {"frames_complete", frames_complete},   {"frames_incomplete", frames_incomplete},
            {"frames_lost", frames_lost},           {"frames_overflow", frames_overflow},
            {"frames_written", frames_written},     {"bytes_written", bytes_written},
            {"frames_failed", frames_failed}};
}

}  // namespace daqd::common
