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
#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fl_core.hpp"
#include "fl_fastflow.hpp"

namespace {

using flcore::json_number;
using flcore::ParamMsg;
using flff::Clock;

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
        // forward channel id_ = this peer's distributor
        this->ff_send_out_to(flff::model_msg(round_, id_, mine, shard.size(), last_loss_), id_);
    }

    void finish_round() {
        auto& models = slot(round_);
        std::vector<int64_t> counts(samples_.begin(), samples_.end());
        const auto avg = flff::fedavg(cfg_, models, counts);
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
            this->ff_send_out_to(flff::copy_msg(*msg), j);  // feedback channel j = peer j
        }
        return this->GO_ON;
    }

private:
    const int id_, n_;
};

}  // namespace

int main(int argc, char** argv) {
    const char* prog = "fedavg_p2p";
    flcore::RunConfig cfg;
    flcore::Shards data;
    if (int rc = flff::load_run(prog, argc, argv, cfg, data)) return rc;
    const int n = static_cast<int>(data.shards.size());
    const auto init = flcore::initial_parameters(data.n_features, data.n_classes, data.seed);

    const auto t0 = Clock::now();
    std::vector<PeerResult> results(n);
    std::vector<std::unique_ptr<Peer>> peers;
    std::vector<std::unique_ptr<Distributor>> distributors;
    flff::CombSet first, second;
    for (int i = 0; i < n; ++i) {
        peers.push_back(std::make_unique<Peer>(i, n, data, cfg, init, t0, results[i]));
        first.add(peers.back().get());
        distributors.push_back(std::make_unique<Distributor>(i, n));
        second.add(distributors.back().get());
    }
    if (int rc = flff::run_a2a(prog, first.nodes(), second.nodes())) return rc;
    const double total = flff::since(t0);

    // One line per round, assembled after the run from what every peer recorded.
    bool complete = true;
    for (const auto& r : results)
        complete = complete && !r.protocol_error && static_cast<int>(r.rounds.size()) == cfg.rounds;
    const int rounds = complete ? cfg.rounds : 0;
    double prev_end = 0.0, per_round = 0.0;
    std::vector<double> accs;
    for (int r = 0; r < rounds; ++r) {
        double end = 0.0, acc_min = 1.0, acc_max = 0.0, loss = 0.0;
        bool equal = true;
        std::vector<std::string> hashes;
        for (int i = 0; i < n; ++i) {
            const auto& pr = results[i].rounds[r];
            end = std::max(end, pr.end);
            acc_min = std::min(acc_min, pr.accuracy);
            acc_max = std::max(acc_max, pr.accuracy);
            loss += pr.loss / n;
            equal = equal && pr.hash == results[0].rounds[r].hash;
            hashes.push_back(pr.hash);
        }
        const double secs = end - prev_end;
        prev_end = end;
        per_round += secs / rounds;
        accs.push_back(results[0].rounds[r].accuracy);
        std::cout << "{\"scheme\":\"p2p\",\"round\":" << r + 1
                  << ",\"accuracy\":" << json_number(results[0].rounds[r].accuracy)
                  << ",\"accuracy_min\":" << json_number(acc_min)
                  << ",\"accuracy_max\":" << json_number(acc_max)
                  << ",\"loss\":" << json_number(loss)
                  << ",\"round_seconds\":" << json_number(secs)
                  << ",\"hashes\":[" << flff::json_strings(hashes) << "]"
                  << ",\"models_equal\":" << (equal ? "true" : "false") << "}" << std::endl;
    }
    bool equal = complete;
    std::vector<std::string> hashes;
    std::vector<double> norms;
    for (const auto& r : results) {
        equal = equal && r.final_hash == results[0].final_hash;
        hashes.push_back(r.final_hash);
        norms.push_back(r.final_norm);
    }
    const double final_acc = rounds ? results[0].rounds.back().accuracy : 0.0;
    std::cout << "{\"summary\":{\"scheme\":\"p2p\",\"workers\":" << n << ",\"rounds\":" << rounds
              << ",\"rounds_requested\":" << cfg.rounds
              << ",\"complete\":" << (complete ? "true" : "false")
              << ",\"final_accuracy\":" << json_number(final_acc)
              << ",\"accuracies\":[" << flff::json_numbers(accs) << "]"
              << ",\"final_hashes\":[" << flff::json_strings(hashes) << "]"
              << ",\"final_norms\":[" << flff::json_numbers(norms) << "]"
              << ",\"models_equal\":" << (equal ? "true" : "false")
              << ",\"seconds_per_round\":" << json_number(per_round)
              << ",\"run_seconds\":" << json_number(prev_end)
              << ",\"total_seconds\":" << json_number(total)
              << flff::train_fields(cfg) << "}}" << std::endl;
    return complete ? 0 : 4;
}
