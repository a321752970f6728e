// libtorch-only check of the federated-learning core (no FastFlow involved):
//   fl_core_test SHARDS_FILE [rounds [local_epochs [lr [momentum]]]]
// Prints one JSON object per check and a final {"summary": ...} line; exit 0 only if all pass.
//
// What must hold: local training lowers the loss and raises the accuracy on the shard;
// averaging is exact (the average of two models, loaded into a third, reads back bit-for-bit;
// repeating it gives the same hash); a sequential FedAvg over every shard reaches the accuracy
// the FastFlow programs are held to.
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "fl_core.hpp"

using flcore::json_escape;
using flcore::json_number;

namespace {

int failures = 0;
int checks = 0;

void check(const std::string& name, bool ok, double value, double bound,
           const std::string& detail = "") {
    ++checks;
    if (!ok) ++failures;
    std::cout << "{\"check\":" << json_escape(name) << ",\"ok\":" << (ok ? "true" : "false")
              << ",\"value\":" << json_number(value) << ",\"bound\":" << json_number(bound);
    if (!detail.empty()) std::cout << ",\"detail\":" << json_escape(detail);
    std::cout << "}" << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: fl_core_test SHARDS_FILE [rounds [local_epochs [lr [momentum]]]]\n";
        return 2;
    }
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 8;
    torch::set_num_threads(1);
    const auto t0 = std::chrono::steady_clock::now();

    flcore::Shards data;
    try {
        data = flcore::load_shards(argv[1]);
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 2;
    }
    if (data.shards.size() < 2) {
        std::cerr << argv[1] << ": need at least 2 shards\n";
        return 2;
    }
    const uint64_t seed = data.seed;
    flcore::TrainConfig cfg;
    if (argc > 3) cfg.local_epochs = std::atoi(argv[3]);
    if (argc > 4) cfg.lr = std::atof(argv[4]);
    if (argc > 5) cfg.momentum = std::atof(argv[5]);
    const auto init = flcore::initial_parameters(data.n_features, data.n_classes, seed);

    // 1. Local training on one shard.
    flcore::Learner a(data.n_features, data.n_classes, cfg);
    a.load_flat(init);
    const double acc_before = a.accuracy(data.shards[0]);
    double first_loss = a.train(data.shards[0], seed, 0, 0);
    double last_loss = first_loss;
    for (int r = 1; r < 4; ++r) last_loss = a.train(data.shards[0], seed, 0, r);
    const double acc_after = a.accuracy(data.shards[0]);
    check("local_loss_falls", last_loss < 0.7 * first_loss, last_loss, 0.7 * first_loss);
    check("local_accuracy_rises", acc_after > acc_before + 0.3, acc_after, acc_before + 0.3);

    // 2. The same shuffle seed gives the same model (threads never share an RNG).
    flcore::Learner a2(data.n_features, data.n_classes, cfg);
    a2.load_flat(init);
    for (int r = 0; r < 4; ++r) a2.train(data.shards[0], seed, 0, r);
    check("training_reproducible", torch::equal(a.flat(), a2.flat()), 0, 0,
          flcore::param_hash(a.flat()) + " vs " + flcore::param_hash(a2.flat()));

    // 3. Averaging is exact and order-stable.
    flcore::Learner b(data.n_features, data.n_classes, cfg);
    b.load_flat(init);
    b.train(data.shards[1], seed, 1, 0);
    const auto pa = a.flat(), pb = b.flat();
    const auto avg = flcore::average({pa, pb});
    const auto expect = (pa + pb) / 2;
    check("average_exact", torch::equal(avg, expect), (avg - expect).abs().max().item<double>(), 0);
    flcore::Learner c(data.n_features, data.n_classes, cfg);
    c.load_flat(avg);
    check("load_flat_roundtrip", torch::equal(c.flat(), avg), 0, 0);
    check("average_repeatable",
          flcore::param_hash(flcore::average({pa, pb})) == flcore::param_hash(avg), 0, 0);
    const auto wavg = flcore::weighted_average({pa, pb}, {5, 5});
    check("weighted_equal_counts", torch::allclose(wavg, avg, 1e-6, 1e-7),
          (wavg - avg).abs().max().item<double>(), 1e-6);

    // 4. Sequential FedAvg over all shards (the arithmetic the FastFlow programs distribute).
    const size_t n = data.shards.size();
    std::vector<flcore::Learner> learners;
    learners.reserve(n);
    for (size_t i = 0; i < n; ++i) learners.emplace_back(data.n_features, data.n_classes, cfg);
    flcore::Learner global(data.n_features, data.n_classes, cfg);
    auto global_params = init.clone();
    global.load_flat(global_params);
    const double acc0 = global.accuracy(data.test);
    double acc = acc0, best_prev = acc0;
    bool rose = true;
    for (int r = 0; r < rounds; ++r) {
        std::vector<torch::Tensor> trained;
        for (size_t i = 0; i < n; ++i) {
            learners[i].load_flat(global_params);
            learners[i].train(data.shards[i], seed, i, r);
            trained.push_back(learners[i].flat());
        }
        global_params = flcore::average(trained);
        global.load_flat(global_params);
        acc = global.accuracy(data.test);
        std::cout << "{\"round\":" << r + 1 << ",\"accuracy\":" << json_number(acc)
                  << ",\"hash\":" << json_escape(flcore::param_hash(global_params)) << "}"
                  << std::endl;
        if (r == rounds / 2 - 1) {
            rose = acc > acc0 + 0.3;
            best_prev = acc;
        }
    }
    check("fedavg_accuracy_rises", rose && acc >= best_prev - 0.02, acc, best_prev);
    check("fedavg_final_accuracy", acc >= 0.9, acc, 0.9);

    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "{\"summary\":{\"checks\":" << checks << ",\"failures\":" << failures
              << ",\"shards\":" << n << ",\"rounds\":" << rounds
              << ",\"torch_version\":" << json_escape(TORCH_VERSION)
              << ",\"seconds\":" << json_number(secs) << "}}" << std::endl;
    return failures == 0 ? 0 : 1;
}
