/* A freestanding riscv64 program whose executed instructions between markers are known
 * exactly (tests/integration/test_tcg_count.py). Markers are the counting plugin's system
 * call (a7 = 0x5256, a0 = tag); a7 is set once and no instruction between markers touches it.
 *
 *   region 1 -> 2: integer loop         1 + 2*1000 + 2 = 2003 instructions, 0 vector
 *   region 2 -> 3: scalar FP loads and stores (LOAD-FP/STORE-FP widths 2 and 3: flw/fsw/fld/fsd)
 *                  2 + 1 + 7*500 + 2 = 3505 instructions, 0 vector
 *   region 3 -> 4: vector loads (widths 0, 5, 6, 7), an OP-V add, a vector store
 *                  2 + 1 + 1 + 1 + 8*300 + 2 = 2407 instructions, 1 + 6*300 = 1801 vector
 */
    .option norelax          /* lla stays auipc+addi: no gp-relative relaxation (gp is unset) */
    .equ MARK, 0x5256
    .text
    .globl _start
_start:
    li a7, MARK
    li a0, 1
    ecall

    li t0, 1000
1:  addi t0, t0, -1
    bnez t0, 1b
    li a0, 2
    ecall

    lla a1, buf
    li t0, 500
2:  flw ft0, 0(a1)
    fadd.s ft0, ft0, ft0
    fsw ft0, 0(a1)
    fld ft1, 8(a1)
    fsd ft1, 8(a1)
    addi t0, t0, -1
    bnez t0, 2b
    li a0, 3
    ecall

    lla a1, buf
    li t0, 300
    li t1, 4
    vsetvli t2, t1, e32, m1, ta, ma
3:  vle32.v v1, (a1)
    vfadd.vv v2, v1, v1
    vse32.v v2, (a1)
    vle8.v v3, (a1)
    vle16.v v6, (a1)
    vle64.v v4, (a1)
    addi t0, t0, -1
    bnez t0, 3b
    li a0, 4
    ecall

    li a7, 93                /* exit(0) */
    li a0, 0
    ecall

    .data
    .balign 64
buf:
    .zero 64
