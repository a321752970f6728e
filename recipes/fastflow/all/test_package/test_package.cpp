// Runs the three building blocks the federated-learning program uses and checks every result:
// a 3-stage pipeline, a farm (emitter, 3 workers, collector) and an all-to-all whose second set
// feeds back to the first (one "federator", 3 "workers", several rounds), as in FedAvg.
#include <ff/ff.hpp>
#include <ff/all2all.hpp>
#include <ff/farm.hpp>
#include <ff/pipeline.hpp>

#include <cstdio>
#include <vector>

using namespace ff;

// ---------------------------------------------------------------- pipeline: sum of squares
struct Numbers : ff_node_t<long> {
    explicit Numbers(long n) : n(n) {}
    long* svc(long*) override {
        for (long i = 1; i <= n; ++i) ff_send_out(new long(i));
        return EOS;
    }
    long n;
};
struct Square : ff_node_t<long> {
    long* svc(long* x) override { *x = *x * *x; return x; }
};
struct Sum : ff_node_t<long> {
    long* svc(long* x) override { total += *x; ++count; delete x; return GO_ON; }
    long total = 0, count = 0;
};

static int check_pipeline() {
    const long n = 1000;
    Numbers numbers(n);
    Square square;
    Sum sum;
    ff_pipeline pipe;
    pipe.add_stage(&numbers);
    pipe.add_stage(&square);
    pipe.add_stage(&sum);
    if (pipe.run_and_wait_end() < 0) { std::fprintf(stderr, "pipeline: run failed\n"); return 1; }
    const long expected = n * (n + 1) * (2 * n + 1) / 6;
    std::printf("pipeline: %ld items, sum of squares %ld (expected %ld)\n", sum.count, sum.total, expected);
    return (sum.total == expected && sum.count == n) ? 0 : 1;
}

// ---------------------------------------------------------------- farm: 3 workers
struct Emitter : ff_node_t<long> {
    long* svc(long*) override {
        for (long i = 0; i < 500; ++i) ff_send_out(new long(i));
        return EOS;
    }
};
struct Triple : ff_node_t<long> {
    long* svc(long* x) override { *x = 3 * *x + 1; ++done; return x; }
    long done = 0;
};
struct Collector : ff_node_t<long> {
    long* svc(long* x) override { total += *x; ++count; delete x; return GO_ON; }
    long total = 0, count = 0;
};

static int check_farm() {
    Emitter emitter;
    Collector collector;
    std::vector<ff_node*> workers;
    std::vector<Triple*> triples;
    for (int i = 0; i < 3; ++i) { triples.push_back(new Triple); workers.push_back(triples.back()); }
    ff_farm farm;
    farm.add_emitter(&emitter);
    farm.add_workers(workers);
    farm.add_collector(&collector);
    if (farm.run_and_wait_end() < 0) { std::fprintf(stderr, "farm: run failed\n"); return 1; }
    long expected = 0, done = 0;
    for (long i = 0; i < 500; ++i) expected += 3 * i + 1;
    for (auto* t : triples) { done += t->done; delete t; }
    std::printf("farm: %ld results by 3 workers, total %ld (expected %ld)\n", collector.count,
                collector.total, expected);
    return (collector.total == expected && collector.count == 500 && done == 500) ? 0 : 1;
}

// ---------------------------------------------------------------- all-to-all with feedback
constexpr int kWorkers = 3;
constexpr int kRounds = 5;

struct Msg {
    int round;
    int dest;
    long value;
};

// First set, first half: owns the "model" (value), starts each round and aggregates the replies.
struct Federator : ff_minode_t<Msg> {
    Msg* svc(Msg* in) override {
        if (in == nullptr) { broadcast(); return GO_ON; }
        acc += in->value;
        delete in;
        if (++replies < kWorkers) return GO_ON;
        value = acc % 1000003;  // the "aggregation" of this round
        acc = 0;
        replies = 0;
        if (++round == kRounds) { ff_send_out(EOS); return GO_ON; }
        broadcast();
        return GO_ON;
    }
    void broadcast() {
        for (int w = 0; w < kWorkers; ++w) ff_send_out(new Msg{round, w, value});
    }
    long value = 1, acc = 0;
    int round = 0, replies = 0;
};
// First set, second half: sends each message to the worker it names.
struct Router : ff_monode_t<Msg> {
    Msg* svc(Msg* m) override { ff_send_out_to(m, m->dest); return GO_ON; }
};
// Second set: "train" on the model and send the update back over the feedback channel.
struct Trainer : ff_minode_t<Msg> {
    Msg* svc(Msg* m) override {
        m->value = m->value * (m->dest + 2) + m->round;
        ++seen;
        return m;
    }
    long seen = 0;
};
struct Reply : ff_monode_t<Msg> {
    Msg* svc(Msg* m) override { return m; }
};

static long a2a_expected() {
    long value = 1;
    for (int r = 0; r < kRounds; ++r) {
        long acc = 0;
        for (int w = 0; w < kWorkers; ++w) acc += value * (w + 2) + r;
        value = acc % 1000003;
    }
    return value;
}

static int check_a2a_feedback() {
    Federator federator;
    Router router;
    ff_comb left(federator, router);
    std::vector<Trainer> trainers(kWorkers);
    std::vector<Reply> replies(kWorkers);
    std::vector<ff_comb*> right_nodes;
    std::vector<ff_node*> first{&left}, second;
    for (int w = 0; w < kWorkers; ++w) {
        right_nodes.push_back(new ff_comb(trainers[w], replies[w]));
        second.push_back(right_nodes.back());
    }
    ff_a2a a2a;
    a2a.add_firstset(first);
    a2a.add_secondset(second);
    if (a2a.wrap_around() < 0) { std::fprintf(stderr, "a2a: wrap_around failed\n"); return 1; }
    if (a2a.run_and_wait_end() < 0) { std::fprintf(stderr, "a2a: run failed\n"); return 1; }
    long seen = 0;
    for (auto& t : trainers) {
        if (t.seen != kRounds) { std::fprintf(stderr, "a2a: a worker saw %ld rounds\n", t.seen); return 1; }
        seen += t.seen;
    }
    for (auto* c : right_nodes) delete c;
    const long expected = a2a_expected();
    std::printf("a2a+feedback: %d rounds x %d workers, %ld updates, model %ld (expected %ld)\n",
                kRounds, kWorkers, seen, federator.value, expected);
    return (federator.value == expected && seen == kRounds * kWorkers) ? 0 : 1;
}

int main() {
    int failed = check_pipeline() + check_farm() + check_a2a_feedback();
    if (failed) {
        std::fprintf(stderr, "FAILED: %d FastFlow check(s)\n", failed);
        return 1;
    }
    std::printf("fastflow test_package: OK\n");
    return 0;
}
