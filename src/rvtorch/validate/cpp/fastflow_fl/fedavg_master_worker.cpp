// Master-worker FedAvg on FastFlow (shared memory, one process):
//
//              +---------> Worker 0 ---+
//   Federator -+---------> Worker 1 ---+--+
//       ^      +---------> Worker N-1 -+  |
//       +---------------------------------+   feedback (wrap_around)
//
// An ff_a2a whose first set is the federator and whose second set is the N workers; its
// wrap_around() adds one feedback channel from every worker back to the federator. Each node is
// an ff_comb of a multi-input adapter and a multi-output node, the shape the a2a needs on both
// sides of a feedback loop (all2all.hpp: the first set must be multi-output, multi-input nodes
// there must be multi-output too).
//
// Round r: the federator sends the global model to every worker (ff_send_out_to(msg, i)); each
// worker loads it, trains its local epochs on its own shard and returns its parameters on the
// feedback channel; once all N arrived the federator averages them in worker order, measures
// accuracy on the held-out set and prints one JSON line. After the last round it sends the final
// model marked `final` (workers only load and hash it) and returns EOS.
//
// The FastFlow DML paper's reference code runs the same network in a pipeline with
// pipe.wrap_around() for distributed FastFlow; FastFlow's ff_pipeline refuses wrap_around() with
// a single stage (pipeline.hpp: "too few pipeline nodes"), so in shared memory the feedback
// belongs to the a2a itself, as in the reference code's DISABLE_FF_DISTRIBUTED branch.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "fl_core.hpp"
#include "fl_fastflow.hpp"

namespace {

using flcore::json_escape;
using flcore::json_number;
using flcore::ParamMsg;
using flff::Clock;
using flff::since;

struct WorkerResult {
    std::string final_hash;
    double final_norm = 0.0;
    int rounds_trained = 0;
};

struct RoundRecord {
    double accuracy = 0.0;
    double seconds = 0.0;
};

class Federator : public ff::ff_monode_t<ParamMsg> {
public:
    Federator(const flcore::Shards& data, const flcore::RunConfig& cfg, torch::Tensor init)
        : data_(data), cfg_(cfg), n_(static_cast<int>(data.shards.size())),
          global_(std::move(init)), eval_(data.n_features, data.n_classes, cfg.train),
          inbox_(n_) {}

    ParamMsg* svc(ParamMsg* in) override {
        if (in == nullptr) {  // spontaneous start: the a2a's first set skips its first pop
            t_run_ = Clock::now();
            broadcast(false);
            return this->GO_ON;
        }
        if (in >= this->GO_OUT) return this->GO_ON;  // FastFlow control tags, not data
        std::unique_ptr<ParamMsg> msg(in);
        if (msg->round != round_ || msg->sender < 0 || msg->sender >= n_ ||
            inbox_[msg->sender]) {
            std::cerr << "federator: unexpected message (round " << msg->round << ", sender "
                      << msg->sender << ") in round " << round_ << "\n";
            protocol_error_ = true;
            return this->EOS;
        }
        inbox_[msg->sender] = std::move(msg);
        if (++received_ < n_) return this->GO_ON;
        aggregate();
        received_ = 0;
        if (++round_ == cfg_.rounds) {
            broadcast(true);
            return this->EOS;
        }
        broadcast(false);
        return this->GO_ON;
    }

    const std::vector<RoundRecord>& records() const { return records_; }
    const std::string& global_hash() const { return global_hash_; }
    bool protocol_error() const { return protocol_error_; }
    double run_seconds() const { return run_seconds_; }

private:
    void broadcast(bool final) {
        t_round_ = Clock::now();
        for (int i = 0; i < n_; ++i)
            this->ff_send_out_to(flff::model_msg(round_, -1, global_, 0, 0.0, {}, final), i);
        if (final) run_seconds_ = since(t_run_);
    }

    void aggregate() {
        std::vector<torch::Tensor> params;
        std::vector<int64_t> counts;
        std::vector<std::string> starts;
        double loss = 0.0;
        for (int i = 0; i < n_; ++i) {  // worker order, whatever the arrival order
            params.push_back(inbox_[i]->params);
            counts.push_back(inbox_[i]->samples);
            starts.push_back(inbox_[i]->start_hash);
            loss += inbox_[i]->loss / n_;
        }
        const std::string sent_hash = flcore::param_hash(global_);
        global_ = flff::fedavg(cfg_, params, counts);
        for (auto& m : inbox_) m.reset();
        global_hash_ = flcore::param_hash(global_);
        eval_.load_flat(global_);
        const double acc = eval_.accuracy(data_.test);
        const double secs = since(t_round_);
        records_.push_back({acc, secs});

        bool starts_equal = true;
        for (const auto& h : starts) starts_equal = starts_equal && h == sent_hash;
        std::cout << "{\"scheme\":\"master-worker\",\"round\":" << round_ + 1
                  << ",\"accuracy\":" << json_number(acc) << ",\"loss\":" << json_number(loss)
                  << ",\"round_seconds\":" << json_number(secs)
                  << ",\"global_hash\":" << json_escape(global_hash_)
                  << ",\"global_norm\":" << json_number(flcore::param_norm(global_))
                  << ",\"start_hashes\":[" << flff::json_strings(starts) << "]"
                  << ",\"start_equal\":" << (starts_equal ? "true" : "false") << "}"
                  << std::endl;
    }

    const flcore::Shards& data_;
    const flcore::RunConfig& cfg_;
    const int n_;
    torch::Tensor global_;
    flcore::Learner eval_;
    std::vector<std::unique_ptr<ParamMsg>> inbox_;
    int received_ = 0;
    int round_ = 0;
    bool protocol_error_ = false;
    std::string global_hash_;
    std::vector<RoundRecord> records_;
    Clock::time_point t_run_, t_round_;
    double run_seconds_ = 0.0;
};

class Worker : public ff::ff_monode_t<ParamMsg> {
public:
    Worker(int id, const flcore::Shards& data, const flcore::RunConfig& cfg, WorkerResult& out)
        : id_(id), shard_(data.shards[id]), seed_(data.seed), out_(out),
          learner_(data.n_features, data.n_classes, cfg.train) {}

    ParamMsg* svc(ParamMsg* in) override {
        if (in >= this->GO_OUT) return this->GO_ON;
        std::unique_ptr<ParamMsg> msg(in);
        learner_.load_flat(msg->params);
        const std::string start = flcore::param_hash(learner_.flat());
        if (msg->final) {
            out_.final_hash = start;
            out_.final_norm = flcore::param_norm(learner_.flat());
            return this->GO_ON;
        }
        const double loss = learner_.train(shard_, seed_, static_cast<uint64_t>(id_),
                                           static_cast<uint64_t>(msg->round));
        ++out_.rounds_trained;
        // The worker's only output channel: the feedback to the federator.
        return flff::model_msg(msg->round, id_, learner_.flat(), shard_.size(), loss, start);
    }

private:
    const int id_;
    const flcore::Split& shard_;
    const uint64_t seed_;
    WorkerResult& out_;
    flcore::Learner learner_;
};

}  // namespace

int main(int argc, char** argv) {
    const char* prog = "fedavg_master_worker";
    flcore::RunConfig cfg;
    flcore::Shards data;
    if (int rc = flff::load_run(prog, argc, argv, cfg, data)) return rc;
    const int n = static_cast<int>(data.shards.size());
    const auto init = flcore::initial_parameters(data.n_features, data.n_classes, data.seed);

    std::vector<WorkerResult> results(n);
    Federator federator(data, cfg, init);
    flff::CombSet first, second;
    first.add(&federator);
    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < n; ++i) {
        workers.push_back(std::make_unique<Worker>(i, data, cfg, results[i]));
        second.add(workers.back().get());
    }
    const auto t0 = Clock::now();
    if (int rc = flff::run_a2a(prog, first.nodes(), second.nodes())) return rc;
    const double total = since(t0);

    const auto& rec = federator.records();
    bool equal = !federator.global_hash().empty();
    std::vector<std::string> hashes;
    std::vector<double> norms, accs;
    for (const auto& r : results) {
        equal = equal && r.final_hash == federator.global_hash();
        hashes.push_back(r.final_hash);
        norms.push_back(r.final_norm);
    }
    double per_round = 0.0;
    for (const auto& r : rec) {
        accs.push_back(r.accuracy);
        per_round += r.seconds / static_cast<double>(rec.size());
    }
    const bool complete = static_cast<int>(rec.size()) == cfg.rounds &&
                          !federator.protocol_error();
    std::cout << "{\"summary\":{\"scheme\":\"master-worker\",\"workers\":" << n
              << ",\"rounds\":" << rec.size() << ",\"rounds_requested\":" << cfg.rounds
              << ",\"complete\":" << (complete ? "true" : "false")
              << ",\"final_accuracy\":" << json_number(rec.empty() ? 0.0 : rec.back().accuracy)
              << ",\"accuracies\":[" << flff::json_numbers(accs) << "]"
              << ",\"global_hash\":" << json_escape(federator.global_hash())
              << ",\"final_hashes\":[" << flff::json_strings(hashes) << "]"
              << ",\"final_norms\":[" << flff::json_numbers(norms) << "]"
              << ",\"models_equal\":" << (equal ? "true" : "false")
              << ",\"seconds_per_round\":" << json_number(per_round)
              << ",\"run_seconds\":" << json_number(federator.run_seconds())
              << ",\"total_seconds\":" << json_number(total)
              << flff::train_fields(cfg) << "}}" << std::endl;
    return complete ? 0 : 4;
}
