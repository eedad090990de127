/*
 * SIMT emulator runtime: fibers, the block scheduler, warp collectives,
 * shared memory, device-allocation tracking and the CUDA runtime shims.
 * See simt.h for the model.
 *
 * Fibers switch with a few lines of assembly on x86-64 (swapcontext makes a
 * system call per switch, which dominates kernels with many barriers) and
 * with ucontext elsewhere. Under AddressSanitizer every switch is announced
 * with __sanitizer_{start,finish}_switch_fiber so ASan follows the stacks.
 */
#include "simt.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif

#ifdef SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

/* A graph node runs on the stream the graph is launched into. */
typedef std::function<cudaError_t(cudaStream_t)> simt_node;

struct simt_stream {
    bool capturing = false;   /* between cudaStreamBeginCapture and cudaStreamEndCapture */
    bool strict = false;      /* captured in global or thread-local mode */
    bool invalidated = false; /* an unsafe call was made during the capture */
    std::string why;          /* the first one */
    std::vector<simt_node> nodes;
};
struct simt_graph {
    std::vector<simt_node> nodes;
};
struct simt_graph_exec {
    std::vector<simt_node> nodes;
};

namespace simt {

thread_local thread_state *tls_thread = nullptr;
thread_local block_state tls_block;

namespace {

constexpr size_t kStaticSmemLimit = 48 * 1024;
constexpr size_t kOptinSmemLimit = 227 * 1024;
constexpr int kMaxThreads = 1024;
/* The emulated device, for the multiprocessor count and the occupancy model
 * that bounds a cooperative grid (see blocks_per_multiprocessor). */
constexpr int kMultiprocessors = 4;
constexpr int kThreadsPerMultiprocessor = 2048;
constexpr int kBlocksPerMultiprocessor = 32;
constexpr size_t kSmemPerMultiprocessor = kOptinSmemLimit;
constexpr uint32_t kPoison = 0x7FC0DEADu; /* a NaN as float, a huge int as int32 */

/* ---- process-wide state ------------------------------------------------- */
std::mutex g_mutex;
std::map<uintptr_t, size_t> g_allocs;   /* device allocations: base -> bytes */
std::set<simt_stream *> g_streams;
/* captures begun and not yet ended, and those of them not in relaxed mode */
std::atomic<int> g_captures{0};
std::atomic<int> g_strict_captures{0};
std::map<const void *, int> g_max_dyn_smem;
std::atomic<unsigned long long> g_sync_count{0};
std::atomic<unsigned long long> g_launch_count{0};

/* ---- per host thread: last error, schedule ----------------------------- */
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local char t_message[768];

enum schedule_kind { SCHED_FORWARD, SCHED_REVERSE, SCHED_RANDOM };
struct schedule {
    schedule_kind kind = SCHED_FORWARD;
    uint64_t seed = 0;
    bool loaded = false;
    char text[48] = "forward";
};
thread_local schedule t_schedule;

bool parse_schedule(const char *spec, schedule *out)
{
    if (spec == nullptr) return false;
    schedule s;
    if (std::strcmp(spec, "forward") == 0) {
        s.kind = SCHED_FORWARD;
    } else if (std::strcmp(spec, "reverse") == 0) {
        s.kind = SCHED_REVERSE;
    } else if (std::strncmp(spec, "random:", 7) == 0) {
        const char *digits = spec + 7;
        if (*digits == '\0') return false;
        char *end = nullptr;
        errno = 0;
        unsigned long long seed = std::strtoull(digits, &end, 10);
        if (errno != 0 || *end != '\0' || *digits == '-') return false;
        s.kind = SCHED_RANDOM;
        s.seed = seed;
    } else {
        return false;
    }
    s.loaded = true;
    std::snprintf(s.text, sizeof s.text, "%s", spec);
    *out = s;
    return true;
}

schedule &current_schedule()
{
    if (!t_schedule.loaded) {
        const char *env = std::getenv("DETPOST_SIMT_SCHEDULE");
        if (!(env && parse_schedule(env, &t_schedule))) {
            t_schedule = schedule();
            t_schedule.loaded = true;
        }
    }
    return t_schedule;
}

size_t g_stack_bytes = 0; /* 0 = not yet read from the environment */

/* Read once: every fiber switch asks for it through stack_mem::lo(). */
size_t page_size()
{
    static const size_t bytes = (size_t)sysconf(_SC_PAGESIZE);
    return bytes;
}

size_t stack_bytes()
{
    if (g_stack_bytes == 0) {
        size_t kb = 256;
        if (const char *env = std::getenv("DETPOST_SIMT_STACK_KB")) {
            long v = std::atol(env);
            if (v >= 16) kb = (size_t)v;
        }
        g_stack_bytes = kb * 1024;
    }
    size_t p = page_size();
    return (g_stack_bytes + p - 1) / p * p;
}

cudaError_t record(cudaError_t code, const char *fmt, va_list ap)
{
    std::vsnprintf(t_message, sizeof t_message, fmt, ap);
    t_last_error = code;
    return code;
}

cudaError_t fail(cudaError_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t fail(cudaError_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(code, fmt, ap);
    va_end(ap);
    return code;
}

void fill_poison(void *ptr, size_t bytes)
{
    unsigned char *p = static_cast<unsigned char *>(ptr);
    uint32_t word = kPoison;
    size_t i = 0;
    for (; i + 4 <= bytes; i += 4) std::memcpy(p + i, &word, 4);
    for (; i < bytes; ++i) p[i] = reinterpret_cast<const unsigned char *>(&word)[i % 4];
}

/* ---- fibers ------------------------------------------------------------- */
struct fiber_ctx {
#if defined(__x86_64__)
    void *sp = nullptr;
#else
    ucontext_t uc;
#endif
};

} /* namespace */
} /* namespace simt */

extern "C" void simt_fiber_main();

#if defined(__x86_64__)
extern "C" void simt_switch(void **save_sp, void *load_sp);
/* Saves the callee-saved registers and the SSE/x87 control words of the
 * current fiber on its stack, stores its stack pointer in *save_sp and
 * resumes the fiber whose stack pointer is load_sp. */
__asm__(".text\n"
        ".globl simt_switch\n"
        ".hidden simt_switch\n"
        ".type simt_switch,@function\n"
        "simt_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 4(%rsp)\n"
        "  addq $8, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size simt_switch, .-simt_switch\n");
#endif

namespace simt {
namespace {

void fiber_init(fiber_ctx &f, char *stack_lo, size_t size)
{
#ifdef SIMT_ASAN
    /* A finished fiber never returns from simt_fiber_main, so that frame's
     * redzones stay poisoned at the top of the stack it leaves behind. */
    const size_t top_bytes = size < 16384 ? size : 16384;
    ASAN_UNPOISON_MEMORY_REGION(stack_lo + size - top_bytes, top_bytes);
#endif
#if defined(__x86_64__)
    uintptr_t top = reinterpret_cast<uintptr_t>(stack_lo + size) & ~uintptr_t(15);
    uint64_t *sp = reinterpret_cast<uint64_t *>(top);
    *--sp = 0; /* return address of simt_fiber_main: it never returns */
    *--sp = reinterpret_cast<uint64_t>(&simt_fiber_main);
    for (int i = 0; i < 6; ++i) *--sp = 0; /* rbp rbx r12 r13 r14 r15 */
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    *--sp = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = stack_lo;
    f.uc.uc_stack.ss_size = size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, simt_fiber_main, 0);
#endif
}

inline void fiber_swap(fiber_ctx &from, fiber_ctx &to)
{
#if defined(__x86_64__)
    simt_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

struct stack_mem {
    char *base = nullptr; /* guard page first */
    size_t total = 0;
    char *lo() const { return base + page_size(); }
    size_t usable() const { return total - page_size(); }
};

enum thread_status { T_READY, T_BLOCK_BARRIER, T_WARP, T_GRID_BARRIER, T_DONE, T_ABORTED };

/* One block in flight: a launch has one at a time, a cooperative launch all
 * of its grid. */
struct sim_block {
    uint3 idx{0, 0, 0};
    int first = 0; /* index of its thread 0 in runner::threads */
    unsigned char *smem = nullptr;
    size_t smem_used = 0; /* dynamic + static so far */
    size_t smem_static = 0;
    std::vector<std::pair<const void *, size_t>> sites;
    int arrived = 0; /* threads waiting at __syncthreads */
    int barrier_or = 0, barrier_count = 0;
    bool held = false; /* not resumed in this round (random cooperative schedules) */
};

struct sim_thread : thread_state {
    fiber_ctx ctx;
    stack_mem stack;
    void *asan_fake = nullptr;
    thread_status status = T_READY;
    int warp = 0, lane = 0;
    int warp_base = 0; /* index of lane 0 of its warp in runner::threads */
    /* a pending warp collective */
    warp_op op = WARP_SYNC;
    unsigned mask = 0;
    uint64_t value = 0;
    int param = 0, width = 32;
    uint64_t result = 0;
    int barrier_pred = 0;
    barrier_site barrier_at = {nullptr, 0}; /* the __syncthreads it waits at */
    sim_block *block = nullptr;
};

struct runner {
    std::vector<sim_thread> threads;
    int nthreads = 0;         /* threads in flight: one block's, or a cooperative grid's */
    int block_threads = 0;
    sim_thread *current = nullptr;
    fiber_ctx sched;
    const void *main_bottom = nullptr;
    size_t main_size = 0;

    void (*body)(void *) = nullptr;
    void *closure = nullptr;

    std::vector<sim_block> blocks;
    int nblocks = 0;          /* blocks in flight */
    bool cooperative = false;
    int grid_arrived = 0;     /* threads waiting at grid_sync */

    std::vector<unsigned char> smem; /* the one block of an ordinary launch */
    size_t smem_dirty = 0;           /* its high-water mark to re-poison */
    unsigned char *coop_smem = nullptr; /* every block of a cooperative launch, smem_limit bytes each */
    size_t coop_smem_bytes = 0;
    size_t smem_dynamic = 0;
    size_t smem_limit = 0;

    bool failed = false;
    const sim_block *failed_block = nullptr; /* where a cooperative launch failed, if one block is to blame */
    char failure[512] = {0};

    std::vector<int> order;
    uint64_t rng = 0;

    ~runner()
    {
        for (sim_thread &t : threads)
            if (t.stack.base) munmap(t.stack.base, t.stack.total);
        if (coop_smem) munmap(coop_smem, coop_smem_bytes);
    }
};

thread_local std::unique_ptr<runner> t_runner;

runner &get_runner()
{
    if (!t_runner) t_runner.reset(new runner());
    return *t_runner;
}

inline void asan_start(void **fake, const void *bottom, size_t size)
{
#ifdef SIMT_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void *fake, const void **bottom, size_t *size)
{
#ifdef SIMT_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

void resume(runner &r, sim_thread *t)
{
    r.current = t;
    tls_thread = t;
    if (r.cooperative) tls_block.block_idx = t->block->idx;
    void *fake = nullptr;
    asan_start(&fake, t->stack.lo(), t->stack.usable());
    fiber_swap(r.sched, t->ctx);
    asan_finish(fake, nullptr, nullptr);
    tls_thread = nullptr;
    r.current = nullptr;
}

/* Called on a fiber: back to the scheduler until it resumes this thread. */
void yield_to_scheduler(runner &r, sim_thread *t)
{
    asan_start(&t->asan_fake, r.main_bottom, r.main_size);
    fiber_swap(t->ctx, r.sched);
    asan_finish(t->asan_fake, &r.main_bottom, &r.main_size);
}

/* A fault found while a thread runs: the block is abandoned. */
[[noreturn]] void abort_thread(runner &r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void abort_thread(runner &r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(r.failure, sizeof r.failure, fmt, ap);
    va_end(ap);
    r.failed = true;
    sim_thread *t = r.current;
    r.failed_block = t->block;
    t->status = T_ABORTED;
    yield_to_scheduler(r, t);
    std::abort(); /* an aborted thread is never resumed */
}

uint64_t next_random(uint64_t &s)
{
    /* splitmix64 */
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fill_order(std::vector<int> &order, int n, const schedule &s, uint64_t &rng)
{
    order.resize((size_t)n);
    for (int i = 0; i < n; ++i) order[(size_t)i] = s.kind == SCHED_REVERSE ? n - 1 - i : i;
    if (s.kind == SCHED_RANDOM)
        for (int i = n - 1; i > 0; --i) std::swap(order[(size_t)i], order[next_random(rng) % (uint64_t)(i + 1)]);
}

void ensure_threads(runner &r, int n)
{
    if ((int)r.threads.size() < n) r.threads.resize((size_t)n);
    size_t want = stack_bytes() + page_size();
    for (int i = 0; i < n; ++i) {
        sim_thread &t = r.threads[(size_t)i];
        if (t.stack.base && t.stack.total != want) {
            munmap(t.stack.base, t.stack.total);
            t.stack = stack_mem();
        }
        if (!t.stack.base) {
            void *m = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
            if (m == MAP_FAILED) {
                std::fprintf(stderr, "simt: cannot map a %zu-byte fiber stack\n", want);
                std::abort();
            }
            mprotect(m, page_size(), PROT_NONE);
            t.stack.base = static_cast<char *>(m);
            t.stack.total = want;
        }
    }
}

const char *status_word(thread_status s)
{
    switch (s) {
    case T_READY: return "running";
    case T_BLOCK_BARRIER: return "at __syncthreads";
    case T_WARP: return "at a warp collective";
    case T_GRID_BARRIER: return "at grid sync";
    case T_DONE: return "exited";
    case T_ABORTED: return "aborted";
    }
    return "?";
}

/* Describes why no thread in flight can move. */
void describe_stall(runner &r, int done, int at_barrier, int at_warp, int at_grid)
{
    r.failed_block = nullptr;
    if (at_grid > 0 && at_barrier == 0 && at_warp == 0) {
        std::snprintf(r.failure, sizeof r.failure,
                      "grid sync reached by %d of %d threads while %d exited without reaching it "
                      "(divergent grid sync)",
                      at_grid, r.nthreads, done);
        return;
    }
    for (int b = 0; b < r.nblocks; ++b) {
        const sim_block &blk = r.blocks[(size_t)b];
        if (blk.arrived == 0) continue;
        int block_done = 0, elsewhere = 0;
        for (int i = blk.first; i < blk.first + r.block_threads; ++i) {
            const thread_status s = r.threads[(size_t)i].status;
            block_done += s == T_DONE;
            elsewhere += s != T_DONE && s != T_BLOCK_BARRIER;
        }
        if (elsewhere > 0) continue;
        r.failed_block = &blk;
        std::snprintf(r.failure, sizeof r.failure,
                      "__syncthreads() reached by %d of %d threads while %d exited without "
                      "reaching it (divergent barrier)",
                      blk.arrived, r.block_threads, block_done);
        return;
    }
    for (int i = 0; i < r.nthreads; ++i) {
        sim_thread &t = r.threads[(size_t)i];
        if (t.status != T_WARP) continue;
        for (int l = 0; l < 32; ++l) {
            if (!((t.mask >> l) & 1u)) continue;
            const bool exists = t.warp * 32 + l < r.block_threads;
            const sim_thread *u = exists ? &r.threads[(size_t)(t.warp_base + l)] : nullptr;
            if (!exists || u->status != T_WARP || u->mask != t.mask) {
                r.failed_block = t.block;
                std::snprintf(r.failure, sizeof r.failure,
                              "deadlock: thread %d waits at a warp collective (mask 0x%08x) for lane %d, "
                              "which is %s",
                              t.linear, t.mask, l, exists ? status_word(u->status) : "not in the block");
                return;
            }
        }
    }
    if (r.cooperative)
        std::snprintf(r.failure, sizeof r.failure,
                      "deadlock: threads wait at different barriers: %d at grid sync, %d at __syncthreads, "
                      "%d at warp collectives, %d exited",
                      at_grid, at_barrier, at_warp, done);
    else
        std::snprintf(r.failure, sizeof r.failure,
                      "deadlock: %d threads at __syncthreads, %d at warp collectives, %d exited", at_barrier,
                      at_warp, done);
}

bool same_site(const barrier_site &a, const barrier_site &b)
{
    return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

/* Opens a block's __syncthreads: every thread of the block is at one. When
 * they wait at different ones, writes why in r.failure and returns false. */
bool open_barrier(runner &r, sim_block &blk)
{
    const sim_thread &first = r.threads[(size_t)blk.first];
    for (int i = blk.first + 1; i < blk.first + r.block_threads; ++i) {
        const sim_thread &t = r.threads[(size_t)i];
        if (same_site(t.barrier_at, first.barrier_at)) continue;
        r.failed_block = &blk;
        std::snprintf(r.failure, sizeof r.failure,
                      "threads %d and %d of a block wait at different __syncthreads (%s:%d and %s:%d), "
                      "undefined on a GPU",
                      first.linear, t.linear, first.barrier_at.file, first.barrier_at.line, t.barrier_at.file,
                      t.barrier_at.line);
        return false;
    }
    blk.barrier_or = 0;
    blk.barrier_count = 0;
    for (int i = blk.first; i < blk.first + r.block_threads; ++i) {
        sim_thread &t = r.threads[(size_t)i];
        blk.barrier_or |= t.barrier_pred != 0;
        blk.barrier_count += t.barrier_pred != 0;
        t.status = T_READY;
    }
    blk.arrived = 0;
    return true;
}

/* A random cooperative schedule holds back a random part of the grid for a
 * round while the rest runs ahead as far as it can, so that a block which
 * reads what others write without a grid sync in between sees stale data. */
void hold_blocks(runner &r)
{
    int running = 0;
    for (int b = 0; b < r.nblocks; ++b) {
        r.blocks[(size_t)b].held = next_random(r.rng) & 1u;
        running += !r.blocks[(size_t)b].held;
    }
    if (running == 0) r.blocks[next_random(r.rng) % (uint64_t)r.nblocks].held = false;
}

/* Runs the threads in flight (one block, or a whole cooperative grid) to
 * their end. A round resumes every ready thread once in schedule order (in a
 * random cooperative schedule: those not held back, until none of them is
 * ready); when none is ready, the barriers that everyone has reached open. */
bool run_threads(runner &r, const schedule &sched)
{
    const int n = r.nthreads;
    for (int i = 0; i < n; ++i) {
        sim_thread &t = r.threads[(size_t)i];
        t.status = T_READY;
        t.asan_fake = nullptr;
        fiber_init(t.ctx, t.stack.lo(), t.stack.usable());
    }
    for (int b = 0; b < r.nblocks; ++b) {
        r.blocks[(size_t)b].arrived = 0;
        r.blocks[(size_t)b].held = false;
    }
    const bool holding = r.cooperative && sched.kind == SCHED_RANDOM && r.nblocks > 1;
    for (;;) {
        if (!holding) {
            fill_order(r.order, n, sched, r.rng);
            for (int k = 0; k < n; ++k) {
                sim_thread *t = &r.threads[(size_t)r.order[(size_t)k]];
                if (t->status != T_READY) continue;
                resume(r, t);
                if (r.failed) return false;
            }
        } else {
            hold_blocks(r);
            for (bool resumed = true; resumed;) {
                resumed = false;
                fill_order(r.order, n, sched, r.rng);
                for (int k = 0; k < n; ++k) {
                    sim_thread *t = &r.threads[(size_t)r.order[(size_t)k]];
                    if (t->status != T_READY || t->block->held) continue;
                    resume(r, t);
                    resumed = true;
                    if (r.failed) return false;
                }
            }
        }
        int done = 0, at_barrier = 0, at_warp = 0, at_grid = 0, ready = 0;
        for (int i = 0; i < n; ++i) {
            switch (r.threads[(size_t)i].status) {
            case T_DONE: ++done; break;
            case T_BLOCK_BARRIER: ++at_barrier; break;
            case T_WARP: ++at_warp; break;
            case T_GRID_BARRIER: ++at_grid; break;
            case T_READY: ++ready; break;
            case T_ABORTED: return false;
            }
        }
        if (done == n) return true;
        if (ready > 0) continue;
        if (at_grid == n) {
            for (int i = 0; i < n; ++i) r.threads[(size_t)i].status = T_READY;
            continue;
        }
        if (r.blocks[0].arrived == r.block_threads && !r.cooperative) {
            if (open_barrier(r, r.blocks[0])) continue;
            r.failed = true;
            return false;
        }
        describe_stall(r, done, at_barrier, at_warp, at_grid);
        r.failed = true;
        return false;
    }
}

/* The occupancy model of the emulated device: a multiprocessor holds at most
 * 32 blocks, 2048 threads and 227 KiB of dynamic shared memory (static shared
 * memory and registers are not counted). */
int blocks_per_multiprocessor(int threads, size_t dyn_smem)
{
    const size_t by_threads = (size_t)(kThreadsPerMultiprocessor / threads);
    const size_t by_smem = kSmemPerMultiprocessor / std::max<size_t>(dyn_smem, 1);
    return (int)std::min({(size_t)kBlocksPerMultiprocessor, by_threads, by_smem});
}

/* The most dynamic shared memory a launch of `kernel` may ask for. */
size_t dynamic_smem_limit(const void *kernel)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_max_dyn_smem.find(kernel);
    return it == g_max_dyn_smem.end() ? kStaticSmemLimit : std::max(kStaticSmemLimit, (size_t)it->second);
}

/* Shared memory for every block of a cooperative grid, kept across launches;
 * pages no block touches cost nothing. */
unsigned char *coop_smem(runner &r, size_t bytes)
{
    if (r.coop_smem_bytes < bytes) {
        if (r.coop_smem) munmap(r.coop_smem, r.coop_smem_bytes);
        void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            std::fprintf(stderr, "simt: cannot map %zu bytes of shared memory for a cooperative grid\n", bytes);
            std::abort();
        }
        r.coop_smem = static_cast<unsigned char *>(m);
        r.coop_smem_bytes = bytes;
    }
    return r.coop_smem;
}

} /* namespace */

/* ---- kernel-side entry points ------------------------------------------ */

/* Waits at __syncthreads; returns the thread's block, whose barrier_or and
 * barrier_count then hold the votes of this barrier. */
static const sim_block *barrier(int pred, barrier_site at)
{
    runner &r = *t_runner;
    sim_thread *t = r.current;
    t->barrier_pred = pred;
    t->barrier_at = at;
    t->status = T_BLOCK_BARRIER;
    /* A cooperative grid opens a block's barrier at once, so that the block
     * can run ahead of the others; an ordinary block waits for the round. */
    if (++t->block->arrived == r.block_threads && r.cooperative && !open_barrier(r, *t->block)) {
        char why[sizeof r.failure];
        std::memcpy(why, r.failure, sizeof why);
        abort_thread(r, "%s", why);
    }
    yield_to_scheduler(r, t);
    return t->block;
}

void syncthreads(barrier_site at) { barrier(0, at); }
int syncthreads_or(int p, barrier_site at) { return barrier(p, at)->barrier_or; }
int syncthreads_count(int p, barrier_site at) { return barrier(p, at)->barrier_count; }

void grid_sync()
{
    runner &r = *t_runner;
    sim_thread *t = r.current;
    if (!r.cooperative)
        abort_thread(r, "thread %d called dp_grid_sync() in a launch that is not cooperative (DP_LAUNCH_COOP "
                        "launches a grid whose blocks all run at once)",
                     t->linear);
    t->status = T_GRID_BARRIER;
    yield_to_scheduler(r, t);
}

uint64_t warp_collective(warp_op op, unsigned mask, uint64_t value, int param, int width)
{
    runner &r = *t_runner;
    sim_thread *t = r.current;
    if (!((mask >> t->lane) & 1u))
        abort_thread(r, "thread %d called a warp collective with mask 0x%08x that excludes its own lane %d",
                     t->linear, mask, t->lane);
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
        abort_thread(r, "thread %d called a shuffle with width %d (not a power of two in [1, 32])", t->linear, width);
    const int base = t->warp_base;
    const int lanes = r.block_threads - t->warp * 32; /* lanes of this warp that exist */
    for (int l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && l >= lanes)
            abort_thread(r, "thread %d: warp collective mask 0x%08x names lane %d, which does not exist in a block of %d threads",
                         t->linear, mask, l, r.block_threads);
    t->op = op;
    t->mask = mask;
    t->value = value;
    t->param = param;
    t->width = width;
    t->status = T_WARP;

    for (int l = 0; l < 32; ++l) {
        if (!((mask >> l) & 1u)) continue;
        const sim_thread &u = r.threads[(size_t)(base + l)];
        if (u.status != T_WARP || u.mask != mask) {
            yield_to_scheduler(r, t); /* someone else completes the collective */
            return t->result;
        }
        if (u.op != op)
            abort_thread(r, "lanes %d and %d of warp %d met at different warp collectives (mask 0x%08x)",
                         t->lane, l, t->warp, mask);
    }

    /* Last to arrive: compute every lane's result, then release them. */
    uint32_t ballot = 0;
    uint64_t largest = 0;
    for (int l = 0; l < 32; ++l) {
        if (!((mask >> l) & 1u)) continue;
        const uint64_t v = r.threads[(size_t)(base + l)].value;
        if (v != 0) ballot |= 1u << l;
        largest = v > largest ? v : largest;
    }
    for (int l = 0; l < 32; ++l) {
        if (!((mask >> l) & 1u)) continue;
        sim_thread &u = r.threads[(size_t)(base + l)];
        const int seg = l & ~(u.width - 1);
        int src = l;
        switch (op) {
        case WARP_SYNC: u.result = 0; break;
        case WARP_BALLOT: u.result = ballot; break;
        case WARP_ANY: u.result = ballot != 0; break;
        case WARP_ALL: u.result = ballot == mask; break;
        case WARP_REDUCE_MAX: u.result = largest; break;
        case WARP_IDX: src = seg + (u.param & (u.width - 1)); break;
        case WARP_UP: src = (l - seg) >= u.param ? l - u.param : l; break;
        case WARP_DOWN: src = (l - seg) + u.param < u.width ? l + u.param : l; break;
        case WARP_XOR: src = (l ^ u.param) & 31; if (src >= seg + u.width) src = l; break;
        }
        if (op >= WARP_IDX) {
            /* reading a lane that takes no part in the collective is undefined */
            u.result = ((mask >> src) & 1u) ? r.threads[(size_t)(base + src)].value
                                             : ((uint64_t)kPoison << 32 | kPoison);
        }
        u.status = T_READY;
    }
    return t->result;
}

void *shared_static(const void *site, size_t bytes, size_t align)
{
    runner &r = *t_runner;
    sim_block &b = *r.current->block;
    for (const auto &s : b.sites)
        if (s.first == site) return b.smem + s.second;
    size_t offset = (b.smem_used + align - 1) / align * align;
    if (b.smem_static + bytes > kStaticSmemLimit)
        abort_thread(r, "static shared memory of %zu bytes exceeds the %zu-byte limit", b.smem_static + bytes,
                     kStaticSmemLimit);
    if (offset + bytes > r.smem_limit)
        abort_thread(r, "shared memory of %zu bytes (dynamic %zu) exceeds the block's limit of %zu bytes",
                     offset + bytes, r.smem_dynamic, r.smem_limit);
    b.sites.emplace_back(site, offset);
    b.smem_used = offset + bytes;
    b.smem_static += bytes;
    if (r.cooperative)
        fill_poison(b.smem + offset, bytes); /* each block has its own memory, poisoned as it is declared */
    else
        r.smem_dirty = std::max(r.smem_dirty, b.smem_used);
    return b.smem + offset;
}

void *shared_dynamic()
{
    runner &r = *t_runner;
    return r.smem_dynamic ? r.current->block->smem : nullptr;
}

cudaError_t occupancy_blocks_per_sm(int *blocks, const void *kernel, int threads, size_t dyn_smem)
{
    if (blocks == nullptr)
        return fail(cudaErrorInvalidValue, "cudaOccupancyMaxActiveBlocksPerMultiprocessor: numBlocks is NULL");
    if (threads < 1)
        return fail(cudaErrorInvalidValue, "cudaOccupancyMaxActiveBlocksPerMultiprocessor: %d threads per block",
                    threads);
    *blocks = threads > kMaxThreads || dyn_smem > dynamic_smem_limit(kernel)
                  ? 0
                  : blocks_per_multiprocessor(threads, dyn_smem);
    return cudaSuccess;
}

cudaError_t func_set_max_dynamic_smem(const void *func, int bytes)
{
    if (bytes < 0 || (size_t)bytes > kOptinSmemLimit)
        return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: %d bytes of dynamic shared memory exceeds %zu",
                    bytes, kOptinSmemLimit);
    std::lock_guard<std::mutex> lock(g_mutex);
    g_max_dyn_smem[func] = bytes;
    return cudaSuccess;
}

bool is_device_range(const void *ptr, size_t bytes)
{
    uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return false;
    --it;
    return p >= it->first && bytes <= it->second && p - it->first <= it->second - bytes;
}

void kernel_fail(const char *fmt, ...)
{
    char text[sizeof(runner::failure)];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    runner &r = get_runner();
    abort_thread(r, "thread %d failed: %s", r.current->linear, text);
}

cudaError_t fail_launch(cudaError_t code, const char *fmt, ...)
{
    g_launch_count++;
    va_list ap;
    va_start(ap, fmt);
    record(code, fmt, ap);
    va_end(ap);
    return code;
}

static bool stream_ok(cudaStream_t s)
{
    if (s == nullptr) return true;
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_streams.count(s) != 0;
}

/* ---- stream capture ------------------------------------------------------ */

/* Marks every active capture invalid, keeping the first reason; g_mutex held. */
static void invalidate_captures_locked(const char *why)
{
    for (simt_stream *st : g_streams)
        if (st->capturing && !st->invalidated) {
            st->invalidated = true;
            st->why = why;
            st->nodes.clear();
        }
}

/* A call a GPU refuses while a capture in global mode is active: fails with
 * cudaErrorStreamCaptureUnsupported and invalidates the captures. */
static cudaError_t refuse_if_capturing(const char *what)
{
    if (g_strict_captures.load() == 0) return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mutex);
    char why[256];
    std::snprintf(why, sizeof why, "%s is not permitted while a stream is capturing a graph", what);
    invalidate_captures_locked(why);
    return fail(cudaErrorStreamCaptureUnsupported, "%s", why);
}

/* Where work on `s` goes: run now (*record false), into s's capture (*record
 * true), or refused (an error: the legacy stream during a capture, or a
 * capture already invalidated). */
static cudaError_t route(cudaStream_t s, const char *what, bool *record)
{
    *record = false;
    if (g_captures.load() == 0) return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mutex);
    if (s == nullptr) {
        char why[256];
        std::snprintf(why, sizeof why, "%s on the legacy stream while a stream is capturing a graph", what);
        invalidate_captures_locked(why);
        return fail(cudaErrorStreamCaptureImplicit, "%s", why);
    }
    if (!g_streams.count(s) || !s->capturing) return cudaSuccess;
    if (s->invalidated)
        return fail(cudaErrorStreamCaptureInvalidated, "%s: the stream's capture was invalidated earlier: %s", what,
                    s->why.c_str());
    *record = true;
    return cudaSuccess;
}

/* Refuses work that cannot be recorded and invalidates the stream's capture. */
static cudaError_t refuse_in_capture(cudaStream_t s, const char *what)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!s->invalidated) {
        s->invalidated = true;
        s->why = what;
        s->nodes.clear();
    }
    return fail(cudaErrorStreamCaptureUnsupported, "%s", what);
}

static void add_node(cudaStream_t s, simt_node node)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    s->nodes.push_back(std::move(node));
}

bool stream_capturing(cudaStream_t s)
{
    if (g_captures.load() == 0) return false;
    if (s == nullptr) return true;
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_streams.count(s) != 0 && s->capturing;
}

/* Threads in flight are numbered block after block: thread i of block b is
 * runner::threads[b * threads per block + i]. */
static void place_threads(runner &r, sim_block &blk, dim3 block)
{
    for (int i = 0; i < r.block_threads; ++i) {
        sim_thread &t = r.threads[(size_t)(blk.first + i)];
        t.linear = i;
        t.idx = uint3{(unsigned)i % block.x, (unsigned)(i / block.x) % block.y, (unsigned)(i / (block.x * block.y))};
        t.warp = i / 32;
        t.lane = i % 32;
        t.warp_base = blk.first + t.warp * 32;
        t.block = &blk;
    }
}

static uint3 block_index(unsigned long long b, dim3 grid)
{
    return uint3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                 (unsigned)(b / ((unsigned long long)grid.x * grid.y))};
}

#ifdef SIMT_ASAN
/* abandoned fibers leave their frames' redzones poisoned */
static void unpoison_stacks(runner &r)
{
    for (int i = 0; i < r.nthreads; ++i)
        ASAN_UNPOISON_MEMORY_REGION(r.threads[(size_t)i].stack.lo(), r.threads[(size_t)i].stack.usable());
}
#else
static void unpoison_stacks(runner &) {}
#endif

/* Every block of the grid in flight at once, each with its own shared memory
 * and __syncthreads, so that grid_sync can wait for all of them. */
static cudaError_t run_cooperative(runner &r, const schedule &sched, const char *name, dim3 grid, dim3 block,
                                   unsigned long long nblocks)
{
    const size_t stride = (r.smem_limit + 255) / 256 * 256;
    unsigned char *smem = coop_smem(r, stride * nblocks);
    r.cooperative = true;
    r.nblocks = (int)nblocks;
    r.nthreads = r.nblocks * r.block_threads;
    ensure_threads(r, r.nthreads);
    if (r.blocks.size() < nblocks) r.blocks.resize(nblocks);
    for (int b = 0; b < r.nblocks; ++b) {
        sim_block &blk = r.blocks[(size_t)b];
        blk.idx = block_index((unsigned long long)b, grid);
        blk.first = b * r.block_threads;
        blk.smem = smem + (size_t)b * stride;
        blk.smem_used = r.smem_dynamic;
        blk.smem_static = 0;
        blk.sites.clear();
        fill_poison(blk.smem, r.smem_dynamic);
        place_threads(r, blk, block);
    }
    const bool ok = run_threads(r, sched);
    r.cooperative = false;
    if (ok) return cudaSuccess;
    unpoison_stacks(r);
    if (r.failed_block)
        return fail(cudaErrorLaunchFailure, "kernel %s (cooperative), block (%u, %u, %u): %s", name,
                    r.failed_block->idx.x, r.failed_block->idx.y, r.failed_block->idx.z, r.failure);
    return fail(cudaErrorLaunchFailure, "kernel %s (cooperative, %llu blocks): %s", name, nblocks, r.failure);
}

/* What a GPU checks when a kernel is launched or captured. */
static cudaError_t check_launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t dyn_smem,
                                cudaStream_t stream, const out_region *outs, int num_outs, bool cooperative)
{
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || nthreads > (unsigned long long)kMaxThreads ||
        block.x > 1024 || block.y > 1024 || block.z > 64)
        return fail(cudaErrorInvalidConfiguration, "kernel %s: block (%u, %u, %u) is not a valid block shape", name,
                    block.x, block.y, block.z);
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
        return fail(cudaErrorInvalidConfiguration, "kernel %s: grid (%u, %u, %u) is not a valid grid shape", name,
                    grid.x, grid.y, grid.z);
    const size_t limit = dynamic_smem_limit(kernel);
    if (dyn_smem > limit)
        return fail(cudaErrorInvalidValue,
                    "kernel %s: %zu bytes of dynamic shared memory exceed the %zu allowed (cudaFuncSetAttribute "
                    "raises the limit)",
                    name, dyn_smem, limit);
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "kernel %s: unknown stream %p", name, (void *)stream);
    const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    if (cooperative) {
        const int per_sm = blocks_per_multiprocessor((int)nthreads, dyn_smem);
        if (nblocks > (unsigned long long)per_sm * kMultiprocessors)
            return fail(cudaErrorCooperativeLaunchTooLarge,
                        "kernel %s: a cooperative grid of %llu blocks exceeds the %d that fit on the device at once "
                        "(%d multiprocessors x %d blocks of %llu threads with %zu bytes of dynamic shared memory)",
                        name, nblocks, per_sm * kMultiprocessors, kMultiprocessors, per_sm, nthreads, dyn_smem);
    }
    for (int i = 0; i < num_outs; ++i)
        if (outs[i].bytes != 0 && !is_device_range(outs[i].ptr, outs[i].bytes))
            return fail(cudaErrorInvalidDevicePointer, "kernel %s: output %d (%p, %zu bytes) is not device memory",
                        name, i, outs[i].ptr, outs[i].bytes);
    return cudaSuccess;
}

cudaError_t record_launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t dyn_smem,
                          cudaStream_t stream, const out_region *outs, int num_outs, void (*body)(void *),
                          void *closure, void (*release)(void *), cudaError_t (*check)(const char *, void *),
                          bool cooperative)
{
    std::shared_ptr<void> hold(closure, release);
    bool record = false;
    char what[160];
    std::snprintf(what, sizeof what, "kernel %s", name);
    cudaError_t err = route(stream, what, &record);
    if (err != cudaSuccess) return err;
    if (!record) /* the capture ended meanwhile */
        return run_grid(name, kernel, grid, block, dyn_smem, stream, outs, num_outs, body, closure, cooperative);
    err = check_launch(name, kernel, grid, block, dyn_smem, stream, outs, num_outs, cooperative);
    if (err != cudaSuccess) return err;
    std::vector<out_region> out_list(outs, outs + num_outs);
    std::string kernel_name(name);
    add_node(stream, [=](cudaStream_t s) {
        const cudaError_t args = check(kernel_name.c_str(), hold.get());
        if (args != cudaSuccess) return args;
        return run_grid(kernel_name.c_str(), kernel, grid, block, dyn_smem, s, out_list.data(), (int)out_list.size(),
                        body, hold.get(), cooperative);
    });
    return cudaSuccess;
}

cudaError_t run_grid(const char *name, const void *kernel, dim3 grid, dim3 block, size_t dyn_smem,
                     cudaStream_t stream, const out_region *outs, int num_outs, void (*body)(void *),
                     void *closure, bool cooperative)
{
    g_launch_count++;
    const cudaError_t err = check_launch(name, kernel, grid, block, dyn_smem, stream, outs, num_outs, cooperative);
    if (err != cudaSuccess) return err;
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    for (int i = 0; i < num_outs; ++i)
        if (outs[i].bytes != 0) fill_poison(outs[i].ptr, outs[i].bytes);

    runner &r = get_runner();
    const schedule &sched = current_schedule();
    r.block_threads = (int)nthreads;
    r.body = body;
    r.closure = closure;
    /* as on a GPU: the attribute bounds the dynamic part; static and dynamic together stay within 48 KiB, or
     * within the opt-in maximum once the attribute was raised above that */
    r.smem_limit = dynamic_smem_limit(kernel) > kStaticSmemLimit ? kOptinSmemLimit : kStaticSmemLimit;
    r.smem_dynamic = dyn_smem;
    r.failed = false;
    r.failed_block = nullptr;
    r.rng = sched.seed ^ (g_launch_count.load() * 0xD1B54A32D192ED03ull);
    tls_block.block_dim = block;
    tls_block.grid_dim = grid;
    if (cooperative) return run_cooperative(r, sched, name, grid, block, nblocks);

    r.cooperative = false;
    r.nblocks = 1;
    r.nthreads = r.block_threads;
    ensure_threads(r, r.nthreads);
    if (r.blocks.empty()) r.blocks.resize(1);
    sim_block &blk = r.blocks[0];
    blk.first = 0;
    place_threads(r, blk, block);
    if (r.smem.size() < kOptinSmemLimit) r.smem.resize(kOptinSmemLimit);
    blk.smem = r.smem.data();

    std::vector<unsigned long long> block_order;
    if (sched.kind == SCHED_RANDOM) {
        block_order.resize(nblocks);
        for (unsigned long long i = 0; i < nblocks; ++i) block_order[i] = i;
        for (unsigned long long i = nblocks - 1; i > 0 && nblocks > 1; --i)
            std::swap(block_order[i], block_order[next_random(r.rng) % (i + 1)]);
    }
    for (unsigned long long k = 0; k < nblocks; ++k) {
        unsigned long long b = sched.kind == SCHED_FORWARD ? k
                               : sched.kind == SCHED_REVERSE ? nblocks - 1 - k
                                                             : block_order[k];
        blk.idx = block_index(b, grid);
        tls_block.block_idx = blk.idx;
        fill_poison(r.smem.data(), std::max(r.smem_dirty, dyn_smem));
        r.smem_dirty = dyn_smem;
        blk.smem_used = dyn_smem;
        blk.smem_static = 0;
        blk.sites.clear();
        if (!run_threads(r, sched)) {
            unpoison_stacks(r);
            return fail(cudaErrorLaunchFailure, "kernel %s, block (%u, %u, %u): %s", name, blk.idx.x, blk.idx.y,
                        blk.idx.z, r.failure);
        }
    }
    return cudaSuccess;
}

} /* namespace simt */

using namespace simt;

extern "C" void simt_fiber_main()
{
    runner &r = *t_runner;
    asan_finish(nullptr, &r.main_bottom, &r.main_size);
    sim_thread *t = r.current;
    r.body(r.closure);
    t->status = T_DONE;
    asan_start(nullptr, r.main_bottom, r.main_size);
    fiber_ctx dead;
    fiber_swap(dead, r.sched);
    std::abort(); /* a finished fiber is never resumed */
}

/* ---- control API -------------------------------------------------------- */

extern "C" int simt_set_schedule(const char *spec)
{
    schedule s;
    if (!parse_schedule(spec, &s)) return -1;
    t_schedule = s;
    return 0;
}
extern "C" const char *simt_schedule(void) { return current_schedule().text; }
extern "C" unsigned long long simt_sync_count(void) { return g_sync_count.load(); }
extern "C" unsigned long long simt_launch_count(void) { return g_launch_count.load(); }
extern "C" size_t simt_live_allocations(void)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_allocs.size();
}
extern "C" const char *simt_last_message(void) { return t_message; }
extern "C" void simt_set_stack_size(size_t bytes) { g_stack_bytes = std::max<size_t>(bytes, 16 * 1024); }

/* ---- CUDA runtime shims ------------------------------------------------- */

static cudaError_t device_alloc(void **ptr, size_t bytes, const char *who)
{
    if (ptr == nullptr) return fail(cudaErrorInvalidValue, "%s: ptr is NULL", who);
    *ptr = nullptr;
    if (bytes == 0) return cudaSuccess;
    void *p = nullptr;
    if (posix_memalign(&p, 256, bytes) != 0) return fail(cudaErrorMemoryAllocation, "%s: out of memory", who);
    fill_poison(p, bytes); /* a GPU hands back whatever was there: code that reads before it writes must show */
    std::lock_guard<std::mutex> lock(g_mutex);
    g_allocs[reinterpret_cast<uintptr_t>(p)] = bytes;
    *ptr = p;
    return cudaSuccess;
}

static cudaError_t device_free(void *ptr, const char *who)
{
    if (ptr == nullptr) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        auto it = g_allocs.find(reinterpret_cast<uintptr_t>(ptr));
        if (it == g_allocs.end()) return fail(cudaErrorInvalidValue, "%s: %p is not a device allocation", who, ptr);
        g_allocs.erase(it);
    }
    std::free(ptr);
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count) return cudaErrorInvalidValue;
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "cudaSetDevice: no device %d", device);
}
cudaError_t cudaGetDevice(int *device)
{
    if (!device) return cudaErrorInvalidValue;
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (!value || device != 0) return cudaErrorInvalidValue;
    switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)kStaticSmemLimit; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = kMultiprocessors; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)kOptinSmemLimit; return cudaSuccess;
    case cudaDevAttrCooperativeLaunch: *value = 1; return cudaSuccess;
    }
    return cudaErrorInvalidValue;
}
#define SIMT_REFUSE_IF_CAPTURING(what)                         \
    do {                                                        \
        const cudaError_t refused_ = refuse_if_capturing(what); \
        if (refused_ != cudaSuccess) return refused_;           \
    } while (0)
/* Routes work on `stream`: returns a refusal, or sets `record` */
#define SIMT_ROUTE(stream, what, record)                            \
    do {                                                            \
        const cudaError_t routed_ = route((stream), (what), &record); \
        if (routed_ != cudaSuccess) return routed_;                 \
    } while (0)

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    SIMT_REFUSE_IF_CAPTURING("cudaMalloc");
    g_sync_count++;
    return device_alloc(ptr, bytes, "cudaMalloc");
}
cudaError_t cudaFree(void *ptr)
{
    SIMT_REFUSE_IF_CAPTURING("cudaFree");
    g_sync_count++;
    return device_free(ptr, "cudaFree");
}
cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t stream)
{
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "cudaMallocAsync: unknown stream");
    bool record = false;
    SIMT_ROUTE(stream, "cudaMallocAsync", record);
    if (record) return refuse_in_capture(stream, "cudaMallocAsync during a capture (graph memory nodes are not emulated)");
    return device_alloc(ptr, bytes, "cudaMallocAsync");
}
cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream)
{
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "cudaFreeAsync: unknown stream");
    bool record = false;
    SIMT_ROUTE(stream, "cudaFreeAsync", record);
    if (record) return refuse_in_capture(stream, "cudaFreeAsync during a capture (graph memory nodes are not emulated)");
    return device_free(ptr, "cudaFreeAsync");
}

static cudaError_t checked_copy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, const char *who)
{
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return fail(cudaErrorInvalidValue, "%s: NULL pointer", who);
    const bool dst_dev = is_device_range(dst, bytes), src_dev = is_device_range(src, bytes);
    bool ok = true;
    switch (kind) {
    case cudaMemcpyHostToHost: ok = !dst_dev && !src_dev; break;
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = !dst_dev && src_dev; break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyDefault: ok = true; break;
    }
    if (!ok)
        return fail(cudaErrorInvalidValue, "%s: kind %d but destination is %s memory and source is %s memory", who,
                    (int)kind, dst_dev ? "device" : "host", src_dev ? "device" : "host");
    if (!dst_dev || !src_dev) g_sync_count++; /* a copy touching pageable host memory waits */
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    SIMT_REFUSE_IF_CAPTURING("cudaMemcpy");
    cudaError_t e = checked_copy(dst, src, bytes, kind, "cudaMemcpy");
    if (e == cudaSuccess && is_device_range(dst, bytes) && is_device_range(src, bytes)) g_sync_count++;
    return e;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t stream)
{
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "cudaMemcpyAsync: unknown stream");
    bool record = false;
    SIMT_ROUTE(stream, "cudaMemcpyAsync", record);
    if (!record) return checked_copy(dst, src, bytes, kind, "cudaMemcpyAsync");
    if (bytes == 0) return cudaSuccess;
    if (!is_device_range(dst, bytes) || !is_device_range(src, bytes) ||
        (kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault))
        return refuse_in_capture(stream, "cudaMemcpyAsync touching host memory during a capture");
    add_node(stream, [=](cudaStream_t s) { return cudaMemcpyAsync(dst, src, bytes, kind, s); });
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream)
{
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "cudaMemsetAsync: unknown stream");
    bool record = false;
    SIMT_ROUTE(stream, "cudaMemsetAsync", record);
    if (bytes == 0) return cudaSuccess;
    if (!is_device_range(ptr, bytes))
        return fail(cudaErrorInvalidValue, "cudaMemsetAsync: %p (%zu bytes) is not device memory", ptr, bytes);
    if (record)
        add_node(stream, [=](cudaStream_t s) { return cudaMemsetAsync(ptr, value, bytes, s); });
    else
        std::memset(ptr, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *ptr, int value, size_t bytes)
{
    SIMT_REFUSE_IF_CAPTURING("cudaMemset");
    g_sync_count++;
    return cudaMemsetAsync(ptr, value, bytes, nullptr);
}
cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    if (!stream) return cudaErrorInvalidValue;
    simt_stream *s = new simt_stream();
    std::lock_guard<std::mutex> lock(g_mutex);
    g_streams.insert(s);
    *stream = s;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (!g_streams.erase(stream)) return fail(cudaErrorInvalidValue, "cudaStreamDestroy: unknown stream");
        if (stream->capturing) { /* the capture ends with its stream */
            g_captures--;
            if (stream->strict) g_strict_captures--;
        }
    }
    delete stream;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "cudaStreamSynchronize: unknown stream");
    bool record = false;
    SIMT_ROUTE(stream, "cudaStreamSynchronize", record);
    if (record) return refuse_in_capture(stream, "cudaStreamSynchronize of a capturing stream");
    g_sync_count++;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void)
{
    SIMT_REFUSE_IF_CAPTURING("cudaDeviceSynchronize");
    g_sync_count++;
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    if (stream == nullptr)
        return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture: capture may not begin on the legacy stream");
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return fail(cudaErrorInvalidValue, "cudaStreamBeginCapture: unknown mode %d", (int)mode);
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_streams.count(stream)) return fail(cudaErrorInvalidValue, "cudaStreamBeginCapture: unknown stream");
    if (stream->capturing) return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: the stream is already capturing");
    stream->capturing = true;
    stream->strict = mode != cudaStreamCaptureModeRelaxed;
    stream->invalidated = false;
    stream->why.clear();
    stream->nodes.clear();
    g_captures++;
    if (stream->strict) g_strict_captures++;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    if (graph == nullptr) return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: graph is NULL");
    *graph = nullptr;
    std::lock_guard<std::mutex> lock(g_mutex);
    if (stream == nullptr || !g_streams.count(stream) || !stream->capturing)
        return fail(cudaErrorIllegalState, "cudaStreamEndCapture: the stream is not capturing");
    stream->capturing = false;
    g_captures--;
    if (stream->strict) g_strict_captures--;
    if (stream->invalidated)
        return fail(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture: the capture was invalidated: %s",
                    stream->why.c_str());
    *graph = new simt_graph{std::move(stream->nodes)};
    stream->nodes.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status)
{
    if (status == nullptr) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: status is NULL");
    *status = cudaStreamCaptureStatusNone;
    if (stream == nullptr)
        return g_captures.load() == 0 ? cudaSuccess
                                      : fail(cudaErrorStreamCaptureImplicit,
                                             "cudaStreamIsCapturing: the legacy stream while a stream is capturing");
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!g_streams.count(stream)) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: unknown stream");
    if (stream->capturing)
        *status = stream->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    if (exec == nullptr || graph == nullptr || flags != 0)
        return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: NULL argument or unsupported flags");
    *exec = new simt_graph_exec{graph->nodes};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    if (exec == nullptr) return fail(cudaErrorInvalidValue, "cudaGraphLaunch: exec is NULL");
    if (!stream_ok(stream)) return fail(cudaErrorInvalidValue, "cudaGraphLaunch: unknown stream");
    bool record = false;
    SIMT_ROUTE(stream, "cudaGraphLaunch", record);
    if (record) return refuse_in_capture(stream, "cudaGraphLaunch into a capture (child graphs are not emulated)");
    for (const simt_node &node : exec->nodes) {
        const cudaError_t err = node(stream);
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void)
{
    cudaError_t e = t_last_error;
    t_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }
const char *cudaGetErrorName(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    }
    return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    }
    return "unknown error";
}
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr)
{
    if (!attr) return cudaErrorInvalidValue;
    const bool dev = ptr && is_device_range(ptr, 1);
    attr->type = dev ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
    attr->device = dev ? 0 : -1;
    attr->devicePointer = dev ? const_cast<void *>(ptr) : nullptr;
    attr->hostPointer = nullptr;
    return cudaSuccess;
}
