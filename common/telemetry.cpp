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
