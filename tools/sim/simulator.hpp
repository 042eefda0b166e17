#pragma once
// daq-sim: the simulator: builds each frame of each unit, applies the faults, paces
// the rate, sends through the sender and tallies what it sent.
#include "detector.hpp"
#include "faults.hpp"
#include "options.hpp"
#include "sender.hpp"

namespace daqd::sim {

class simulator {
public:
    simulator(const options& o, std::vector<target>& targets, sender& snd)
        : o_(o),
          targets_(targets),
          snd_(snd),
          layout_(daq1::frame_layout::for_datagram(static_cast<std::uint32_t>(o.channels * 2), o.datagram)),
          stride_(daq1::header_bytes + layout_.slice),
          wire_bytes_(layout_.frame_bytes + daq1::header_bytes * layout_.packet_count),
          segs_per_call_(std::min(gso_max_segments, gso_max_bytes / stride_)),
          faults_on_(o.loss > 0 || o.reorder > 0 || o.duplicate > 0 || o.malformed > 0),
          rng_(o.seed),
          ramp_(make_ramp(layout_.slice / 2)) {
        faults_.resize(layout_.packet_count);
        order_.resize(layout_.packet_count);
        sent_pos_.reserve(layout_.packet_count);
        const std::size_t need = frame_arena_need();
        for (auto& t : targets_) {
            t.arena_cap = std::max<std::size_t>(need, 1u << 20);
            t.arena = std::make_unique<std::byte[]>(t.arena_cap);  // zeroed
            t.queue.reserve(batch_messages + 3u * layout_.packet_count);
        }
        for (std::uint64_t i = 0; i < o.units; ++i) {
            unit_state u{};
            u.id = static_cast<std::uint16_t>(o.first_unit + i);
            u.target = i % targets_.size();
            u.seq = static_cast<std::uint32_t>(o.seq_start);
            u.first_seq = u.seq;
            units_.push_back(u);
        }
        if (o.detector) {
            std::vector<std::uint16_t> ids;
            for (const auto& u : units_) ids.push_back(u.id);
            det_ = std::make_unique<detector_model>(o, static_cast<std::uint32_t>(o.channels), ids);
            det_samples_.resize(o.channels);
        }
        const double total_mbps = o.rate_per_unit_given ? o.rate_per_unit * static_cast<double>(o.units) : o.rate;
        rate_bytes_per_ns_ = total_mbps * 1e6 / 8.0 / 1e9;
    }

    const daq1::frame_layout& layout() const { return layout_; }
    std::uint16_t gso_size() const { return static_cast<std::uint16_t>(stride_); }
    const std::vector<unit_state>& units() const { return units_; }
    std::uint64_t malformed_count(std::size_t k) const { return malformed_by_kind_[k]; }
    const detector_model* detector() const { return det_.get(); }

    // Runs the whole stream; returns elapsed seconds.
    double run() {
        const std::int64_t start = mono_ns();
        const std::int64_t deadline =
            o_.duration_given ? start + static_cast<std::int64_t>(o_.duration * 1e9) : 0;
        next_ns_ = start;
        bool final_round = false;
        for (std::uint64_t round = 0;; ++round) {
            if (o_.duration_given) {
                if (mono_ns() >= deadline) final_round = true;
            } else if (round + 1 == o_.frames) {
                final_round = true;
            }
            if (g_stop) final_round = true;
            const std::uint64_t f = o_.first_frame + round;
            for (auto& u : units_) {
                pace();
                send_frame(u, f, round == 0, final_round);
            }
            if (final_round) break;
        }
        for (auto& t : targets_) snd_.flush(t);
        return static_cast<double>(mono_ns() - start) / 1e9;
    }

private:
    std::size_t frame_arena_need() const {
        return wire_bytes_ + (faults_on_ ? malformed_max_bytes * layout_.packet_count : 0);
    }

    double u01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

    void pace() {
        if (rate_bytes_per_ns_ <= 0) return;
        // Bucket depth: 10 ms of traffic. Catches up after a late wake-up
        // (a loaded machine) instead of losing rate; bounds the burst.
        constexpr std::int64_t burst_ns = 10'000'000;
        constexpr std::int64_t min_sleep_ns = 20'000;
        const std::int64_t now = mono_ns();
        if (next_ns_ < now - burst_ns) next_ns_ = now - burst_ns;
        if (next_ns_ > now + min_sleep_ns) {
            for (auto& t : targets_) snd_.flush(t);
            sleep_until_mono(next_ns_);
        }
    }

    void account(std::uint64_t bytes) {
        if (rate_bytes_per_ns_ > 0) next_ns_ += static_cast<std::int64_t>(static_cast<double>(bytes) / rate_bytes_per_ns_);
    }

    // Writes all packets of a frame, stride_ bytes apart, at dst.
    void build_frame(std::byte* dst, const unit_state& u, std::uint64_t f, std::uint8_t flags) {
        daq1::header h;
        h.flags = flags;
        h.unit_id = u.id;
        h.packet_count = layout_.packet_count;
        h.frame_number = f;
        h.timestamp_ns = static_cast<std::uint64_t>(clock_ns(CLOCK_REALTIME));
        h.frame_bytes = layout_.frame_bytes;
        const auto base = static_cast<std::uint16_t>(daq1::test_pattern(f, u.id, 0));
        if (det_) det_->frame(static_cast<std::size_t>(&u - units_.data()), det_samples_.data());
        for (std::uint16_t i = 0; i < layout_.packet_count; ++i) {
            std::byte* p = dst + static_cast<std::size_t>(i) * stride_;
            h.packet_seq = u.seq + i;  // wraps at 2^32
            h.packet_index = i;
            h.payload_offset = layout_.offset(i);
            daq1::encode_header(h, p);
            const std::uint32_t n = layout_.bytes(i);
            if (det_)
                std::memcpy(p + daq1::header_bytes,
                            reinterpret_cast<const std::byte*>(det_samples_.data()) + h.payload_offset, n);
            else if (o_.pattern)
                std::memcpy(p + daq1::header_bytes, &ramp_[static_cast<std::uint16_t>(base + h.payload_offset / 2)], n);
            else
                std::memset(p + daq1::header_bytes, 0, n);
        }
    }

    std::uint32_t packet_len(std::uint16_t i) const { return daq1::header_bytes + layout_.bytes(i); }

    void make_room(target& t, std::size_t bytes, std::size_t msgs) {
        if (t.queue.empty()) return;
        if (t.arena_used + bytes > t.arena_cap || t.queue.size() + msgs > batch_messages) snd_.flush(t);
    }

    void send_frame(unit_state& u, std::uint64_t f, bool first, bool last) {
        const std::uint16_t n = layout_.packet_count;
        const std::uint8_t flags = static_cast<std::uint8_t>((o_.pattern ? daq1::flag_test_pattern : 0) |
                                                             (last && o_.eos ? daq1::flag_end_of_stream : 0));
        bool any_fault = false;
        if (faults_on_ && !first && !last) {
            for (std::uint16_t i = 0; i < n; ++i) {
                // Always four draws per packet, so a seed gives the same faults
                // whatever the probabilities.
                const double a = u01(), b = u01(), c = u01(), d = u01();
                packet_fault& pf = faults_[i];
                pf.lost = a < o_.loss;
                pf.reorder = b < o_.reorder;
                pf.duplicate = c < o_.duplicate;
                pf.malformed = d < o_.malformed;
                any_fault |= pf.lost || pf.reorder || pf.duplicate || pf.malformed;
            }
        }
        target& t = targets_[u.target];
        if (u.frames == 0) u.first_frame = f;
        u.last_frame = f;
        ++u.frames;
        u.packets += n;
        std::uint64_t bytes = 0;

        if (!any_fault) {
            const bool gso = snd_.mode == send_mode::gso;
            const std::size_t msgs = gso ? (n + segs_per_call_ - 1) / segs_per_call_ : n;
            make_room(t, wire_bytes_, msgs);
            std::byte* dst = t.arena.get() + t.arena_used;
            build_frame(dst, u, f, flags);
            t.arena_used += wire_bytes_;
            if (gso) {
                for (std::size_t i = 0; i < n; i += segs_per_call_) {
                    const std::size_t segs = std::min<std::size_t>(segs_per_call_, n - i);
                    const std::size_t len = (segs - 1) * stride_ + packet_len(static_cast<std::uint16_t>(i + segs - 1));
                    t.queue.push_back({dst + i * stride_, static_cast<std::uint32_t>(len), gso_size()});
                }
            } else {
                for (std::uint16_t i = 0; i < n; ++i)
                    t.queue.push_back({dst + static_cast<std::size_t>(i) * stride_, packet_len(i), 0});
            }
            bytes = wire_bytes_;
            ++u.frames_complete;
        } else {
            // Send order: the frame's packets, reordered pairwise among sent ones.
            for (std::uint16_t i = 0; i < n; ++i) order_[i] = i;
            sent_pos_.clear();
            for (std::uint16_t i = 0; i < n; ++i)
                if (!faults_[i].lost) sent_pos_.push_back(i);
            std::uint64_t reordered = 0;
            for (std::size_t j = 0; j + 1 < sent_pos_.size();) {
                if (faults_[order_[sent_pos_[j]]].reorder) {
                    std::swap(order_[sent_pos_[j]], order_[sent_pos_[j + 1]]);
                    ++reordered;
                    j += 2;
                } else {
                    ++j;
                }
            }
            std::size_t msgs = 0, mal = 0, lost = 0, dups = 0;
            for (std::uint16_t i = 0; i < n; ++i) {
                const packet_fault& pf = faults_[i];
                if (pf.lost) ++lost;
                else msgs += pf.duplicate ? 2 : 1;
                if (pf.duplicate && !pf.lost) ++dups;
                if (pf.malformed) ++mal;
            }
            msgs += mal;
            make_room(t, wire_bytes_ + mal * malformed_max_bytes, msgs);
            std::byte* dst = t.arena.get() + t.arena_used;
            build_frame(dst, u, f, flags);
            t.arena_used += wire_bytes_;
            for (std::uint16_t j = 0; j < n; ++j) {
                const std::uint16_t i = order_[j];
                const packet_fault& pf = faults_[i];
                const std::byte* p = dst + static_cast<std::size_t>(i) * stride_;
                const std::uint32_t len = packet_len(i);
                if (!pf.lost) {
                    t.queue.push_back({p, len, 0});
                    bytes += len;
                    if (pf.duplicate) {
                        t.queue.push_back({p, len, 0});
                        bytes += len;
                    }
                }
                if (pf.malformed) {
                    const std::size_t k = malformed_next_++ % n_malformed_kinds;
                    std::byte* m = t.arena.get() + t.arena_used;
                    const std::size_t mlen = make_malformed(malformed_kinds[k], p, len, m);
                    t.arena_used += mlen;
                    t.queue.push_back({m, static_cast<std::uint32_t>(mlen), 0});
                    bytes += mlen;
                    ++malformed_by_kind_[k];
                }
            }
            u.packets_lost += lost;
            u.duplicates += dups;
            u.reordered += reordered;
            u.malformed += mal;
            if (lost == 0) ++u.frames_complete;
            else if (lost == n) ++u.frames_lost;
            else ++u.frames_incomplete;
        }
        u.seq += n;
        account(bytes);
    }

    const options& o_;
    std::vector<target>& targets_;
    sender& snd_;
    daq1::frame_layout layout_;
    std::size_t stride_;
    std::size_t wire_bytes_;
    std::size_t segs_per_call_;
    bool faults_on_;
    std::mt19937_64 rng_;
    std::vector<std::uint16_t> ramp_;
    std::unique_ptr<detector_model> det_;
    std::vector<std::uint16_t> det_samples_;
    std::vector<packet_fault> faults_;
    std::vector<std::uint16_t> order_;
    std::vector<std::uint16_t> sent_pos_;
    std::vector<unit_state> units_;
    std::array<std::uint64_t, n_malformed_kinds> malformed_by_kind_{};
    std::size_t malformed_next_ = 0;
    double rate_bytes_per_ns_ = 0;
    std::int64_t next_ns_ = 0;
};

inline double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

}  // namespace daqd::sim
