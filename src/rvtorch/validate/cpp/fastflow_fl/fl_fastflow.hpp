// What both FastFlow programs share: the node shape of an a2a with feedback, sending a model,
// FedAvg over one round, start-up and the JSON summary fields. fl_core.hpp is the libtorch side
// (no FastFlow); this header is the FastFlow side both schemes are built from.
#pragma once

#include <ff/ff.hpp>

#include <chrono>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "fl_core.hpp"

namespace flff {

using Clock = std::chrono::steady_clock;
using flcore::ParamMsg;

inline double since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

// The multi-input side of every node: passes each message on to the node it is combined with.
struct MultiInput : ff::ff_minode_t<ParamMsg> {
    ParamMsg* svc(ParamMsg* in) override { return in; }
};

// Every node of the all-to-all is an ff_comb of a multi-input adapter and a multi-output node:
// FastFlow wants that shape on both sides of an a2a feedback loop (all2all.hpp). Owns the
// adapters and combs; the nodes themselves stay with the caller.
class CombSet {
public:
    ff::ff_node* add(ff::ff_node* node) {
        ins_.push_back(std::make_unique<MultiInput>());
        combs_.push_back(std::make_unique<ff::ff_comb>(ins_.back().get(), node));
        nodes_.push_back(combs_.back().get());
        return nodes_.back();
    }
    const std::vector<ff::ff_node*>& nodes() const { return nodes_; }

private:
    std::vector<std::unique_ptr<MultiInput>> ins_;
    std::vector<std::unique_ptr<ff::ff_comb>> combs_;
    std::vector<ff::ff_node*> nodes_;
};

// A model to send: the message owns a copy of the parameters, so every receiving thread has a
// tensor of its own (libtorch tensors share storage when copied).
inline ParamMsg* model_msg(int round, int sender, const torch::Tensor& params,
                           int64_t samples = 0, double loss = 0.0,
                           const std::string& start_hash = {}, bool final = false) {
    auto* m = new ParamMsg;
    m->round = round;
    m->sender = sender;
    m->final = final;
    m->params = params.clone();
    m->samples = samples;
    m->loss = loss;
    m->start_hash = start_hash;
    return m;
}

inline ParamMsg* copy_msg(const ParamMsg& msg) {
    return model_msg(msg.round, msg.sender, msg.params, msg.samples, msg.loss, msg.start_hash,
                     msg.final);
}

// FedAvg of one round, summed in participant order: equal weights, or by shard size with
// --weighted. Whoever averages the same models gets bit-identical parameters.
inline torch::Tensor fedavg(const flcore::RunConfig& cfg, const std::vector<torch::Tensor>& params,
                            const std::vector<int64_t>& samples) {
    return cfg.weighted ? flcore::weighted_average(params, samples) : flcore::average(params);
}

// Arguments and shards (exit 2 with one line on stderr when either is bad); 0 when usable.
inline int load_run(const char* prog, int argc, char** argv, flcore::RunConfig& cfg,
                    flcore::Shards& data) {
    try {
        cfg = flcore::parse_run_args(argc, argv);
        data = flcore::load_shards(cfg.shards);
    } catch (const std::exception& e) {
        std::cerr << prog << ": " << e.what() << "\n";
        return 2;
    }
    const auto n = data.shards.size();
    if (n < 2 || (cfg.workers && static_cast<size_t>(cfg.workers) != n)) {
        std::cerr << prog << ": " << cfg.shards << " holds " << n
                  << " shards; need one per participant (>= 2)\n";
        return 2;
    }
    // FastFlow's threads already use the cores: keep libtorch from adding its own pools.
    torch::set_num_threads(1);
    return 0;
}

// Build first set -> second set with feedback from every second-set node to the first set, and
// run it to the end; 0, or exit 3 with one line on stderr.
inline int run_a2a(const char* prog, const std::vector<ff::ff_node*>& first,
                   const std::vector<ff::ff_node*>& second) {
    ff::ff_a2a a2a;
    if (a2a.add_firstset(first) < 0 || a2a.add_secondset(second) < 0 || a2a.wrap_around() < 0) {
        std::cerr << prog << ": cannot build the FastFlow network\n";
        return 3;
    }
    if (a2a.run_and_wait_end() < 0) {
        std::cerr << prog << ": FastFlow run failed\n";
        return 3;
    }
    return 0;
}

// "a","b",... / 1,2,... for a JSON array body.
inline std::string json_strings(const std::vector<std::string>& v) {
    std::ostringstream out;
    for (size_t i = 0; i < v.size(); ++i) out << (i ? "," : "") << flcore::json_escape(v[i]);
    return out.str();
}
inline std::string json_numbers(const std::vector<double>& v) {
    std::ostringstream out;
    for (size_t i = 0; i < v.size(); ++i) out << (i ? "," : "") << flcore::json_number(v[i]);
    return out.str();
}

// The summary's closing fields: the hyper-parameters the run used and the torch it ran on.
inline std::string train_fields(const flcore::RunConfig& cfg) {
    std::ostringstream out;
    out << ",\"lr\":" << flcore::json_number(cfg.train.lr)
        << ",\"momentum\":" << flcore::json_number(cfg.train.momentum)
        << ",\"local_epochs\":" << cfg.train.local_epochs << ",\"batch\":" << cfg.train.batch
        << ",\"weighted\":" << (cfg.weighted ? "true" : "false")
        << ",\"torch_version\":" << flcore::json_escape(TORCH_VERSION);
    return out.str();
}

}  // namespace flff
