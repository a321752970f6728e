/* Proves the package links and computes: sgemm and dgemm on odd sizes (edge kernels) checked
 * against a naive triple loop, LAPACK (when the package has it: TEST_LAPACK) on systems with
 * known answers, then prints the kernel set OpenBLAS picked at run time. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#ifdef TEST_LAPACK
/* Fortran LAPACK symbols, as torch calls them. */
void dgesv_(const int *n, const int *nrhs, double *a, const int *lda, int *ipiv, double *b,
            const int *ldb, int *info);
void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
            double *w, double *work, const int *lwork, int *info, size_t jobz_len,
            size_t uplo_len);

/* dgesv (OpenBLAS's own getrf/getrs) on a diagonally dominant system, checked by its residual;
 * dsyev (reference LAPACK code) on the 1-D Laplacian, whose eigenvalues are known in closed
 * form: 2 - 2 cos(k pi / (n + 1)). */
static int check_lapack(void) {
    enum { LN = 7 };
    double a[LN * LN], a0[LN * LN], b[LN], x[LN], w[LN], work[64];
    int ipiv[LN], info = 0, n = LN, one = 1, lwork = 64;
    for (int j = 0; j < LN; ++j) {
        for (int i = 0; i < LN; ++i) {
            a[i + j * LN] = (i == j) ? 10.0 + i : 1.0 / (1.0 + i + 2 * j);
        }
        b[j] = 1.0 + j;
    }
    memcpy(a0, a, sizeof a);
    memcpy(x, b, sizeof b);
    dgesv_(&n, &one, a, &n, ipiv, x, &n, &info);
    double residual = 0.0;
    for (int i = 0; i < LN && info == 0; ++i) {
        double r = -b[i];
        for (int j = 0; j < LN; ++j) r += a0[i + j * LN] * x[j];
        residual = fmax(residual, fabs(r));
    }
    printf("lapack dgesv %dx%d info %d residual %.3g\n", LN, LN, info, residual);
    int failed = info != 0 || residual > 1e-12;

    for (int j = 0; j < LN; ++j)
        for (int i = 0; i < LN; ++i)
            a[i + j * LN] = (i == j) ? 2.0 : (i - j == 1 || j - i == 1) ? -1.0 : 0.0;
    dsyev_("N", "U", &n, a, &n, w, work, &lwork, &info, 1, 1);
    double worst = 0.0;
    for (int k = 1; k <= LN && info == 0; ++k) {
        double expect = 2.0 - 2.0 * cos(k * 3.14159265358979323846 / (LN + 1));
        worst = fmax(worst, fabs(w[k - 1] - expect));
    }
    printf("lapack dsyev %dx%d info %d max eigenvalue error %.3g\n", LN, LN, info, worst);
    return failed + (info != 0 || worst > 1e-12);
}
#endif

int main(void) {
    int failed = check_sgemm() + check_dgemm();
#ifdef TEST_LAPACK
    failed += check_lapack();
#endif
    printf("openblas config: %s\n", openblas_get_config());
    printf("openblas corename: %s\n", openblas_get_corename());
    printf("openblas threads: %d\n", openblas_get_num_threads());
    if (failed) {
        fprintf(stderr, "FAILED: %d GEMM/LAPACK check(s) outside tolerance\n", failed);
        return 1;
    }
    return 0;
}
