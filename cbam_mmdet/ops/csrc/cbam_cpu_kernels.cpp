// CBAM and SE CPU inference (float32, contiguous NCHW or channels_last) for cbam_mmdet.ops:
//   channel_pool:  (avg, max) over H x W of every channel               (one read)
//   mlp_gate:      sigmoid(W2 sum_k relu(W1 p_k + b1) + K b2)            (each weight once)
//   se_eval:       out = F * mlp_gate(avg(F)): SE in one call            (two reads, one write)
//   spatial_pool:  [max_c a_c F_c ; mean_c a_c F_c] for every pixel      (one read)
//   scale:         out = (F * a_c) * s_p                                 (one read, one write)
//   cbam_eval:     out = (F * a_c) * sigmoid(BN(conv_KxK([max_c ; mean_c](F * a)))) with
//                  BatchNorm in running statistics, in one call          (two reads, one write)
// (With batch statistics, PyTorch ops run the convolution and BatchNorm between spatial_pool
// and scale.) Outputs are laid out as F and may be F itself.
// An NCHW pass walks whole channel planes (passes reading all channels of a band of rows ran
// 3-4x slower in some processes, depending on where the map's pages lay); a channels_last
// pass walks the pixels, each pixel's C values at once. A thread takes its planes (pixels)
// descending in one pass and ascending in the next, which starts on values still in cache.
// Maxima propagate NaN as torch.amax does (taken again with NaN propagation where the
// matching sum is NaN). Sums over H x W run in float lanes over chunks of 4096 values, added
// in double. Hot loops are built for AVX-512, AVX2 and baseline x86-64 (target_clones).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CBAM_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CBAM_MULTIVERSION
#endif

namespace {

constexpr int64_t kChunk = 4096;
constexpr int64_t kPoolBlock = 64;      // channels_last pooling: pixels per block
constexpr int64_t kMinPartPixels = 128;  // channels_last pooling: pixels per part
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float nan_max(float m, float v) { return (v > m || v != v) ? v : m; }

// NaN-propagating max_c a_c x_c at one pixel (channel stride hw; 1 for channels_last).
float nan_aware_channel_max(const float* x, const float* a, int64_t c, int64_t hw) {
  float best = kNegInf;
  for (int64_t ci = 0; ci < c; ++ci) best = nan_max(best, x[ci * hw] * a[ci]);
  return best;
}

// Sum (double) and NaN-propagating maximum of row[0:len].
CBAM_MULTIVERSION
void pool_row(const float* row, int64_t len, double* sum_out, float* max_out) {
  double total = 0;
  float best = kNegInf;
  for (int64_t q = 0; q < len; q += kChunk) {
    const int64_t end = std::min(len, q + kChunk);
    float s = 0.0f, m = kNegInf;
#pragma omp simd reduction(+ : s) reduction(max : m)
    for (int64_t p = q; p < end; ++p) {
      s += row[p];
      m = m > row[p] ? m : row[p];
    }
    total += s;
    best = best > m ? best : m;
  }
  if (std::isnan(total)) {
    best = kNegInf;
    for (int64_t p = 0; p < len; ++p) best = nan_max(best, row[p]);
  }
  *sum_out = total;
  *max_out = best;
}

// Sum (double) of row[0:len]: 16 float lanes per chunk of kChunk values.
CBAM_MULTIVERSION
double sum_row(const float* row, int64_t len) {
  constexpr int64_t kLanes = 16;
  double total = 0;
  for (int64_t q = 0; q < len; q += kChunk) {
    const int64_t end = std::min(len, q + kChunk);
    float lanes[kLanes] = {};
    int64_t p = q;
    for (; p + kLanes <= end; p += kLanes) {
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) lanes[l] += row[p + l];
    }
    float s = 0.0f;
    for (; p < end; ++p) s += row[p];
    for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
    total += s;
  }
  return total;
}

// mx = max(mx, a_c x_c), sm += a_c x_c over c channels (stride hw) of len values, 8 per sweep.
CBAM_MULTIVERSION
void spatial_rows(const float* x, const float* a, int64_t c, int64_t hw, int64_t len,
                  float* __restrict mx, float* __restrict sm) {
  int64_t ci = 0;
  for (; ci + 8 <= c; ci += 8) {
    const float* __restrict r0 = x + ci * hw;
    const float* __restrict r1 = r0 + hw;
    const float* __restrict r2 = r1 + hw;
    const float* __restrict r3 = r2 + hw;
    const float* __restrict r4 = r3 + hw;
    const float* __restrict r5 = r4 + hw;
    const float* __restrict r6 = r5 + hw;
    const float* __restrict r7 = r6 + hw;
    const float a0 = a[ci], a1 = a[ci + 1], a2 = a[ci + 2], a3 = a[ci + 3];
    const float a4 = a[ci + 4], a5 = a[ci + 5], a6 = a[ci + 6], a7 = a[ci + 7];
#pragma omp simd
    for (int64_t p = 0; p < len; ++p) {
      const float v0 = r0[p] * a0, v1 = r1[p] * a1, v2 = r2[p] * a2, v3 = r3[p] * a3;
      const float v4 = r4[p] * a4, v5 = r5[p] * a5, v6 = r6[p] * a6, v7 = r7[p] * a7;
      const float m01 = v0 > v1 ? v0 : v1, m23 = v2 > v3 ? v2 : v3;
      const float m45 = v4 > v5 ? v4 : v5, m67 = v6 > v7 ? v6 : v7;
      const float m03 = m01 > m23 ? m01 : m23, m47 = m45 > m67 ? m45 : m67;
      const float m = m03 > m47 ? m03 : m47;
      mx[p] = mx[p] > m ? mx[p] : m;
      sm[p] += ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7));
    }
  }
  for (; ci < c; ++ci) {
    const float av = a[ci];
    const float* __restrict row = x + ci * hw;
#pragma omp simd
    for (int64_t p = 0; p < len; ++p) {
      const float v = row[p] * av;
      mx[p] = mx[p] > v ? mx[p] : v;
      sm[p] += v;
    }
  }
}

// The spatial gate with BatchNorm folded, s = sigmoid(conv_KxK([dmax; dmean]) * scale +
// shift) (zero padding, weight (2, K, K)), for rows [r0, r1) of an h x wd map into s.
CBAM_MULTIVERSION
void gate_rows(const float* dmax, const float* dmean, int64_t h, int64_t wd, int64_t r0,
               int64_t r1, const float* w, int64_t k, float scale, float shift, float* s) {
  const int64_t pad = k / 2;
  for (int64_t r = r0; r < r1; ++r) {
    float* srow = s + (r - r0) * wd;
    std::fill(srow, srow + wd, 0.0f);
    for (int64_t ch = 0; ch < 2; ++ch) {
      const float* d = ch == 0 ? dmax : dmean;
      for (int64_t ky = 0; ky < k; ++ky) {
        const int64_t yy = r + ky - pad;
        if (yy < 0 || yy >= h) continue;
        const float* drow = d + yy * wd;
        for (int64_t kx = 0; kx < k; ++kx) {
          const float wv = w[(ch * k + ky) * k + kx];
          const int64_t dx = kx - pad;
          const int64_t lo = std::max<int64_t>(0, -dx), hi = std::min<int64_t>(wd, wd - dx);
          for (int64_t p = lo; p < hi; ++p) srow[p] += wv * drow[p + dx];
        }
      }
    }
    for (int64_t p = 0; p < wd; ++p) srow[p] = 1.0f / (1.0f + std::exp(-(srow[p] * scale + shift)));
  }
}

CBAM_MULTIVERSION
float dot(const float* a, const float* b, int64_t len) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < len; ++i) sum += a[i] * b[i];
  return sum;
}

// orow = (row av) srow; orow may be row.
CBAM_MULTIVERSION
void scale_row(const float* row, float av, const float* srow, float* orow, int64_t len) {
  for (int64_t p = 0; p < len; ++p) orow[p] = (row[p] * av) * srow[p];
}

// channels_last: acc += x_p and (kMax) mx = max(mx, x_p) channel by channel over len
// pixels of c channels, `stride` apart (kMax false: SE's average alone, faster).
template <bool kMax>
CBAM_MULTIVERSION
void pool_pixels(const float* x, int64_t len, int64_t c, int64_t stride,
                 float* __restrict acc, float* __restrict mx) {
  int64_t p = 0;
  for (; p + 4 <= len; p += 4) {  // four pixels per update of acc and mx
    const float* __restrict r0 = x + p * stride;
    const float* __restrict r1 = r0 + stride;
    const float* __restrict r2 = r1 + stride;
    const float* __restrict r3 = r2 + stride;
#pragma omp simd
    for (int64_t ci = 0; ci < c; ++ci) {
      acc[ci] += (r0[ci] + r1[ci]) + (r2[ci] + r3[ci]);
      if constexpr (kMax) {
        const float m01 = r0[ci] > r1[ci] ? r0[ci] : r1[ci];
        const float m23 = r2[ci] > r3[ci] ? r2[ci] : r3[ci];
        const float m = m01 > m23 ? m01 : m23;
        mx[ci] = mx[ci] > m ? mx[ci] : m;
      }
    }
  }
  for (; p < len; ++p) {
    const float* __restrict row = x + p * stride;
#pragma omp simd
    for (int64_t ci = 0; ci < c; ++ci) {
      acc[ci] += row[ci];
      if constexpr (kMax) mx[ci] = mx[ci] > row[ci] ? mx[ci] : row[ci];
    }
  }
}

// channels_last: dmax[p] = max_c a_c x_pc and dsum[p] = sum_c a_c x_pc over len pixels.
CBAM_MULTIVERSION
void spatial_pixels(const float* x, const float* a, int64_t len, int64_t c, float* dmax,
                    float* dsum) {
  for (int64_t p = 0; p < len; ++p) {
    const float* __restrict row = x + p * c;
    float m = kNegInf, sum = 0.0f;
#pragma omp simd reduction(+ : sum) reduction(max : m)
    for (int64_t ci = 0; ci < c; ++ci) {
      const float v = row[ci] * a[ci];
      sum += v;
      m = m > v ? m : v;
    }
    dmax[p] = m;
    dsum[p] = sum;
  }
}

// channels_last: out_pc = (x_pc a_c) s_p over len pixels; out may be x.
CBAM_MULTIVERSION
void scale_pixels(const float* x, const float* a, const float* s, float* out, int64_t len,
                  int64_t c) {
  for (int64_t p = 0; p < len; ++p) {
    const float* row = x + p * c;
    float* orow = out + p * c;
    const float sv = s[p];
#pragma omp simd
    for (int64_t ci = 0; ci < c; ++ci) orow[ci] = (row[ci] * a[ci]) * sv;
  }
}

// Whether x (contiguous NCHW or channels_last, checked) is laid out channels_last; a
// map that is both (H x W == 1 or C == 1) counts as NCHW, whose order it has.
bool channels_last(const at::Tensor& x) { return !x.is_contiguous(); }

void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4 &&
                  (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)),
              name, " must be a float32 CPU tensor (N, C, H, W), contiguous NCHW or "
              "channels_last");
}

void check_out(const at::Tensor& x, const at::Tensor& out) {
  check_input(out, "out");
  TORCH_CHECK(out.sizes() == x.sizes() && channels_last(out) == channels_last(x),
              "out must have x's shape and memory layout");
}

void check_gate(const at::Tensor& t, int64_t numel, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.numel() == numel,
              name, " must be a contiguous float32 CPU tensor of ", numel, " values");
}

int64_t row_grain(int64_t hw) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(hw, 1)); }

// channels_last: the threads split the N x HW pixels, calling fn(sample, first, stop) per run.
template <typename F>
void parallel_pixels(int64_t n, int64_t hw, int64_t c, const F& fn) {
  at::parallel_for(0, n * hw, row_grain(c), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t smp = i / hw, stop = std::min(end, (smp + 1) * hw);
      fn(smp, i, stop);
      i = stop;
    }
  });
}

// channels_last: parts of each sample's pixels (with fewer parts than threads, also channel
// blocks) sum chunks of kChunk pixels in float, added in double; mx null: the average only.
void channel_pool_nhwc(const float* px, int64_t n, int64_t c, int64_t hw, float* avg, float* mx) {
  const int64_t threads = at::get_num_threads();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, hw / kMinPartPixels));
  // channel blocks of at least kMinBlock channels (whole cache lines of a pixel)
  constexpr int64_t kMinBlock = 64;
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>(threads / std::max<int64_t>(1, n * parts), c / kMinBlock));
  std::vector<double> totals(n * parts * c);
  std::vector<float> maxima(n * parts * c);
  at::parallel_for(0, n * parts * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(c);
    for (int64_t i = end - 1; i >= begin; --i) {  // descending, as within each part below
      const int64_t sp = i / blocks, b = i % blocks;
      const int64_t s = sp / parts, t = sp % parts;
      const int64_t p0 = hw * t / parts, p1 = hw * (t + 1) / parts;
      const int64_t c0 = c * b / blocks, c1 = c * (b + 1) / blocks, cn = c1 - c0;
      double* tot = totals.data() + sp * c + c0;
      float* m = maxima.data() + sp * c + c0;
      std::fill(tot, tot + cn, 0.0);
      std::fill(m, m + cn, kNegInf);
      // chunks and their kPoolBlock blocks descending: the next pass starts on cached pixels
      const int64_t chunks = (p1 - p0 + kChunk - 1) / kChunk;
      for (int64_t k = chunks - 1; k >= 0; --k) {
        std::fill(acc.begin(), acc.begin() + cn, 0.0f);
        const int64_t q0 = p0 + k * kChunk, q1 = std::min(p1, q0 + kChunk);
        for (int64_t q = q0 + (q1 - q0 - 1) / kPoolBlock * kPoolBlock; q >= q0;
             q -= kPoolBlock) {
          const float* from = px + (s * hw + q) * c + c0;
          const int64_t len = std::min(q1, q + kPoolBlock) - q;
          if (mx != nullptr) {
            pool_pixels<true>(from, len, cn, c, acc.data(), m);
          } else {
            pool_pixels<false>(from, len, cn, c, acc.data(), nullptr);
          }
        }
        for (int64_t ci = 0; ci < cn; ++ci) tot[ci] += acc[ci];
      }
    }
  });
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t ci = 0; ci < c; ++ci) {
      double total = 0;
      for (int64_t t = 0; t < parts; ++t) total += totals[(s * parts + t) * c + ci];
      avg[s * c + ci] = static_cast<float>(total / static_cast<double>(hw));
      if (mx == nullptr) continue;
      float best = kNegInf;
      for (int64_t t = 0; t < parts; ++t) {
        best = nan_max(best, maxima[(s * parts + t) * c + ci]);
      }
      if (std::isnan(total)) {  // NaN among the values: the maximum with NaN propagation
        best = kNegInf;
        for (int64_t p = 0; p < hw; ++p) best = nan_max(best, px[(s * hw + p) * c + ci]);
      }
      mx[s * c + ci] = best;
    }
  }
}

// (2, N, C): average and maximum of every channel over H x W (one pass).
at::Tensor channel_pool(const at::Tensor& x) {
  check_input(x, "x");
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  auto out = at::empty({2, n, c}, x.options());
  const float* px = x.data_ptr<float>();
  float* avg = out.data_ptr<float>();
  float* mx = avg + n * c;
  if (channels_last(x)) {
    channel_pool_nhwc(px, n, c, hw, avg, mx);
    return out;
  }
  // each thread's planes descending: CBAM's spatial pooling then starts on cached planes
  at::parallel_for(0, n * c, row_grain(hw), [&](int64_t begin, int64_t end) {
    for (int64_t i = end - 1; i >= begin; --i) {
      double total;
      pool_row(px + i * hw, hw, &total, mx + i);
      avg[i] = static_cast<float>(total / static_cast<double>(hw));
    }
  });
  return out;
}

// out = (F * a_c) * s_p, a of N x C, s of N x H x W values; out may be x itself.
void scale(const at::Tensor& x, const at::Tensor& a, const at::Tensor& s, at::Tensor& out) {
  check_input(x, "x");
  check_out(x, out);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  check_gate(a, n * c, "a");
  check_gate(s, n * hw, "s");
  const float* px = x.data_ptr<float>();
  const float* pa = a.data_ptr<float>();
  const float* ps = s.data_ptr<float>();
  float* po = out.data_ptr<float>();
  if (channels_last(x)) {
    parallel_pixels(n, hw, c, [&](int64_t smp, int64_t i, int64_t stop) {
      scale_pixels(px + i * c, pa + smp * c, ps + i, po + i * c, stop - i, c);
    });
    return;
  }
  at::parallel_for(0, n * c, row_grain(hw), [&](int64_t begin, int64_t end) {
    // descending: CBAM's spatial pooling (ascending) read each thread's last planes last
    for (int64_t i = end - 1; i >= begin; --i) {
      scale_row(px + i * hw, pa[i], ps + (i / c) * hw, po + i * hw, hw);
    }
  });
}

// channels_last: the descriptor of pixels [i, stop) (of the N x HW) of sample smp into desc.
void desc_pixels(const float* px, const float* pa, int64_t smp, int64_t i, int64_t stop,
                 int64_t c, int64_t hw, float* desc) {
  const int64_t p0 = i - smp * hw;
  float* mx = desc + smp * 2 * hw;
  float* sm = mx + hw;
  const float inv_c = 1.0f / static_cast<float>(c);
  spatial_pixels(px + i * c, pa + smp * c, stop - i, c, mx + p0, sm + p0);
  for (int64_t p = p0; p < p0 + (stop - i); ++p) {
    sm[p] *= inv_c;
    if (std::isnan(sm[p])) {  // NaN among the values: the maximum with NaN propagation
      mx[p] = nan_aware_channel_max(px + (smp * hw + p) * c, pa + smp * c, c, 1);
    }
  }
}

// (N, 2, H, W): [max_c ; mean_c] of (F_c * a_c), a of N x C. NCHW: the threads split the
// channels, each walking whole planes into its own partial maps, then combined.
// channels_last: the threads split the pixels (desc_pixels).
at::Tensor spatial_pool(const at::Tensor& x, const at::Tensor& a) {
  check_input(x, "x");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hw = h * w;
  check_gate(a, n * c, "a");
  const float* px = x.data_ptr<float>();
  const float* pa = a.data_ptr<float>();
  if (channels_last(x)) {
    auto out = at::empty({n, 2, h, w}, x.options());
    float* po = out.data_ptr<float>();
    parallel_pixels(n, hw, c, [&](int64_t smp, int64_t i, int64_t stop) {
      desc_pixels(px, pa, smp, i, stop, c, hw, po);
    });
    return out;
  }
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), c));
  auto partial = at::empty({parts, n, 2, hw}, x.options());
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = c * t / parts, c1 = c * (t + 1) / parts;
      for (int64_t s = 0; s < n; ++s) {
        float* mx = pp + (t * n + s) * 2 * hw;
        float* sm = mx + hw;
        std::fill(mx, mx + hw, kNegInf);
        std::fill(sm, sm + hw, 0.0f);
        spatial_rows(px + (s * c + c0) * hw, pa + s * c + c0, c1 - c0, hw, hw, mx, sm);
      }
    }
  });
  auto out = partial.select(0, 0).clone().view({n, 2, h, w});
  float* po = out.data_ptr<float>();
  const float inv_c = 1.0f / static_cast<float>(c);
  for (int64_t s = 0; s < n; ++s) {
    float* mx = po + s * 2 * hw;
    float* sm = mx + hw;
    for (int64_t t = 1; t < parts; ++t) {
      const float* qm = pp + (t * n + s) * 2 * hw;
      const float* qs = qm + hw;
      for (int64_t p = 0; p < hw; ++p) {
        mx[p] = nan_max(mx[p], qm[p]);
        sm[p] += qs[p];
      }
    }
    for (int64_t p = 0; p < hw; ++p) {
      sm[p] *= inv_c;
      if (std::isnan(sm[p])) {  // NaN among the values: the maximum with NaN propagation
        mx[p] = nan_aware_channel_max(px + s * c * hw + p, pa + s * c, c, hw);
      }
    }
  }
  return out;
}

// channels_last: one pass in rows, the N x H rows split into parts. Every part first forms
// the descriptor of its first and last K/2 rows (read by other parts' gates), then walks its
// rows: the descriptor K/2 rows ahead, the row's gate and its scale, which reads the row's
// pixels again while still in cache. out may be x: a part overwrites only its own rows,
// each after every descriptor row that reads it has been formed.
void cbam_eval_nhwc(const float* px, const float* pa, const float* pw, int64_t k,
                    float bn_scale, float bn_shift, int64_t n, int64_t c, int64_t h,
                    int64_t wd, float* desc, float* po) {
  const int64_t hw = h * wd, rows = n * h, pad = k / 2;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  // row g is row g % h of sample g / h, pixels [g wd, (g + 1) wd) of the N x HW
  const auto desc_row = [&](int64_t g) {
    desc_pixels(px, pa, g / h, g * wd, (g + 1) * wd, c, hw, desc);
  };
  const auto first_row = [&](int64_t t) { return rows * t / parts; };  // of part t
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g0 = first_row(t), g1 = first_row(t + 1);
      for (int64_t g = g0; g < g1; ++g) {
        if (g < g0 + pad || g >= g1 - pad) desc_row(g);
      }
    }
  });
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> gate(wd);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g0 = first_row(t), g1 = first_row(t + 1);
      int64_t next = std::min(g1, g0 + pad);            // the next row to form
      const int64_t formed = std::max(next, g1 - pad);  // rows from here on are formed
      for (int64_t g = g0; g < g1; ++g) {
        for (const int64_t want = std::min(formed, g + pad + 1); next < want; ++next) {
          desc_row(next);
        }
        const int64_t smp = g / h;
        const float* dmax = desc + smp * 2 * hw;
        gate_rows(dmax, dmax + hw, h, wd, g % h, g % h + 1, pw, k, bn_scale, bn_shift, gate.data());
        scale_pixels(px + g * wd * c, pa + smp * c, gate.data(), po + g * wd * c, wd, c);
      }
    }
  });
}

// CBAM's spatial attention and scale (BatchNorm in running statistics): the descriptor
// (spatial_pool), the gate on the small map, then scale; channels_last: cbam_eval_nhwc.
void cbam_eval(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight,
               double bn_scale, double bn_shift, at::Tensor& out) {
  check_input(x, "x");
  check_out(x, out);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3), hw = h * wd;
  check_gate(a, n * c, "a");
  const int64_t k = weight.size(-1);
  check_gate(weight, 2 * k * k, "weight");
  TORCH_CHECK(k % 2 == 1, "the convolution's kernel must be odd");
  if (channels_last(x)) {
    auto desc = at::empty({n, 2, h, wd}, x.options());
    cbam_eval_nhwc(x.data_ptr<float>(), a.data_ptr<float>(), weight.data_ptr<float>(), k,
                   static_cast<float>(bn_scale), static_cast<float>(bn_shift), n, c, h, wd,
                   desc.data_ptr<float>(), out.data_ptr<float>());
    return;
  }
  const at::Tensor desc = spatial_pool(x, a);
  auto gate = at::empty({n, h, wd}, x.options());
  const float* pd = desc.data_ptr<float>();
  const float* pw = weight.data_ptr<float>();
  float* pg = gate.data_ptr<float>();
  at::parallel_for(0, n * h, std::max<int64_t>(1, 4096 / std::max<int64_t>(wd, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t smp = i / h, r0 = i % h, r1 = std::min(h, r0 + (end - i));
      const float* dmax = pd + smp * 2 * hw;
      gate_rows(dmax, dmax + hw, h, wd, r0, r1, pw, k, static_cast<float>(bn_scale),
                static_cast<float>(bn_shift), pg + smp * hw + r0 * wd);
      i += r1 - r0;
    }
  });
  scale(x, a, gate, out);
}

// The channel gate of K descriptors p (K, N, C) through the shared MLP, each weight read
// once: g (N, C) = sigmoid(W2 sum_k relu(W1 p_k + b1) + K b2); h (N, HID): hidden units.
void mlp_gate_into(const float* pp, int64_t k, int64_t n, int64_t c, int64_t hid,
                   const float* pw1, const float* pb1, const float* pw2, const float* pb2,
                   float* ph, float* pg) {
  at::parallel_for(0, hid, std::max<int64_t>(1, 32768 / c), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      for (int64_t s = 0; s < n; ++s) {
        float total = 0.0f;
        for (int64_t d = 0; d < k; ++d) {
          const float v = dot(pw1 + j * c, pp + (d * n + s) * c, c) + pb1[j];
          total += std::max(v, 0.0f);  // relu; NaN stays NaN
        }
        ph[s * hid + j] = total;
      }
    }
  });
  const float kf = static_cast<float>(k);
  at::parallel_for(0, c, std::max<int64_t>(1, 32768 / hid), [&](int64_t begin, int64_t end) {
    for (int64_t ci = begin; ci < end; ++ci) {
      for (int64_t s = 0; s < n; ++s) {
        const float z = dot(pw2 + ci * hid, ph + s * hid, hid) + kf * pb2[ci];
        pg[s * c + ci] = 1.0f / (1.0f + std::exp(-z));
      }
    }
  });
}

void check_mlp(const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
               const at::Tensor& b2, int64_t c) {
  const int64_t hid = w1.size(0);
  check_gate(w1, hid * c, "w1");
  check_gate(b1, hid, "b1");
  check_gate(w2, c * hid, "w2");
  check_gate(b2, c, "b2");
}

// The channel gate a (N, C) of K descriptors p (K, N, C) (mlp_gate_into).
at::Tensor mlp_gate(const at::Tensor& pooled, const at::Tensor& w1, const at::Tensor& b1,
                    const at::Tensor& w2, const at::Tensor& b2) {
  TORCH_CHECK(pooled.dim() == 3, "pooled must be (K, N, C)");
  const int64_t k = pooled.size(0), n = pooled.size(1), c = pooled.size(2);
  const int64_t hid = w1.size(0);
  check_gate(pooled, k * n * c, "pooled");
  check_mlp(w1, b1, w2, b2, c);
  std::vector<float> hidden(n * hid);
  auto gate = at::empty({n, c}, pooled.options());
  mlp_gate_into(pooled.data_ptr<float>(), k, n, c, hid, w1.data_ptr<float>(),
                b1.data_ptr<float>(), w2.data_ptr<float>(), b2.data_ptr<float>(),
                hidden.data(), gate.data_ptr<float>());
  return gate;
}

// NCHW: out = x av over one plane of len values; out may be x.
CBAM_MULTIVERSION
void scale_plane(const float* x, float av, float* out, int64_t len) {
#pragma omp simd
  for (int64_t p = 0; p < len; ++p) out[p] = x[p] * av;
}

// channels_last: out_pc = x_pc a_c over len pixels; out may be x.
CBAM_MULTIVERSION
void gate_pixels(const float* x, const float* a, float* out, int64_t len, int64_t c) {
  for (int64_t p = 0; p < len; ++p) {
    const float* row = x + p * c;
    float* orow = out + p * c;
#pragma omp simd
    for (int64_t ci = 0; ci < c; ++ci) orow[ci] = row[ci] * a[ci];
  }
}

// SE inference in one call: out = F * sigmoid(W2 relu(W1 avg(F) + b1) + b2); out may be x.
// Two passes (average descending, scale ascending, starting on cached planes), MLP between.
void se_eval(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
             const at::Tensor& w2, const at::Tensor& b2, at::Tensor& out) {
  check_input(x, "x");
  check_out(x, out);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  const int64_t hid = w1.size(0);
  check_mlp(w1, b1, w2, b2, c);
  std::vector<float> avg(n * c), hidden(n * hid), gate(n * c);
  const float* px = x.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const bool nhwc = channels_last(x);
  if (nhwc) {
    channel_pool_nhwc(px, n, c, hw, avg.data(), nullptr);
  } else {
    at::parallel_for(0, n * c, row_grain(hw), [&](int64_t begin, int64_t end) {
      for (int64_t i = end - 1; i >= begin; --i) {
        avg[i] = static_cast<float>(sum_row(px + i * hw, hw) / static_cast<double>(hw));
      }
    });
  }
  mlp_gate_into(avg.data(), 1, n, c, hid, w1.data_ptr<float>(), b1.data_ptr<float>(),
                w2.data_ptr<float>(), b2.data_ptr<float>(), hidden.data(), gate.data());
  const float* pg = gate.data();
  if (nhwc) {
    parallel_pixels(n, hw, c, [&](int64_t smp, int64_t i, int64_t stop) {
      gate_pixels(px + i * c, pg + smp * c, po + i * c, stop - i, c);
    });
    return;
  }
  at::parallel_for(0, n * c, row_grain(hw), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scale_plane(px + i * hw, pg[i], po + i * hw, hw);
    }
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("channel_pool", &channel_pool, "(2, N, C) average and maximum over H x W", py::arg("x"));
  m.def("spatial_pool", &spatial_pool, "(N, 2, H, W) [max_c ; mean_c] of F * a",
        py::arg("x"), py::arg("a"));
  m.def("scale", &scale, "out = (F * a_c) * s_p", py::arg("x"), py::arg("a"), py::arg("s"),
        py::arg("out"));
  m.def("mlp_gate", &mlp_gate, "sigmoid(W2 sum_k relu(W1 p_k + b1) + K b2)",
        py::arg("pooled"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"));
  m.def("se_eval", &se_eval, "out = F * sigmoid(W2 relu(W1 avg(F) + b1) + b2)",
        py::arg("x"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("out"));
  m.def("cbam_eval", &cbam_eval,
        "out = (F * a_c) * sigmoid(conv([max_c ; mean_c](F * a)) * scale + shift)",
        py::arg("x"), py::arg("a"), py::arg("conv_w"), py::arg("scale"), py::arg("shift"),
        py::arg("out"));
}
