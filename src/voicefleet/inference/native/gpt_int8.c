/*
 * voicefleet native CPU kernels for the quantised GPT's decoding steps.
 *
 * vf_int8_rows: y = x W^T * scale (+ bias) for a few rows of x, with W stored as int8 (one scale
 * per output channel). A decoding step multiplies one row per sequence and is bound by reading
 * the weights.
 *
 * vf_gpt_step: one whole decoding step (every layer) for one new position per row, so that a
 * step costs one call instead of ~30 tensor operations per layer; optionally with a LoRA
 * adapter's low-rank update added to each linear's output (unmerged: the weights stay shared).
 *
 * Weights are packed so that a thread reads them in one sequential stream: blocks of 4 output
 * channels; in a block, for each run of 16 inputs, the 4 channels' 16 int8 values one after the
 * other (shape [N/4][K/16][4][16]). Each weight vector is widened to fp32 once and multiplied
 * with up to 4 rows of x, so activations keep full fp32 precision and the only rounding is the
 * weights' own quantisation. Sums run in fp32 over 16 lanes, then across lanes.
 *
 * Needs AVX-512F; the caller checks the CPU before loading this library.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VF_BLOCK 4   /* output channels per packed block */
#define VF_CHUNK 16  /* inputs per packed run */

int vf_abi_version(void) { return 4; }

static inline __attribute__((always_inline)) void vf_tile(
    const float *x, int64_t ldx, int64_t K, const int8_t *wb, const float *scale, const float *bias,
    float *y, int64_t ldy, int channels, const int rows) {
  __m512 acc[4][VF_BLOCK];
  for (int m = 0; m < rows; m++)
    for (int c = 0; c < VF_BLOCK; c++) acc[m][c] = _mm512_setzero_ps();
  const int8_t *w = wb;
  for (int64_t k = 0; k < K; k += VF_CHUNK, w += VF_CHUNK * VF_BLOCK) {
    __m512 wv[VF_BLOCK];
    for (int c = 0; c < VF_BLOCK; c++)
      wv[c] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + c * VF_CHUNK))));
    for (int m = 0; m < rows; m++) {
      __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
      for (int c = 0; c < VF_BLOCK; c++) acc[m][c] = _mm512_fmadd_ps(wv[c], xv, acc[m][c]);
    }
  }
  for (int m = 0; m < rows; m++)
    for (int c = 0; c < channels; c++) {
      float v = _mm512_reduce_add_ps(acc[m][c]) * scale[c];
      y[m * ldy + c] = bias ? v + bias[c] : v;
    }
}

/*
 * x: (M, K) fp32 rows, ldx apart; wp: packed int8 weights of N output channels (N rounded up to
 * a multiple of 4, padding channels zero); scale, bias: N fp32 (bias may be NULL);
 * y: (M, N) fp32 rows, ldy apart. K must be a multiple of 16.
 */
void vf_int8_rows(const float *x, int64_t M, int64_t ldx, int64_t K, const int8_t *wp, int64_t N,
                  const float *scale, const float *bias, float *y, int64_t ldy, int threads) {
  const int64_t blocks = (N + VF_BLOCK - 1) / VF_BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t n0 = b * VF_BLOCK;
    const int channels = (int)(N - n0 < VF_BLOCK ? N - n0 : VF_BLOCK);
    const int8_t *wb = wp + n0 * K;
    const float *bb = bias ? bias + n0 : 0;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const float *xm = x + m0 * ldx;
      float *ym = y + m0 * ldy + n0;
      switch (M - m0 < 4 ? M - m0 : 4) {
        case 1: vf_tile(xm, ldx, K, wb, scale + n0, bb, ym, ldy, channels, 1); break;
        case 2: vf_tile(xm, ldx, K, wb, scale + n0, bb, ym, ldy, channels, 2); break;
        case 3: vf_tile(xm, ldx, K, wb, scale + n0, bb, ym, ldy, channels, 3); break;
        default: vf_tile(xm, ldx, K, wb, scale + n0, bb, ym, ldy, channels, 4); break;
      }
    }
  }
}

/* One linear layer as the step sees it (packed as for vf_int8_rows). */
typedef struct {
  const int8_t *weight;
  const float *scale;
  const float *bias;
  int64_t out_features, in_features;
} vf_linear;

/* One post-norm decoder layer: h = norm1(h + out(attn(qkv(h)))); h = norm2(h + down(relu(up(h)))). */
typedef struct {
  vf_linear qkv, out, up, down;
  const float *norm1_weight, *norm1_bias, *norm2_weight, *norm2_bias;
  double norm1_eps, norm2_eps;
} vf_layer;

/* A linear's LoRA update: y += (x a^T) bt, a (rank, in) and bt (rank, out) fp32, bt being B
 * transposed with the scaling folded in. a == NULL: the linear is not adapted. */
typedef struct {
  const float *a;
  const float *bt;
  int64_t rank;
} vf_update;

/* The quantised product of m rows, plus the update u (may be NULL) on every row; t: rank scratch. */
static void vf_linear_rows(const vf_linear *l, const vf_update *u, const float *x, int64_t m, float *y, float *t,
                           int threads) {
  const int64_t in = l->in_features, out = l->out_features;
  vf_int8_rows(x, m, in, in, l->weight, out, l->scale, l->bias, y, out, threads);
  if (!u || !u->a) return;
  /* rank x (in + out) per row against in x out for the product: small enough for one thread */
  for (int64_t r = 0; r < m; r++) {
    const float *xr = x + r * in;
    for (int64_t j = 0; j < u->rank; j++) {
      const float *a = u->a + j * in;
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < in; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(xr + i), acc);
      t[j] = _mm512_reduce_add_ps(acc);
    }
    float *yr = y + r * out;
    for (int64_t j = 0; j < u->rank; j++) {
      const float tj = t[j], *b = u->bt + j * out;
      for (int64_t o = 0; o < out; o++) yr[o] += tj * b[o];
    }
  }
}

/* h[r] = layer_norm(h[r] + add[r]) for each of m rows of width dim (biased variance, as torch). */
static void vf_add_norm(float *h, const float *add, int64_t m, int64_t dim, const float *w, const float *b,
                        double eps) {
  for (int64_t r = 0; r < m; r++) {
    float *x = h + r * dim;
    const float *a = add + r * dim;
    float mean = 0.f;
    for (int64_t i = 0; i < dim; i++) {
      x[i] += a[i];
      mean += x[i];
    }
    mean /= (float)dim;
    float var = 0.f;
    for (int64_t i = 0; i < dim; i++) {
      const float d = x[i] - mean;
      var += d * d;
    }
    var /= (float)dim;
    const float inv = 1.f / sqrtf(var + (float)eps);
    for (int64_t i = 0; i < dim; i++) x[i] = (x[i] - mean) * inv * w[i] + b[i];
  }
}

/* fp16 storage of the KV cache: 16 values at a time (head_dim is a multiple of 16). */
static inline __m512 vf_load_half(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline void vf_store_half(uint16_t *p, __m512 v) {
  const __m512 top = _mm512_set1_ps(65504.f); /* the largest finite fp16: no infinities in the cache */
  v = _mm512_max_ps(_mm512_min_ps(v, top), _mm512_sub_ps(_mm512_setzero_ps(), top));
  _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* Attention of one query (head_dim fp32) over `length` fp16 keys/values; writes out (head_dim). */
static void vf_attend(const float *q, const uint16_t *K, const uint16_t *V, int64_t length, int64_t head_dim,
                      float scale, const float *bias, float *s, float *out) {
  float top = -INFINITY;
  for (int64_t j = 0; j < length; j++) {
    const uint16_t *k = K + j * head_dim;
    __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(q), vf_load_half(k));
    for (int64_t d = 16; d < head_dim; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), vf_load_half(k + d), acc);
    float v = _mm512_reduce_add_ps(acc) * scale;
    if (bias) v += bias[j];
    s[j] = v;
    if (v > top) top = v;
  }
  float total = 0.f;
  for (int64_t j = 0; j < length; j++) {
    s[j] = expf(s[j] - top);
    total += s[j];
  }
  const float inv = 1.f / total;
  for (int64_t d = 0; d < head_dim; d += 16) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < length; j++) acc = _mm512_fmadd_ps(_mm512_set1_ps(s[j]), vf_load_half(V + j * head_dim + d), acc);
    _mm512_storeu_ps(out + d, _mm512_mul_ps(acc, _mm512_set1_ps(inv)));
  }
}

/*
 * One decoding step. h: (m, dim) fp32, the embedded new token of each row, replaced by the last
 * layer's output. kv: (layers, 2, m, heads, capacity, head_dim) fp16; positions 0..length-2 hold
 * the cache and this step writes position length-1 (rounded to fp16, clamped to its range).
 * key_bias: (m, length) additive fp32 (0 or -inf), or NULL for none. head_dim must be a multiple
 * of 16. updates: NULL, or 4 per layer (qkv, out, up, down) added to those linears' outputs.
 * Returns 0, or -1 when scratch memory cannot be allocated.
 */
int vf_gpt_step(const vf_layer *layers, int64_t n_layers, float *h, int64_t m, int64_t dim, int64_t heads,
                uint16_t *kv, int64_t capacity, int64_t length, const float *key_bias, int threads,
                const vf_update *updates) {
  const int64_t head_dim = dim / heads;
  const int64_t hidden = layers[0].up.out_features;
  const int64_t pos = length - 1;
  const float scale = 1.f / sqrtf((float)head_dim);
  float *qkv = malloc(sizeof(float) * m * 3 * dim);
  float *att = malloc(sizeof(float) * m * dim);
  float *tmp = malloc(sizeof(float) * m * (hidden > dim ? hidden : dim));
  float *scores = malloc(sizeof(float) * m * heads * length);
  int64_t rank = 1;
  for (int64_t i = 0; updates && i < 4 * n_layers; i++)
    if (updates[i].a && updates[i].rank > rank) rank = updates[i].rank;
  float *t = malloc(sizeof(float) * rank);
  if (!qkv || !att || !tmp || !scores || !t) {
    free(qkv); free(att); free(tmp); free(scores); free(t);
    return -1;
  }
  const int64_t plane = m * heads * capacity * head_dim; /* keys (or values) of one layer */
  for (int64_t li = 0; li < n_layers; li++) {
    const vf_layer *L = layers + li;
    uint16_t *keys = kv + (2 * li) * plane, *values = kv + (2 * li + 1) * plane;
    const vf_update *U = updates ? updates + 4 * li : 0;
    vf_linear_rows(&L->qkv, U, h, m, qkv, t, threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t rh = 0; rh < m * heads; rh++) {
      const int64_t r = rh / heads, hd = rh % heads;
      const float *q = qkv + r * 3 * dim + hd * head_dim;
      uint16_t *K = keys + rh * capacity * head_dim, *V = values + rh * capacity * head_dim;
      for (int64_t d = 0; d < head_dim; d += 16) {
        vf_store_half(K + pos * head_dim + d, _mm512_loadu_ps(q + dim + d));
        vf_store_half(V + pos * head_dim + d, _mm512_loadu_ps(q + 2 * dim + d));
      }
      vf_attend(q, K, V, length, head_dim, scale, key_bias ? key_bias + r * length : 0, scores + rh * length,
                att + r * dim + hd * head_dim);
    }
    vf_linear_rows(&L->out, U ? U + 1 : 0, att, m, tmp, t, threads);
    vf_add_norm(h, tmp, m, dim, L->norm1_weight, L->norm1_bias, L->norm1_eps);
    vf_linear_rows(&L->up, U ? U + 2 : 0, h, m, tmp, t, threads);
    for (int64_t i = 0; i < m * hidden; i++) tmp[i] = tmp[i] > 0.f ? tmp[i] : 0.f;
    vf_linear_rows(&L->down, U ? U + 3 : 0, tmp, m, att, t, threads);
    vf_add_norm(h, att, m, dim, L->norm2_weight, L->norm2_bias, L->norm2_eps);
  }
  free(qkv); free(att); free(tmp); free(scores); free(t);
  return 0;
}
