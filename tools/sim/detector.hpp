#pragma once
// daq-sim: the units (per-unit state, the test-pattern ramp) and the detector model
// (pedestals, noise, beam) of --detector.
#include "options.hpp"

namespace daqd::sim {

// ---------------------------------------------------------------- units --

struct unit_state {
    std::uint16_t id;
    std::size_t target;
    std::uint32_t seq;
    std::uint32_t first_seq;
    std::uint64_t first_frame = 0, last_frame = 0, frames = 0;
    std::uint64_t packets = 0;  // packets of its frames (sent or lost)
    std::uint64_t frames_complete = 0, frames_incomplete = 0, frames_lost = 0;
    std::uint64_t packets_lost = 0, duplicates = 0, reordered = 0, malformed = 0;
};

// The test pattern is a ramp mod 65536 along the channels, so every packet's
// payload is a slice of one table: ramp[k] = k mod 65536 (stored little-endian,
// the host order), long enough for any start plus one packet's samples.
inline std::vector<std::uint16_t> make_ramp(std::uint32_t slice_samples) {
    std::vector<std::uint16_t> r(65536u + slice_samples);
    for (std::size_t k = 0; k < r.size(); ++k) r[k] = static_cast<std::uint16_t>(k);
    return r;
}

// ---------------------------------------------------------------- detector --

// Detector-like frames (--detector). Per unit and channel a pedestal
// (Gaussian around --pedestal-mean, spread --pedestal-spread) and a noise
// sigma (uniform in --noise-min..--noise-max), drawn once from
// --detector-seed and the unit id, so two runs with the same seed see the
// same detector. Per frame: pedestal + sigma x N(0,1) (normals from a table
// of 65536 standard normal values, indexed by a 64-bit generator seeded from
// --seed), plus with --beam Poisson hits with exponential amplitudes whose
// mean count falls off as a Gaussian around the beam spot on the channel
// grid; rounded and clamped to 0..65535.
class detector_model {
public:
    detector_model(const options& o, std::uint32_t channels, const std::vector<std::uint16_t>& unit_ids)
        : o_(o), channels_(channels), rng_(o.seed * 0x9E3779B97F4A7C15ull + 0xD1E7EC7ull), values_(channels) {
        grid_w_ = static_cast<std::uint32_t>(std::ceil(std::sqrt(static_cast<double>(channels))));
        grid_h_ = (channels + grid_w_ - 1) / grid_w_;
        beam_x_ = o.beam_x >= 0 ? o.beam_x : (grid_w_ - 1) / 2.0;
        beam_y_ = o.beam_y >= 0 ? o.beam_y : (grid_h_ - 1) / 2.0;
        for (std::uint16_t id : unit_ids) {
            std::mt19937_64 r(o.detector_seed * 0x2545F4914F6CDD1Dull + id + 1);
            std::normal_distribution<double> ped(o.pedestal_mean, o.pedestal_spread);
            std::uniform_real_distribution<double> sig(o.noise_min, o.noise_max);
            unit_truth t;
            t.id = id;
            t.pedestal.resize(channels);
            t.noise.resize(channels);
            for (std::uint32_t c = 0; c < channels; ++c) {
                t.pedestal[c] = std::clamp(ped(r), 0.0, 65535.0);
                t.noise[c] = sig(r);
            }
            units_.push_back(std::move(t));
        }
        // A table of standard normal values, normalised to mean 0 and sd 1.
        std::mt19937_64 tr(0x5eed5eedull);
        std::normal_distribution<double> z(0.0, 1.0);
        std::vector<double> table(65536);
        double sum = 0, sum2 = 0;
        for (auto& v : table) {
            v = z(tr);
            sum += v;
        }
        const double mean = sum / table.size();
        for (auto& v : table) sum2 += (v - mean) * (v - mean);
        const double sd = std::sqrt(sum2 / table.size());
        normals_.resize(table.size());
        for (std::size_t i = 0; i < table.size(); ++i) normals_[i] = (table[i] - mean) / sd;
        if (o.beam) {
            for (std::uint32_t c = 0; c < channels; ++c) {
                const double dx = static_cast<double>(c % grid_w_) - beam_x_, dy = static_cast<double>(c / grid_w_) - beam_y_;
                const double lambda = o.beam_intensity * std::exp(-(dx * dx + dy * dy) / (2 * o.beam_sigma * o.beam_sigma));
                if (lambda < 1e-7) continue;
                beam_channels_.push_back(c);
                beam_exp_neg_lambda_.push_back(std::exp(-lambda));
            }
        }
    }

    // Fills one frame of unit number k (position in --units order). With
    // --detector-cycle N the first N frames of each unit are made and kept,
    // later ones are copies of them in turn.
    void frame(std::size_t k, std::uint16_t* out) {
        if (o_.detector_cycle > 0) {
            if (cycle_.size() <= k) cycle_.resize(units_.size());
            auto& c = cycle_[k];
            if (c.frames.size() < std::size_t{o_.detector_cycle} * channels_) {
                make(k, out);
                c.frames.insert(c.frames.end(), out, out + channels_);
                return;
            }
            std::memcpy(out, c.frames.data() + std::size_t{c.next} * channels_, std::size_t{channels_} * 2u);
            c.next = (c.next + 1) % o_.detector_cycle;
            return;
        }
        make(k, out);
    }

private:
    void make(std::size_t k, std::uint16_t* out) {
        const unit_truth& t = units_[k];
        std::uint32_t c = 0;
        while (c < channels_) {
            const std::uint64_t r = rng_();
            for (int j = 0; j < 4 && c < channels_; ++j, ++c)
                values_[c] = t.pedestal[c] + t.noise[c] * normals_[(r >> (16 * j)) & 0xffffu];
        }
        for (std::size_t i = 0; i < beam_channels_.size(); ++i) {
            // Poisson count (Knuth), exponential amplitude per hit.
            const double limit = beam_exp_neg_lambda_[i];
            double p = u01();
            while (p > limit) {
                values_[beam_channels_[i]] += -o_.beam_amplitude * std::log(1.0 - u01());
                ++hits_;
                p *= u01();
            }
        }
        for (std::uint32_t i = 0; i < channels_; ++i)
            out[i] = static_cast<std::uint16_t>(std::clamp(std::lround(values_[i]), 0l, 65535l));
    }

public:
    json summary() const {
        json d;
        d["detector_seed"] = o_.detector_seed;
        d["noise_seed"] = o_.seed;
        d["grid"] = {grid_w_, grid_h_};
        d["pedestal_mean"] = o_.pedestal_mean;
        d["pedestal_spread"] = o_.pedestal_spread;
        d["noise_min"] = o_.noise_min;
        d["noise_max"] = o_.noise_max;
        d["beam"] = o_.beam ? json{{"x", beam_x_},
                                   {"y", beam_y_},
                                   {"sigma", o_.beam_sigma},
                                   {"intensity", o_.beam_intensity},
                                   {"amplitude", o_.beam_amplitude},
                                   {"hits", hits_}}
                            : json(nullptr);
        d["truth_file"] = o_.truth_path.empty() ? json(nullptr) : json(o_.truth_path);
        return d;
    }

    // The true pedestal and noise of every channel of every unit, as JSON.
    void write_truth(const std::string& path) const {
        json t;
        t["channels"] = channels_;
        t["grid"] = {grid_w_, grid_h_};
        t["detector"] = summary();
        json us = json::array();
        for (const auto& u : units_) us.push_back({{"unit", u.id}, {"pedestal", u.pedestal}, {"noise", u.noise}});
        t["units"] = us;
        std::ofstream f(path);
        f << t.dump() << '\n';
        if (!f) die(2, fmt::format("cannot write {}", path));
    }

private:
    struct unit_truth {
        std::uint16_t id = 0;
        std::vector<double> pedestal, noise;
    };
    double u01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

    const options& o_;
    std::uint32_t channels_;
    std::uint32_t grid_w_ = 1, grid_h_ = 1;
    double beam_x_ = 0, beam_y_ = 0;
    std::mt19937_64 rng_;
    std::vector<unit_truth> units_;
    std::vector<double> normals_;
    struct cycle_state {
        std::vector<std::uint16_t> frames;
        std::uint32_t next = 0;
    };
    std::vector<cycle_state> cycle_;  // per unit, with --detector-cycle
    std::vector<double> values_;
    std::vector<std::uint32_t> beam_channels_;
    std::vector<double> beam_exp_neg_lambda_;
    std::uint64_t hits_ = 0;
};

}  // namespace daqd::sim
