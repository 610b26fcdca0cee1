/* One generation step of one stream, the products in bf16: the fast stepper's single-row
 * path in bf16 (charrnn.generation.stepper), compiled on first use by charrnn.generation.native.
 *
 * Why C: a row's product is a matrix-vector product, bound by reading the weights. numpy has
 * no bf16 type, so the numpy path multiplies bf16 values widened to fp32 (twice the bytes) and
 * rounds its inputs and outputs in extra passes; torch's one-row bf16 product is slower still.
 * Here the weights stay bf16 (half the bytes: a 2x256 LSTM's 1.6 MB fit a 2 MB L2 cache) and
 * AVX512_BF16's dot-product instruction multiplies 32 pairs at a time, summing in fp32.
 *
 * The arithmetic is the numpy path's: every product's input is rounded to bf16 first and its
 * result after, as torch's bf16 product rounds them; biases, gates and states are fp32. The
 * layouts are the fast stepper's: LSTM gate rows i, f, o, g; sigmoid rows pre-halved, so one
 * tanh covers a layer's gates and sigmoid(x) = (1 + tanh(x/2)) / 2. A deeper LSTM/RNN layer
 * multiplies [h of the layer below; its own h] by one stacked matrix. Every matrix's rows are
 * padded with zeros to a multiple of 32 columns (``stride``), and so are the inputs.
 *
 * Several rows (charrnn_bf16_steps) multiply with AMX where the CPU and the OS allow it: one
 * tile instruction multiplies 16 rows by 16 outputs over 32 inputs, so a step of 32 streams
 * reads each weight once, where the one-row loop would read it 32 times. The weights are then
 * also kept in AMX's pair-interleaved layout (charrnn_amx_pack). Without AMX the caller keeps
 * torch's batched product.
 *
 * Nothing is allocated: the caller owns every buffer (struct charrnn_net, struct charrnn_batch).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define CHARRNN_DPBF16 1
#else
#define CHARRNN_DPBF16 0
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#define CHARRNN_AMX 1
#else
#define CHARRNN_AMX 0
#endif

enum { CELL_LSTM = 0, CELL_GRU = 1, CELL_RNN = 2 };

struct charrnn_net {
    int32_t cell, layers, hidden, stride, vocab, gates;
    const float *table;           /* (vocab ids, gates): layer 0's input product and bias */
    const uint16_t *const *w;     /* LSTM/RNN: layer l's (gates, K) stacked; GRU: w_hh (gates, stride) */
    const float *const *b;        /* LSTM/RNN: layer l's bias (l >= 1); GRU: b_hh */
    const uint16_t *const *w_ih;  /* GRU, layers >= 1: (gates, stride) */
    const float *const *b_ih;     /* GRU, layers >= 1 */
    const uint16_t *w_dec;        /* (vocab, stride) */
    const float *b_dec;
    float *sum;                   /* scratch: gates floats */
    float *sum_ih;                /* scratch (GRU): gates floats */
    uint16_t *input;              /* scratch: 2 * stride bf16 values */
};

/* Nearest bf16, ties to even, as torch's cast rounds (finite values). */
static inline uint16_t to_bf16(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float from_bf16(uint16_t v)
{
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float round_bf16(float v) { return from_bf16(to_bf16(v)); }

/* input[0 .. n) = bf16(x), input[n .. padded) = 0 */
static void put_input(uint16_t *input, const float *x, int n, int padded)
{
    int k;
    for (k = 0; k < n; k++) input[k] = to_bf16(x[k]);
    for (; k < padded; k++) input[k] = 0;
}

/* A product's fp32 sums rounded to bf16, as torch's bf16 product rounds its result, then the
   fp32 add[k] (a bias or layer 0's table row; may be NULL). */
static void finish_sums(float *g, int outputs, const float *add)
{
    int k;
    if (add)
        for (k = 0; k < outputs; k++) g[k] = round_bf16(g[k]) + add[k];
    else
        for (k = 0; k < outputs; k++) g[k] = round_bf16(g[k]);
}

/* y[r] = bf16(sum_k w[r][k] * x[k]) + add[r] (add may be NULL), x bf16 of length stride. */
static void product(float *y, const uint16_t *w, const uint16_t *x, int rows, int stride, const float *add)
{
    int r = 0;
#if CHARRNN_DPBF16
    for (; r + 4 <= rows; r += 4) {
        const uint16_t *w0 = w + (size_t)r * stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int k;
        for (k = 0; k < stride; k += 32) {
            __m512bh xk = (__m512bh)_mm512_loadu_si512(x + k);
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + k), xk);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w0 + stride + k), xk);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(w0 + 2 * stride + k), xk);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(w0 + 3 * stride + k), xk);
        }
        y[r] = _mm512_reduce_add_ps(a0);
        y[r + 1] = _mm512_reduce_add_ps(a1);
        y[r + 2] = _mm512_reduce_add_ps(a2);
        y[r + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; r < rows; r++) {
        __m512 a = _mm512_setzero_ps();
        int k;
        for (k = 0; k < stride; k += 32)
            a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(w + (size_t)r * stride + k),
                                 (__m512bh)_mm512_loadu_si512(x + k));
        y[r] = _mm512_reduce_add_ps(a);
    }
#else
    for (; r < rows; r++) {
        const uint16_t *row = w + (size_t)r * stride;
        float a = 0.0f;
        int k;
        for (k = 0; k < stride; k++) a += from_bf16(row[k]) * from_bf16(x[k]);
        y[r] = a;
    }
#endif
    finish_sums(y, rows, add);
}

/* tanh as a rational function (Eigen's fast tanh for float: a few ulp in [-7.9, 7.9],
   saturated beyond), branch-free so that the compiler vectorizes the loops that call it. */
static inline float fast_tanh(float x)
{
    const float limit = 7.90531110763549805f;
    float c = x < -limit ? -limit : (x > limit ? limit : x);
    float x2 = c * c;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * c;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float t = p / q;
    return fabsf(x) < 0.0004f ? x : t;
}

/* The gates of one LSTM row, g (gates) holding the layer's sums: h and c of the layer in place. */
static void lstm_gates(float *g, float *hl, float *cl, int H)
{
    int k;
    for (k = 0; k < 4 * H; k++) g[k] = fast_tanh(g[k]);
    for (k = 0; k < 3 * H; k++) g[k] = 0.5f * g[k] + 0.5f;
    for (k = 0; k < H; k++) {
        cl[k] = cl[k] * g[H + k] + g[k] * g[3 * H + k];
        hl[k] = g[2 * H + k] * fast_tanh(cl[k]);
    }
}

static void rnn_gates(const float *g, float *hl, int H)
{
    int k;
    for (k = 0; k < H; k++) hl[k] = fast_tanh(g[k]);
}

/* gi: the input side's sums (with bias), gh: the recurrent side's (with bias). */
static void gru_gates(float *gh, const float *gi, float *hl, int H)
{
    int k;
    for (k = 0; k < 2 * H; k++) gh[k] = 0.5f * fast_tanh(gi[k] + gh[k]) + 0.5f;
    for (k = 0; k < H; k++) {
        float cand = fast_tanh(gh[2 * H + k] * gh[k] + gi[2 * H + k]);
        hl[k] = (hl[k] - cand) * gh[H + k] + cand;
    }
}

static void lstm_layer(const struct charrnn_net *n, int l, int id, float *h, float *c)
{
    const int H = n->hidden, S = n->stride;
    float *g = n->sum, *hl = h + (size_t)l * H, *cl = c + (size_t)l * H;
    if (l == 0) {
        put_input(n->input, hl, H, S);
        product(g, n->w[0], n->input, n->gates, S, n->table + (size_t)id * n->gates);
    } else {
        put_input(n->input, hl - H, H, S);
        put_input(n->input + S, hl, H, S);
        product(g, n->w[l], n->input, n->gates, 2 * S, n->b[l]);
    }
    lstm_gates(g, hl, cl, H);
}

static void rnn_layer(const struct charrnn_net *n, int l, int id, float *h)
{
    const int H = n->hidden, S = n->stride;
    float *g = n->sum, *hl = h + (size_t)l * H;
    if (l == 0) {
        put_input(n->input, hl, H, S);
        product(g, n->w[0], n->input, H, S, n->table + (size_t)id * n->gates);
    } else {
        put_input(n->input, hl - H, H, S);
        put_input(n->input + S, hl, H, S);
        product(g, n->w[l], n->input, H, 2 * S, n->b[l]);
    }
    rnn_gates(g, hl, H);
}

static void gru_layer(const struct charrnn_net *n, int l, int id, float *h)
{
    const int H = n->hidden, S = n->stride;
    float *gh = n->sum, *gi = n->sum_ih, *hl = h + (size_t)l * H;
    if (l == 0) {
        memcpy(gi, n->table + (size_t)id * n->gates, sizeof(float) * (size_t)n->gates);
    } else {
        put_input(n->input, hl - H, H, S);
        product(gi, n->w_ih[l], n->input, n->gates, S, n->b_ih[l]);
    }
    put_input(n->input, hl, H, S);
    product(gh, n->w[l], n->input, n->gates, S, n->b[l]);
    gru_gates(gh, gi, hl, H);
}

/* Feed ``id``: h (layers * hidden) and c (LSTM: layers * hidden) become the next state, in
   place, and logits (vocab) the next character's. */
void charrnn_bf16_step(const struct charrnn_net *n, int id, float *h, float *c, float *logits)
{
    int l;
    for (l = 0; l < n->layers; l++) {
        if (n->cell == CELL_LSTM)
            lstm_layer(n, l, id, h, c);
        else if (n->cell == CELL_GRU)
            gru_layer(n, l, id, h);
        else
            rnn_layer(n, l, id, h);
    }
    put_input(n->input, h + (size_t)(n->layers - 1) * n->hidden, n->hidden, n->stride);
    product(logits, n->w_dec, n->input, n->vocab, n->stride, n->b_dec);
}

/* Whether this build multiplies with AVX512_BF16 (1) or widens to fp32 in plain C (0). */
int charrnn_bf16_native(void) { return CHARRNN_DPBF16; }

/* ---- several rows at once, with AMX ------------------------------------------------------- */

/* The matrices in AMX's layout and the scratch of a batch of up to ``capacity`` rows. */
struct charrnn_batch {
    int32_t capacity;             /* rows the scratch holds, a multiple of 16 */
    int32_t width;                /* floats per row of sum and sum_ih: the most outputs, padded to 32 */
    const uint16_t *const *w;     /* charrnn_amx_pack of net.w[l] */
    const uint16_t *const *w_ih;  /* of net.w_ih[l] (GRU, l >= 1) */
    const uint16_t *w_dec;        /* of net.w_dec */
    float *sum;                   /* capacity x width */
    float *sum_ih;                /* capacity x width (GRU) */
    uint16_t *input;              /* capacity x 2 * stride */
};

/* Outputs of a packed matrix: ``rows`` padded to two tiles' 32 columns. */
int charrnn_amx_outputs(int rows) { return (rows + 31) / 32 * 32; }

/* w (rows, k) bf16 row-major, k a multiple of 32, into out (charrnn_amx_outputs(rows) * k
   values): for each block of 16 outputs and each block of 32 inputs, one 1 KB tile whose row r
   holds, for each output j of the block, inputs 2r and 2r + 1 side by side (the pairs that
   TDPBF16PS multiplies); zero past the matrix's rows. */
void charrnn_amx_pack(const uint16_t *w, int rows, int k, uint16_t *out)
{
    int blocks = charrnn_amx_outputs(rows) / 16, kb, ob, r, j, p;
    for (ob = 0; ob < blocks; ob++)
        for (kb = 0; kb < k / 32; kb++) {
            uint16_t *tile = out + ((size_t)ob * (k / 32) + kb) * 512;
            for (r = 0; r < 16; r++)
                for (j = 0; j < 16; j++)
                    for (p = 0; p < 2; p++) {
                        int row = ob * 16 + j;
                        tile[r * 32 + j * 2 + p] = row < rows ? w[(size_t)row * k + kb * 32 + 2 * r + p] : 0;
                    }
        }
}

#if CHARRNN_AMX
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* y (R x outputs, row stride ld floats) = x (R x k bf16) . packed^T, R a multiple of 16.
   Tiles: 0-3 sums (two row blocks by two output blocks), 4-5 inputs, 6-7 weights. */
static void amx_product(float *y, int ld, const uint16_t *packed, int outputs, const uint16_t *x, int R, int k)
{
    const int kblocks = k / 32;
    const size_t xs = (size_t)k * 2, ys = (size_t)ld * 4;
    int ob, rb, kb;
    for (ob = 0; ob < outputs / 16; ob += 2) {
        const uint16_t *b0 = packed + (size_t)ob * kblocks * 512, *b1 = b0 + (size_t)kblocks * 512;
        for (rb = 0; rb + 2 <= R / 16; rb += 2) {
            const uint16_t *a0 = x + (size_t)rb * 16 * k, *a1 = a0 + (size_t)16 * k;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (kb = 0; kb < kblocks; kb++) {
                _tile_loadd(4, a0 + kb * 32, xs);
                _tile_loadd(5, a1 + kb * 32, xs);
                _tile_loadd(6, b0 + (size_t)kb * 512, 64);
                _tile_loadd(7, b1 + (size_t)kb * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            float *y0 = y + (size_t)rb * 16 * ld + ob * 16;
            _tile_stored(0, y0, ys);
            _tile_stored(1, y0 + 16, ys);
            _tile_stored(2, y0 + (size_t)16 * ld, ys);
            _tile_stored(3, y0 + (size_t)16 * ld + 16, ys);
        }
        if (rb < R / 16) {  /* an odd last block of 16 rows */
            const uint16_t *a0 = x + (size_t)rb * 16 * k;
            _tile_zero(0); _tile_zero(1);
            for (kb = 0; kb < kblocks; kb++) {
                _tile_loadd(4, a0 + kb * 32, xs);
                _tile_loadd(6, b0 + (size_t)kb * 512, 64);
                _tile_loadd(7, b1 + (size_t)kb * 512, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
            }
            float *y0 = y + (size_t)rb * 16 * ld + ob * 16;
            _tile_stored(0, y0, ys);
            _tile_stored(1, y0 + 16, ys);
        }
    }
}

/* The batch's input: for each of ``rows`` rows, the h of ``layers`` layers from ``first`` on,
   each as bf16 padded to S (1 layer: its own h; 2: [h below; own h]), one row after another;
   rows up to R all zero (AMX multiplies whole tiles). */
static void put_rows(uint16_t *input, const float *h, int rows, int R, int L, int H, int S, int first, int layers)
{
    const int k = layers * S;
    int i, j;
    for (i = 0; i < R; i++) {
        uint16_t *in = input + (size_t)i * k;
        if (i >= rows) {
            memset(in, 0, sizeof(uint16_t) * k);
            continue;
        }
        for (j = 0; j < layers; j++) put_input(in + j * S, h + (size_t)i * L * H + (size_t)(first + j) * H, H, S);
    }
}
#endif

/* Whether charrnn_bf16_steps can run here: built with AMX, and the OS lets this process use
   the tile registers (Linux asks a process to request them; 0 where it refuses). */
int charrnn_amx_ready(void)
{
#if CHARRNN_AMX
    static int ready = -1;
    if (ready < 0) ready = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return ready;
#else
    return 0;
#endif
}

/* Feed rows ids[0 .. rows): h (rows, layers * hidden) and c (layers, rows, hidden) become the
   next states, in place, and logits (rows, vocab) the next characters'. The arithmetic of
   charrnn_bf16_step for each row, its sums taken in another order. rows <= b->capacity;
   only after charrnn_amx_ready() gave 1. */
void charrnn_bf16_steps(const struct charrnn_net *n, const struct charrnn_batch *b, int rows, const int64_t *ids,
                        float *h, float *c, float *logits)
{
#if CHARRNN_AMX
    const int H = n->hidden, S = n->stride, L = n->layers, W = b->width;
    const int R = (rows + 15) / 16 * 16;
    const int gates_out = charrnn_amx_outputs(n->cell == CELL_RNN ? H : n->gates);
    struct tile_config cfg;
    int l, i;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
    for (l = 0; l < L; l++) {
        /* the input of every row: [h of the layer below; own h] (LSTM/RNN), own h (GRU, layer 0) */
        const int stacked = n->cell != CELL_GRU && l > 0, k = stacked ? 2 * S : S;
        if (n->cell == CELL_GRU && l > 0) {
            put_rows(b->input, h, rows, R, L, H, S, l - 1, 1);
            amx_product(b->sum_ih, W, b->w_ih[l], gates_out, b->input, R, S);
        }
        put_rows(b->input, h, rows, R, L, H, S, stacked ? l - 1 : l, stacked ? 2 : 1);
        amx_product(b->sum, W, b->w[l], gates_out, b->input, R, k);
        for (i = 0; i < rows; i++) {
            float *g = b->sum + (size_t)i * W, *hl = h + (size_t)i * L * H + (size_t)l * H;
            if (n->cell == CELL_GRU) {
                float *gi = b->sum_ih + (size_t)i * W;
                if (l == 0) memcpy(gi, n->table + (size_t)ids[i] * n->gates, sizeof(float) * (size_t)n->gates);
                else finish_sums(gi, n->gates, n->b_ih[l]);
                finish_sums(g, n->gates, n->b[l]);
                gru_gates(g, gi, hl, H);
            } else {
                const int outputs = n->cell == CELL_RNN ? H : n->gates;
                finish_sums(g, outputs, l == 0 ? n->table + (size_t)ids[i] * n->gates : n->b[l]);
                if (n->cell == CELL_LSTM) lstm_gates(g, hl, c + ((size_t)l * rows + i) * H, H);
                else rnn_gates(g, hl, H);
            }
        }
    }
    put_rows(b->input, h, rows, R, L, H, S, L - 1, 1);
    amx_product(b->sum, W, b->w_dec, charrnn_amx_outputs(n->vocab), b->input, R, S);
    for (i = 0; i < rows; i++) {
        float *g = b->sum + (size_t)i * W;
        finish_sums(g, n->vocab, n->b_dec);
        memcpy(logits + (size_t)i * n->vocab, g, sizeof(float) * (size_t)n->vocab);
    }
    _tile_release();
#else
    (void)n; (void)b; (void)rows; (void)ids; (void)h; (void)c; (void)logits;
#endif
}
