// Peer-to-peer FedAvg on FastFlow (shared memory, one process): no federator.
//
//   Peer 0 ---> Distributor 0 --+--> every peer except 0
//   Peer 1 ---> Distributor 1 --+--> every peer except 1      (feedback channels)
//   ...
//
// An ff_a2a: first set = N peers, second set = N distributors, wrap_around() connects every
// distributor back to every peer. Peer i trains on its shard, sends its parameters to
// distributor i (ff_send_out_to(msg, i): the peer's forward channel i), and distributor i
// broadcasts them to all other peers (ff_send_out_to(msg, j) on its feedback channel j).
// Each peer collects the N models of a round (its own plus N-1 received), averages them in
// peer order, evaluates and starts the next round from that average. Messages carry their
// round, so a fast peer's next-round model that overtakes a slow one's is kept for later.
// Summation in peer order makes every peer's average bit-identical; the program checks it.
#include <ff/ff.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "fl_core.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using flcore::json_escape;
using flcore::json_number;
using flcore::ParamMsg;

struct MultiInput : ff::ff_minode_t<ParamMsg> {
    ParamMsg* svc(ParamMsg* in) override { return in; }
};

struct PeerRound {
    double accuracy = 0.0;
    double end = 0.0;  // seconds since the common start when this peer finished the round
    double loss = 0.0;
    std::string hash;
};

struct PeerResult {
    std::vector<PeerRound> rounds;
    bool protocol_error = false;
    std::string final_hash;
    double final_norm = 0.0;
};

class Peer : public ff::ff_monode_t<ParamMsg> {
public:
    Peer(int id, int n, const flcore::Shards& data, const flcore::RunConfig& cfg,
         const torch::Tensor& init, Clock::time_point start, PeerResult& out)
        : id_(id), n_(n), data_(data), cfg_(cfg), start_(start), out_(out),
          learner_(data.n_features, data.n_classes, cfg.train) {
        learner_.load_flat(init);
    }

    ParamMsg* svc(ParamMsg* in) override {
        if (in == nullptr) {  // spontaneous start of round 0
            start_round();
            return this->GO_ON;
        }
        if (in >= this->GO_OUT) return this->GO_ON;  // FastFlow control tags, not data
        std::unique_ptr<ParamMsg> msg(in);
        if (msg->round < round_ || msg->round >= cfg_.rounds || msg->sender < 0 ||
            msg->sender >= n_ || msg->sender == id_ || slot(msg->round)[msg->sender].defined()) {
            std::cerr << "peer " << id_ << ": unexpected message (round " << msg->round
                      << ", sender " << msg->sender << ") in round " << round_ << "\n";
            out_.protocol_error = true;
            return this->EOS;
        }
        slot(msg->round)[msg->sender] = msg->params;
        samples_[msg->sender] = msg->samples;
        // Several rounds may complete at once if later-round models were parked earlier.
        while (round_ < cfg_.rounds && complete(round_)) {
            finish_round();
            if (++round_ == cfg_.rounds) return this->EOS;
            start_round();
        }
        return this->GO_ON;
    }

private:
    std::vector<torch::Tensor>& slot(int round) {
        auto it = pending_.find(round);
        if (it == pending_.end()) it = pending_.emplace(round, std::vector<torch::Tensor>(n_)).first;
        return it->second;
    }

    bool complete(int round) {
        auto it = pending_.find(round);
        if (it == pending_.end()) return false;
        for (const auto& t : it->second)
            if (!t.defined()) return false;
        return true;
    }

    void start_round() {
        const auto& shard = data_.shards[id_];
        last_loss_ = learner_.train(shard, data_.seed, static_cast<uint64_t>(id_),
                                    static_cast<uint64_t>(round_));
        auto mine = learner_.flat();
        slot(round_)[id_] = mine;
        samples_[id_] = shard.size();
        auto* m = new ParamMsg;
        m->round = round_;
        m->sender = id_;
        m->params = mine.clone();
        m->samples = shard.size();
        m->loss = last_loss_;
        this->ff_send_out_to(m, id_);  // forward channel id_ = this peer's distributor
    }

    void finish_round() {
        auto& models = slot(round_);
        std::vector<int64_t> counts(samples_.begin(), samples_.end());
        const auto avg = cfg_.weighted ? flcore::weighted_average(models, counts)
                                       : flcore::average(models);
        pending_.erase(round_);
        learner_.load_flat(avg);
        PeerRound r;
        r.accuracy = learner_.accuracy(data_.test);
        r.end = std::chrono::duration<double>(Clock::now() - start_).count();
        r.loss = last_loss_;
        r.hash = flcore::param_hash(avg);
        out_.rounds.push_back(r);
        out_.final_hash = r.hash;
        out_.final_norm = flcore::param_norm(avg);
    }

    const int id_, n_;
    const flcore::Shards& data_;
    const flcore::RunConfig& cfg_;
    const Clock::time_point start_;
    PeerResult& out_;
    flcore::Learner learner_;
    std::map<int, std::vector<torch::Tensor>> pending_;
    std::vector<int64_t> samples_ = std::vector<int64_t>(static_cast<size_t>(n_), 0);
    int round_ = 0;
    double last_loss_ = 0.0;
};

class Distributor : public ff::ff_monode_t<ParamMsg> {
public:
    Distributor(int id, int n) : id_(id), n_(n) {}

    ParamMsg* svc(ParamMsg* in) override {
        if (in >= this->GO_OUT) return this->GO_ON;
        std::unique_ptr<ParamMsg> msg(in);
        for (int j = 0; j < n_; ++j) {
            if (j == id_) continue;  // the peer keeps its own model locally
            auto* copy = new ParamMsg(*msg);
            copy->params = msg->params.clone();  // one tensor per receiving thread
            this->ff_send_out_to(copy, j);       // feedback channel j = peer j
        }
        return this->GO_ON;
    }

private:
    const int id_, n_;
};

}  // namespace

int main(int argc, char** argv) {
    flcore::RunConfig cfg;
    flcore::Shards data;
    try {
        cfg = flcore::parse_run_args(argc, argv);
        data = flcore::load_shards(cfg.shards);
    } catch (const std::exception& e) {
        std::cerr << "fedavg_p2p: " << e.what() << "\n";
        return 2;
    }
    const int n = static_cast<int>(data.shards.size());
    if (n < 2 || (cfg.workers && cfg.workers != n)) {
        std::cerr << "fedavg_p2p: " << cfg.shards << " holds " << n
                  << " shards; need one per peer (>= 2)\n";
        return 2;
    }
    torch::set_num_threads(1);
    const auto init = flcore::initial_parameters(data.n_features, data.n_classes, data.seed);

    const auto t0 = Clock::now();
    std::vector<PeerResult> results(n);
    std::vector<std::unique_ptr<Peer>> peers;
    std::vector<std::unique_ptr<Distributor>> distributors;
    std::vector<std::unique_ptr<MultiInput>> inputs;
    std::vector<std::unique_ptr<ff::ff_comb>> combs;
    std::vector<ff::ff_node*> first_set, second_set;
    for (int i = 0; i < n; ++i) {
        peers.push_back(std::make_unique<Peer>(i, n, data, cfg, init, t0, results[i]));
        inputs.push_back(std::make_unique<MultiInput>());
        combs.push_back(std::make_unique<ff::ff_comb>(inputs.back().get(), peers.back().get()));
        first_set.push_back(combs.back().get());
    }
    for (int i = 0; i < n; ++i) {
        distributors.push_back(std::make_unique<Distributor>(i, n));
        inputs.push_back(std::make_unique<MultiInput>());
        combs.push_back(
            std::make_unique<ff::ff_comb>(inputs.back().get(), distributors.back().get()));
        second_set.push_back(combs.back().get());
    }

    ff::ff_a2a a2a;
    if (a2a.add_firstset(first_set) < 0 || a2a.add_secondset(second_set) < 0 ||
        a2a.wrap_around() < 0) {
        std::cerr << "fedavg_p2p: cannot build the FastFlow network\n";
        return 3;
    }
    if (a2a.run_and_wait_end() < 0) {
        std::cerr << "fedavg_p2p: FastFlow run failed\n";
        return 3;
    }
    const double total = std::chrono::duration<double>(Clock::now() - t0).count();

    // One line per round, assembled after the run from what every peer recorded.
    bool complete = true;
    for (const auto& r : results)
        complete = complete && !r.protocol_error && static_cast<int>(r.rounds.size()) == cfg.rounds;
    const int rounds = complete ? cfg.rounds : 0;
    double prev_end = 0.0, per_round = 0.0;
    std::ostringstream accs;
    for (int r = 0; r < rounds; ++r) {
        double end = 0.0, acc_min = 1.0, acc_max = 0.0, loss = 0.0;
        bool equal = true;
        std::ostringstream hashes;
        for (int i = 0; i < n; ++i) {
            const auto& pr = results[i].rounds[r];
            end = std::max(end, pr.end);
            acc_min = std::min(acc_min, pr.accuracy);
            acc_max = std::max(acc_max, pr.accuracy);
            loss += pr.loss / n;
            equal = equal && pr.hash == results[0].rounds[r].hash;
            hashes << (i ? "," : "") << json_escape(pr.hash);
        }
        const double secs = end - prev_end;
        prev_end = end;
        per_round += secs / rounds;
        accs << (r ? "," : "") << json_number(results[0].rounds[r].accuracy);
        std::cout << "{\"scheme\":\"p2p\",\"round\":" << r + 1
                  << ",\"accuracy\":" << json_number(results[0].rounds[r].accuracy)
                  << ",\"accuracy_min\":" << json_number(acc_min)
                  << ",\"accuracy_max\":" << json_number(acc_max)
                  << ",\"loss\":" << json_number(loss)
                  << ",\"round_seconds\":" << json_number(secs)
                  << ",\"hashes\":[" << hashes.str() << "]"
                  << ",\"models_equal\":" << (equal ? "true" : "false") << "}" << std::endl;
    }
    bool equal = complete;
    std::ostringstream hashes, norms;
    for (int i = 0; i < n; ++i) {
        equal = equal && results[i].final_hash == results[0].final_hash;
        hashes << (i ? "," : "") << json_escape(results[i].final_hash);
        norms << (i ? "," : "") << json_number(results[i].final_norm);
    }
    const double final_acc = rounds ? results[0].rounds.back().accuracy : 0.0;
    std::cout << "{\"summary\":{\"scheme\":\"p2p\",\"workers\":" << n << ",\"rounds\":" << rounds
              << ",\"rounds_requested\":" << cfg.rounds
              << ",\"complete\":" << (complete ? "true" : "false")
              << ",\"final_accuracy\":" << json_number(final_acc)
              << ",\"accuracies\":[" << accs.str() << "]"
              << ",\"final_hashes\":[" << hashes.str() << "]"
              << ",\"final_norms\":[" << norms.str() << "]"
              << ",\"models_equal\":" << (equal ? "true" : "false")
              << ",\"seconds_per_round\":" << json_number(per_round)
              << ",\"run_seconds\":" << json_number(prev_end)
              << ",\"total_seconds\":" << json_number(total)
              << ",\"lr\":" << json_number(cfg.train.lr)
              << ",\"momentum\":" << json_number(cfg.train.momentum)
              << ",\"local_epochs\":" << cfg.train.local_epochs
              << ",\"batch\":" << cfg.train.batch
              << ",\"weighted\":" << (cfg.weighted ? "true" : "false")
              << ",\"torch_version\":" << json_escape(TORCH_VERSION) << "}}" << std::endl;
    return complete ? 0 : 4;
}
