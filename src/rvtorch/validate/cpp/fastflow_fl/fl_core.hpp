// The libtorch side of the federated-learning programs: data, model, local training, FedAvg.
//
// Nothing here knows about FastFlow. The FastFlow programs (fedavg_master_worker.cpp,
// fedavg_p2p.cpp) move flat parameter vectors between threads and call these functions; the
// libtorch-only test (fl_core_test.cpp) checks them without FastFlow.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flcore {

// One set of samples: features [n, n_features] float32, labels [n] int64.
struct Split {
    torch::Tensor x;
    torch::Tensor y;
    int64_t size() const { return y.size(0); }
};

// The shards file written by rvtorch.digits (format in docs/fastflow.md).
struct Shards {
    std::vector<Split> shards;
    Split test;
    int64_t n_features = 0;
    int64_t n_classes = 0;
    uint32_t seed = 0;
};

// Throws std::runtime_error with the path and what is wrong.
Shards load_shards(const std::string& path);

// The paper's MLP shape for 8x8 inputs: in -> 64 -> 32 -> classes, ReLU between.
struct MlpImpl : torch::nn::Module {
    MlpImpl(int64_t in, int64_t classes);
    torch::Tensor forward(torch::Tensor x);
    torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};
TORCH_MODULE(Mlp);

struct TrainConfig {
    double lr = 0.1;
    double momentum = 0.5;
    int64_t batch = 32;
    int local_epochs = 4;
};

// A model plus its optimizer: one per worker/peer, owned by that thread alone.
class Learner {
public:
    Learner(int64_t in, int64_t classes, const TrainConfig& cfg);
    // Local epochs on `data`; the shuffle comes from (seed, stream, round) only, so a run is
    // reproducible whatever the thread interleaving. Returns the mean loss of the last epoch.
    double train(const Split& data, uint64_t seed, uint64_t stream, uint64_t round);
    double accuracy(const Split& data);
    torch::Tensor flat() const;          // all parameters, one contiguous float32 vector
    void load_flat(const torch::Tensor& v);
    Mlp& model() { return model_; }

private:
    Mlp model_;
    TrainConfig cfg_;
    std::unique_ptr<torch::optim::SGD> opt_;
};

// The same initial weights for every participant: torch's global RNG seeded once, on one
// thread, before any worker starts.
torch::Tensor initial_parameters(int64_t in, int64_t classes, uint64_t seed);

// FedAvg with equal weights, summed in the order given: every participant that averages the
// same vectors in the same order gets bit-identical results.
torch::Tensor average(const std::vector<torch::Tensor>& params);
// FedAvg weighted by sample counts (what FedAvg's paper uses); same ordering rule.
torch::Tensor weighted_average(const std::vector<torch::Tensor>& params,
                               const std::vector<int64_t>& counts);

// FNV-1a over the raw bytes: equal parameters <=> equal hash (for the equality check).
std::string param_hash(const torch::Tensor& flat);
double param_norm(const torch::Tensor& flat);

// Command line shared by the FastFlow programs:
//   PROG --shards FILE [--workers N] [--rounds R] [--epochs E] [--lr X] [--momentum M]
//        [--batch B] [--weighted]
// --workers, when given, must equal the number of shards in FILE (one shard per worker).
struct RunConfig {
    std::string shards;
    int workers = 0;
    int rounds = 8;
    bool weighted = false;  // FedAvg weighted by shard size instead of equal weights
    TrainConfig train;
};
// Throws std::invalid_argument with a one-line reason.
RunConfig parse_run_args(int argc, char** argv);

// What the FastFlow nodes send each other: one model (flat parameters) of one round.
struct ParamMsg {
    int round = 0;
    int sender = -1;        // worker/peer index; -1 for the federator
    bool final = false;     // master-worker: the last global model, to be loaded, not trained
    torch::Tensor params;
    int64_t samples = 0;    // size of the sender's shard (weighted FedAvg)
    double loss = 0.0;      // sender's mean training loss of its last local epoch
    std::string start_hash; // hash of the model the sender started this round from
};

// Minimal JSON output helpers (numbers and strings only; no dependency needed for that).
std::string json_escape(const std::string& s);
std::string json_number(double v);

}  // namespace flcore
