// Creates tensors, multiplies them and checks the product against a hand-computed value.
#include <torch/torch.h>

#include <cstdio>

int main() {
    torch::Tensor a = torch::arange(1, 7, torch::kFloat32).reshape({2, 3});
    torch::Tensor b = torch::ones({3, 2}, torch::kFloat32) * 2;
    torch::Tensor c = torch::matmul(a, b);
    // rows of a sum to 6 and 15; every column of b is 2s
    torch::Tensor expected = torch::tensor({{12.0f, 12.0f}, {30.0f, 30.0f}});
    bool ok = torch::allclose(c, expected);
    std::printf("torch %s matmul [[%.0f %.0f] [%.0f %.0f]] %s\n", TORCH_VERSION,
                c[0][0].item<float>(), c[0][1].item<float>(), c[1][0].item<float>(),
                c[1][1].item<float>(), ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
