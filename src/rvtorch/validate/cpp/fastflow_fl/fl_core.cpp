#include "fl_core.hpp"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>

namespace flcore {

namespace {

constexpr char kMagic[8] = {'R', 'V', 'F', 'L', 'D', 'I', 'G', '1'};

// The file is little-endian; every target of the project is too, but say so if one is not.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shards reader assumes little-endian");

struct Reader {
    const std::vector<char>& buf;
    size_t off = 0;
    const std::string& path;

    void need(size_t n) const {
        if (off + n > buf.size())
            throw std::runtime_error(path + ": truncated shards file (need " +
                                     std::to_string(off + n) + " bytes, have " +
                                     std::to_string(buf.size()) + ")");
    }
    uint32_t u32() {
        need(4);
        uint32_t v;
        std::memcpy(&v, buf.data() + off, 4);
        off += 4;
        return v;
    }
    Split split(int64_t n, int64_t features) {
        const size_t xbytes = static_cast<size_t>(n * features) * 4;
        const size_t ybytes = static_cast<size_t>(n) * 4;
        need(xbytes + ybytes);
        auto x = torch::empty({n, features}, torch::kFloat32);
        std::memcpy(x.data_ptr<float>(), buf.data() + off, xbytes);
        off += xbytes;
        auto y32 = torch::empty({n}, torch::kInt32);
        std::memcpy(y32.data_ptr<int32_t>(), buf.data() + off, ybytes);
        off += ybytes;
        return Split{x, y32.to(torch::kInt64)};
    }
};

}  // namespace

Shards load_shards(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open shards file");
    std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Reader r{buf, 0, path};
    r.need(8);
    if (std::memcmp(buf.data(), kMagic, 8) != 0)
        throw std::runtime_error(path + ": not a shards file (bad magic)");
    r.off = 8;
    Shards s;
    s.n_features = r.u32();
    s.n_classes = r.u32();
    const uint32_t n_shards = r.u32();
    const uint32_t n_test = r.u32();
    s.seed = r.u32();
    r.u32();  // alpha * 1000: informative only
    r.u32();  // test fraction * 1000: informative only
    if (s.n_features <= 0 || s.n_classes <= 1 || n_shards == 0)
        throw std::runtime_error(path + ": shards header is inconsistent");
    std::vector<uint32_t> sizes(n_shards);
    for (auto& n : sizes) n = r.u32();
    for (uint32_t n : sizes) s.shards.push_back(r.split(n, s.n_features));
    s.test = r.split(n_test, s.n_features);
    if (r.off != buf.size())
        throw std::runtime_error(path + ": " + std::to_string(buf.size() - r.off) +
                                 " trailing bytes after the test set");
    return s;
}

MlpImpl::MlpImpl(int64_t in, int64_t classes) {
    fc1 = register_module("fc1", torch::nn::Linear(in, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 32));
    fc3 = register_module("fc3", torch::nn::Linear(32, classes));
}

torch::Tensor MlpImpl::forward(torch::Tensor x) {
    x = torch::relu(fc1->forward(x));
    x = torch::relu(fc2->forward(x));
    return fc3->forward(x);
}

Learner::Learner(int64_t in, int64_t classes, const TrainConfig& cfg)
    : model_(in, classes), cfg_(cfg) {
    opt_ = std::make_unique<torch::optim::SGD>(
        model_->parameters(), torch::optim::SGDOptions(cfg.lr).momentum(cfg.momentum));
}

double Learner::train(const Split& data, uint64_t seed, uint64_t stream, uint64_t round) {
    model_->train();
    const int64_t n = data.size();
    // mt19937_64's output sequence is fixed by the standard; the Fisher-Yates below is ours, so
    // the order is the same on every architecture and standard library.
    std::seed_seq seq{seed, stream, round};
    std::mt19937_64 rng(seq);
    std::vector<int64_t> order(n);
    double last_loss = 0.0;
    for (int epoch = 0; epoch < cfg_.local_epochs; ++epoch) {
        for (int64_t i = 0; i < n; ++i) order[i] = i;
        for (int64_t i = n - 1; i > 0; --i) {
            const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
            std::swap(order[i], order[j]);
        }
        auto idx = torch::from_blob(order.data(), {n}, torch::kInt64).clone();
        double sum = 0.0;
        int64_t batches = 0;
        for (int64_t start = 0; start < n; start += cfg_.batch) {
            auto b = idx.slice(0, start, std::min(n, start + cfg_.batch));
            auto x = data.x.index_select(0, b);
            auto y = data.y.index_select(0, b);
            opt_->zero_grad();
            auto loss = torch::nn::functional::cross_entropy(model_->forward(x), y);
            loss.backward();
            opt_->step();
            sum += loss.item<double>();
            ++batches;
        }
        last_loss = batches ? sum / static_cast<double>(batches) : 0.0;
    }
    return last_loss;
}

double Learner::accuracy(const Split& data) {
    torch::NoGradGuard no_grad;
    model_->eval();
    auto pred = model_->forward(data.x).argmax(1);
    return pred.eq(data.y).sum().item<int64_t>() / static_cast<double>(data.size());
}

torch::Tensor Learner::flat() const {
    std::vector<torch::Tensor> parts;
    for (const auto& p : model_->parameters()) parts.push_back(p.detach().reshape({-1}));
    return torch::cat(parts).contiguous();
}

void Learner::load_flat(const torch::Tensor& v) {
    torch::NoGradGuard no_grad;
    int64_t off = 0;
    for (auto& p : model_->parameters()) {
        const int64_t n = p.numel();
        if (off + n > v.numel()) throw std::runtime_error("load_flat: vector too short");
        p.copy_(v.slice(0, off, off + n).view(p.sizes()));
        off += n;
    }
    if (off != v.numel()) throw std::runtime_error("load_flat: vector too long");
}

torch::Tensor initial_parameters(int64_t in, int64_t classes, uint64_t seed) {
    torch::manual_seed(seed);
    Learner l(in, classes, TrainConfig{});
    return l.flat().clone();
}

torch::Tensor average(const std::vector<torch::Tensor>& params) {
    if (params.empty()) throw std::runtime_error("average: nothing to average");
    auto acc = params[0].clone();
    for (size_t i = 1; i < params.size(); ++i) acc.add_(params[i]);
    return acc.div_(static_cast<double>(params.size()));
}

torch::Tensor weighted_average(const std::vector<torch::Tensor>& params,
                               const std::vector<int64_t>& counts) {
    if (params.empty() || params.size() != counts.size())
        throw std::runtime_error("weighted_average: parameters and counts differ in length");
    int64_t total = 0;
    for (auto c : counts) total += c;
    auto acc = torch::zeros_like(params[0]);
    for (size_t i = 0; i < params.size(); ++i)
        acc.add_(params[i], static_cast<double>(counts[i]) / static_cast<double>(total));
    return acc;
}

std::string param_hash(const torch::Tensor& flat) {
    auto c = flat.contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    char out[17];
    std::snprintf(out, sizeof out, "%016" PRIx64, h);
    return out;
}

double param_norm(const torch::Tensor& flat) { return flat.norm().item<double>(); }

RunConfig parse_run_args(int argc, char** argv) {
    RunConfig c;
    auto value = [&](int& i, const std::string& flag) -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
        return argv[++i];
    };
    auto to_int = [](const std::string& flag, const std::string& v, int lo) {
        size_t pos = 0;
        int n = 0;
        try {
            n = std::stoi(v, &pos);
        } catch (const std::exception&) {
            pos = 0;
        }
        if (pos != v.size() || n < lo)
            throw std::invalid_argument(flag + " wants an integer >= " + std::to_string(lo) +
                                        ", got '" + v + "'");
        return n;
    };
    auto to_double = [](const std::string& flag, const std::string& v) {
        size_t pos = 0;
        double d = 0;
        try {
            d = std::stod(v, &pos);
        } catch (const std::exception&) {
            pos = 0;
        }
        if (pos != v.size() || !(d >= 0.0))
            throw std::invalid_argument(flag + " wants a number >= 0, got '" + v + "'");
        return d;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--shards") c.shards = value(i, a);
        else if (a == "--workers") c.workers = to_int(a, value(i, a), 2);
        else if (a == "--rounds") c.rounds = to_int(a, value(i, a), 1);
        else if (a == "--epochs") c.train.local_epochs = to_int(a, value(i, a), 1);
        else if (a == "--batch") c.train.batch = to_int(a, value(i, a), 1);
        else if (a == "--lr") c.train.lr = to_double(a, value(i, a));
        else if (a == "--momentum") c.train.momentum = to_double(a, value(i, a));
        else if (a == "--weighted") c.weighted = true;
        else throw std::invalid_argument("unknown option '" + a + "'");
    }
    if (c.shards.empty()) throw std::invalid_argument("--shards FILE is required");
    return c;
}

std::string json_escape(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.10g", v);
    return buf;
}

}  // namespace flcore
