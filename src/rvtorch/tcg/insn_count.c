/*
 * insn_count: a QEMU TCG plugin (user mode) that counts executed guest instructions, all of
 * them and the RISC-V vector (RVV) ones, and snapshots both counters whenever the guest makes
 * a marker system call.
 *
 *   qemu-riscv64 -plugin insn_count.so,out=FILE[,nr=N] ...
 *
 * Counting is inline: at translation time each translation block (TB) gets two add-immediate
 * operations on per-vCPU counters (its number of instructions, its number of vector ones), so
 * no callback runs per instruction or per block. A block's instructions are counted when the
 * block is entered; a block left early by a fault would be over-counted (faults are not part
 * of a benchmark's loop).
 *
 * Vector instructions are recognised by encoding (RVV 1.0, 32-bit instructions only):
 *   major opcode OP-V (0x57): arithmetic, vsetvl{i}, vsetivli;
 *   LOAD-FP (0x07) / STORE-FP (0x27) with width funct3 0 (8-bit), 5, 6, 7 (16/32/64-bit element)
 *   are vector loads/stores; funct3 1..4 are the scalar FP ones (flh/flw/fld/flq).
 *
 * Markers: the guest calls syscall number `nr` (default 0x5256, unused by Linux) with a tag in
 * a0, e.g. ctypes `libc.syscall(0x5256, tag)`. QEMU returns ENOSYS to the guest. The plugin
 * writes one line per marker to FILE:
 *
 *   mark TAG VCPU INSNS VECTOR VCPU_INSNS VCPU_VECTOR
 *
 * INSNS/VECTOR are the sums over all vCPUs (threads) so far, VCPU_* the calling thread's own.
 * At exit:  exit INSNS VECTOR.  The first line is  insn_count 1 nr=N.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    uint64_t insns;
    uint64_t vector;
} Counters;

static struct qemu_plugin_scoreboard *counters;
static qemu_plugin_u64 insns;
static qemu_plugin_u64 vector;
static FILE *out;
static int64_t marker_nr = 0x5256;

/* Is the 32-bit instruction word an RVV 1.0 instruction? (Shared with the unit test's copy of
 * the rule in Python; keep both in step.) */
static int is_vector(uint32_t word)
{
    uint32_t opcode = word & 0x7f;
    uint32_t width = (word >> 12) & 0x7;

    if ((word & 0x3) != 0x3) {
        return 0; /* compressed: no vector encodings */
    }
    if (opcode == 0x57) {
        return 1;
    }
    if (opcode == 0x07 || opcode == 0x27) {
        return width == 0 || width >= 5;
    }
    return 0;
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t nvec = 0;

    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;

        if (qemu_plugin_insn_size(insn) == 4 &&
            qemu_plugin_insn_data(insn, &word, sizeof(word)) == sizeof(word)) {
            /* riscv64 guests are little-endian; so is every host this runs on. */
            nvec += (uint64_t)is_vector(word);
        }
    }
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, insns, n);
    if (nvec) {
        qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, vector,
                                                          nvec);
    }
}

static void vcpu_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                         uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                         uint64_t a7, uint64_t a8)
{
    if (num != marker_nr) {
        return;
    }
    fprintf(out, "mark %" PRIu64 " %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", a1,
            vcpu_index, qemu_plugin_u64_sum(insns), qemu_plugin_u64_sum(vector),
            qemu_plugin_u64_get(insns, vcpu_index), qemu_plugin_u64_get(vector, vcpu_index));
    fflush(out);
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    fprintf(out, "exit %" PRIu64 " %" PRIu64 "\n", qemu_plugin_u64_sum(insns),
            qemu_plugin_u64_sum(vector));
    fclose(out);
    qemu_plugin_scoreboard_free(counters);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;

    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else if (strncmp(argv[i], "nr=", 3) == 0) {
            char *end;
            marker_nr = strtoll(argv[i] + 3, &end, 0);
            if (*end || end == argv[i] + 3) {
                fprintf(stderr, "insn_count: bad nr=%s\n", argv[i] + 3);
                return -1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (out=FILE, nr=N)\n", argv[i]);
            return -1;
        }
    }
    if (!path) {
        fprintf(stderr, "insn_count: out=FILE is required\n");
        return -1;
    }
    if (strcmp(info->target_name, "riscv64") != 0 && strcmp(info->target_name, "riscv32") != 0) {
        fprintf(stderr, "insn_count: RISC-V guests only, not %s\n", info->target_name);
        return -1;
    }
    out = fopen(path, "w");
    if (!out) {
        perror("insn_count: out");
        return -1;
    }
    fprintf(out, "insn_count 1 nr=%" PRId64 "\n", marker_nr);
    fflush(out);
    counters = qemu_plugin_scoreboard_new(sizeof(Counters));
    insns = qemu_plugin_scoreboard_u64_in_struct(counters, Counters, insns);
    vector = qemu_plugin_scoreboard_u64_in_struct(counters, Counters, vector);
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, vcpu_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
