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
 * Nothing is allocated: the caller owns every buffer (struct charrnn_net).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define CHARRNN_DPBF16 1
#else
#define CHARRNN_DPBF16 0
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
        y[r] = round_bf16(_mm512_reduce_add_ps(a0));
        y[r + 1] = round_bf16(_mm512_reduce_add_ps(a1));
        y[r + 2] = round_bf16(_mm512_reduce_add_ps(a2));
        y[r + 3] = round_bf16(_mm512_reduce_add_ps(a3));
    }
    for (; r < rows; r++) {
        __m512 a = _mm512_setzero_ps();
        int k;
        for (k = 0; k < stride; k += 32)
            a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(w + (size_t)r * stride + k),
                                 (__m512bh)_mm512_loadu_si512(x + k));
        y[r] = round_bf16(_mm512_reduce_add_ps(a));
    }
#else
    for (; r < rows; r++) {
        const uint16_t *row = w + (size_t)r * stride;
        float a = 0.0f;
        int k;
        for (k = 0; k < stride; k++) a += from_bf16(row[k]) * from_bf16(x[k]);
        y[r] = round_bf16(a);
    }
#endif
    if (add)
        for (r = 0; r < rows; r++) y[r] += add[r];
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

static void lstm_layer(const struct charrnn_net *n, int l, int id, float *h, float *c)
{
    const int H = n->hidden, S = n->stride;
    float *g = n->sum, *hl = h + (size_t)l * H, *cl = c + (size_t)l * H;
    int k;
    if (l == 0) {
        put_input(n->input, hl, H, S);
        product(g, n->w[0], n->input, n->gates, S, n->table + (size_t)id * n->gates);
    } else {
        put_input(n->input, hl - H, H, S);
        put_input(n->input + S, hl, H, S);
        product(g, n->w[l], n->input, n->gates, 2 * S, n->b[l]);
    }
    for (k = 0; k < n->gates; k++) g[k] = fast_tanh(g[k]);
    for (k = 0; k < 3 * H; k++) g[k] = 0.5f * g[k] + 0.5f;
    for (k = 0; k < H; k++) {
        cl[k] = cl[k] * g[H + k] + g[k] * g[3 * H + k];
        hl[k] = g[2 * H + k] * fast_tanh(cl[k]);
    }
}

static void rnn_layer(const struct charrnn_net *n, int l, int id, float *h)
{
    const int H = n->hidden, S = n->stride;
    float *g = n->sum, *hl = h + (size_t)l * H;
    int k;
    if (l == 0) {
        put_input(n->input, hl, H, S);
        product(g, n->w[0], n->input, H, S, n->table + (size_t)id * n->gates);
    } else {
        put_input(n->input, hl - H, H, S);
        put_input(n->input + S, hl, H, S);
        product(g, n->w[l], n->input, H, 2 * S, n->b[l]);
    }
    for (k = 0; k < H; k++) hl[k] = fast_tanh(g[k]);
}

static void gru_layer(const struct charrnn_net *n, int l, int id, float *h)
{
    const int H = n->hidden, S = n->stride;
    float *gh = n->sum, *gi = n->sum_ih, *hl = h + (size_t)l * H;
    int k;
    if (l == 0) {
        memcpy(gi, n->table + (size_t)id * n->gates, sizeof(float) * (size_t)n->gates);
    } else {
        put_input(n->input, hl - H, H, S);
        product(gi, n->w_ih[l], n->input, n->gates, S, n->b_ih[l]);
    }
    put_input(n->input, hl, H, S);
    product(gh, n->w[l], n->input, n->gates, S, n->b[l]);
    for (k = 0; k < 2 * H; k++) gh[k] = 0.5f * fast_tanh(gi[k] + gh[k]) + 0.5f;
    for (k = 0; k < H; k++) {
        float cand = fast_tanh(gh[2 * H + k] * gh[k] + gi[2 * H + k]);
        hl[k] = (hl[k] - cand) * gh[H + k] + cand;
    }
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
