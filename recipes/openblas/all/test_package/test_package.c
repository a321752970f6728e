/* Proves the package links and computes: sgemm and dgemm on odd sizes (edge kernels) checked
 * against a naive triple loop, then prints the kernel set OpenBLAS picked at run time. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define M 67
#define N 45
#define K 53

static unsigned lcg = 12345u;
static double next_value(void) {
    lcg = lcg * 1103515245u + 12345u;
    return ((double)((lcg >> 8) & 0xffff) / 65536.0) - 0.5;
}

static int check_sgemm(void) {
    static float a[M * K], b[K * N], c[M * N];
    for (int i = 0; i < M * K; i++) a[i] = (float)next_value();
    for (int i = 0; i < K * N; i++) b[i] = (float)next_value();
    for (int i = 0; i < M * N; i++) c[i] = 1.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 2.0f, a, K, b, N, 0.5f, c, N);
    double worst = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0.5;
            for (int p = 0; p < K; p++) ref += 2.0 * a[i * K + p] * b[p * N + j];
            double err = fabs(ref - c[i * N + j]);
            if (err > worst) worst = err;
        }
    printf("sgemm %dx%dx%d max abs error %.3g\n", M, N, K, worst);
    return worst < 1e-4 ? 0 : 1;
}

static int check_dgemm(void) {
    static double a[M * K], b[K * N], c[M * N];
    for (int i = 0; i < M * K; i++) a[i] = next_value();
    for (int i = 0; i < K * N; i++) b[i] = next_value();
    for (int i = 0; i < M * N; i++) c[i] = -1.0;
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, M, N, K, 1.5, a, K, b, K, 2.0, c, M);
    double worst = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = -2.0;
            for (int p = 0; p < K; p++) ref += 1.5 * a[i * K + p] * b[j * K + p];
            double err = fabs(ref - c[j * M + i]);
            if (err > worst) worst = err;
        }
    printf("dgemm %dx%dx%d max abs error %.3g\n", M, N, K, worst);
    return worst < 1e-12 ? 0 : 1;
}

int main(void) {
    int failed = check_sgemm() + check_dgemm();
    printf("openblas config: %s\n", openblas_get_config());
    printf("openblas corename: %s\n", openblas_get_corename());
    printf("openblas threads: %d\n", openblas_get_num_threads());
    if (failed) {
        fprintf(stderr, "FAILED: %d GEMM check(s) outside tolerance\n", failed);
        return 1;
    }
    return 0;
}
