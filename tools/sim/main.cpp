// daq-sim: simulates DAQ1 hardware units sending frames over UDP.
//
// One thread. Each frame of each unit is built (headers + payload) into a
// per-target arena; the arena's datagrams are queued and sent with sendmmsg,
// either as UDP GSO super-datagrams (one message = up to 64 equal segments,
// cmsg UDP_SEGMENT) or as one message per datagram. Faults (loss, reorder,
// duplicate, malformed extras) are drawn per packet from a seeded
// std::mt19937_64 and the expected effect on the receiver is tallied and
// printed as JSON. With --detector the payload is detector-like data instead
// of the test pattern: per-channel pedestals and Gaussian noise, and with
// --beam a Gaussian beam spot on the channels' 2-D grid. See README.md.
//
// Files by role: options.hpp (command line), sender.hpp (targets, sendmmsg /
// GSO), faults.hpp, detector.hpp (units, detector model), simulator.hpp
// (frames, pacing, tallies), this file (main: run, print the summary).
#include "simulator.hpp"

using namespace daqd::sim;

int main(int argc, char** argv) {
    const options o = parse_options(argc, argv);

    {
        const std::uint64_t frame_bytes = o.channels * 2;
        const std::uint64_t slice = std::min<std::uint64_t>((o.datagram - daq1::header_bytes) & ~1ull, frame_bytes);
        const std::uint64_t count = (frame_bytes + slice - 1) / slice;
        if (count > 65535)
            die_usage(fmt::format("{} channels in {}-byte datagrams need {} packets per frame (max 65535)",
                                  o.channels, o.datagram, count));
    }

    std::vector<target> targets(o.targets.size());
    for (std::size_t i = 0; i < targets.size(); ++i) {
        targets[i].spec = o.targets[i];
        open_target(targets[i]);
    }

    sender snd(o.mode, o.quiet);
    simulator sim(o, targets, snd);
    for (const auto& t : targets) snd.probe_gso(t, sim.gso_size());

    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);  // finer sleeps for pacing
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;  // a second signal kills
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    if (sim.detector() != nullptr && !o.truth_path.empty()) sim.detector()->write_truth(o.truth_path);
    const auto& lay = sim.layout();
    if (!o.quiet) {
        std::string tl;
        for (const auto& t : targets) tl += (tl.empty() ? "" : ", ") + t.spec;
        fmt::print(stderr, "daq-sim: {} unit(s) x {} channels, {} packets/frame of <= {} bytes, {} -> {} ({})\n",
                   o.units, o.channels, lay.packet_count, daq1::header_bytes + lay.slice,
                   o.duration_given ? fmt::format("{} s", o.duration) : fmt::format("{} frames/unit", o.frames), tl,
                   snd.mode == send_mode::gso ? "gso" : "sendmmsg");
    }

    const double seconds = sim.run();

    std::uint64_t frames = 0, packets = 0, lost = 0, dups = 0, reord = 0, complete = 0, incomplete = 0,
                  frames_lost = 0, malformed_total = 0;
    json per_unit = json::array();
    for (const auto& u : sim.units()) {
        frames += u.frames;
        packets += u.packets;
        lost += u.packets_lost;
        dups += u.duplicates;
        reord += u.reordered;
        complete += u.frames_complete;
        incomplete += u.frames_incomplete;
        frames_lost += u.frames_lost;
        per_unit.push_back({
            {"unit", u.id},
            {"target", targets[u.target].spec},
            {"first_frame", u.first_frame},
            {"last_frame", u.last_frame},
            {"frames", u.frames},
            {"first_seq", u.first_seq},
            {"next_seq", u.seq},
            {"packets_sent", u.packets - u.packets_lost},
            {"frames_complete", u.frames_complete},
            {"frames_incomplete", u.frames_incomplete},
            {"frames_lost", u.frames_lost},
            {"packets_lost", u.packets_lost},
            {"duplicates", u.duplicates},
            {"reordered", u.reordered},
            {"malformed", u.malformed},
        });
    }
    json malformed = json::object();
    for (std::size_t k = 0; k < n_malformed_kinds; ++k) {
        malformed[std::string(daq1::name(malformed_kinds[k]))] = sim.malformed_count(k);
        malformed_total += sim.malformed_count(k);
    }
    const double secs = seconds > 0 ? seconds : 1e-9;
    json targets_json = json::array();
    for (const auto& t : targets) targets_json.push_back(t.spec);

    json j;
    j["units"] = o.units;
    j["first_unit"] = o.first_unit;
    j["channels"] = o.channels;
    j["frame_bytes"] = lay.frame_bytes;
    j["datagram_bytes"] = o.datagram;
    j["packets_per_frame"] = lay.packet_count;
    j["targets"] = targets_json;
    j["frames_sent"] = frames;
    j["packets_sent"] = packets - lost;
    j["datagrams_sent"] = snd.stats.datagrams;
    j["bytes_sent"] = snd.stats.bytes;
    j["seconds"] = std::round(seconds * 1e6) / 1e6;
    j["rate_mbps"] = round3(static_cast<double>(snd.stats.bytes) * 8.0 / secs / 1e6);
    j["packets_per_second"] = std::round(static_cast<double>(packets - lost) / secs);
    j["datagrams_per_second"] = std::round(static_cast<double>(snd.stats.datagrams) / secs);
    j["mode"] = snd.mode == send_mode::gso ? "gso" : "sendmmsg";
    j["send_retries"] = snd.stats.retries;
    j["send_errors"] = snd.stats.errors;
    j["seed"] = o.seed;
    j["injected"] = {
        {"packets_lost", lost},
        {"duplicates", dups},
        {"reordered", reord},
        {"malformed", malformed},
        {"malformed_total", malformed_total},
        {"frames_complete", complete},
        {"frames_incomplete", incomplete},
        {"frames_lost", frames_lost},
    };
    j["per_unit"] = per_unit;
    if (sim.detector() != nullptr) j["detector"] = sim.detector()->summary();

    const std::string text = j.dump(2);
    std::fputs(text.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!o.json_path.empty()) {
        std::ofstream f(o.json_path);
        f << text << '\n';
        if (!f) die(2, fmt::format("cannot write {}", o.json_path));
    }
    if (!o.quiet)
        fmt::print(stderr, "daq-sim: {} frames, {} datagrams, {:.1f} MB in {:.3f} s: {:.0f} Mbit/s, {:.0f} packets/s{}\n",
                   frames, snd.stats.datagrams, static_cast<double>(snd.stats.bytes) / 1e6, seconds,
                   static_cast<double>(snd.stats.bytes) * 8.0 / secs / 1e6,
                   static_cast<double>(packets - lost) / secs,
                   snd.stats.errors ? fmt::format(" ({} ECONNREFUSED)", snd.stats.errors) : "");
    return 0;
}

