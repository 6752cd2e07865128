// CBAM inference on CPU in three passes over the feature map (float32, contiguous NCHW):
//   channel_pool:  (avg, max) over H x W of every channel               (one read)
//   spatial_pool:  [max_c a_c F_c ; mean_c a_c F_c] for every pixel      (one read)
//   scale:         out = (F * a_c) * s_p                                 (one read, one write)
// The shared MLP, the 7x7 convolution, BatchNorm and the sigmoids run between them as
// PyTorch ops on the small maps (cbam_mmdet/ops/cbam_cpu.py).
//
// Maxima propagate NaN as torch.amax does: the vector loops take plain maxima, and where
// the matching sum is NaN (a NaN among the values makes it NaN) the maximum is taken
// again with NaN propagation. Sums over H x W run in float (vector lanes) over chunks of
// 4096 values and add the chunks in double. The hot loops are compiled for AVX-512, AVX2 and
// the baseline ISA (GCC function multiversioning, chosen at load time) on x86-64.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CBAM_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CBAM_MULTIVERSION
#endif

namespace {

constexpr int64_t kChunk = 4096;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float nan_max(float m, float v) { return (v > m || v != v) ? v : m; }

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

// mx = max(mx, a_c x_c), sm += a_c x_c over channels [0, c) of rows of hw values.
CBAM_MULTIVERSION
void spatial_rows(const float* x, const float* a, int64_t c, int64_t hw, float* mx, float* sm) {
  for (int64_t ci = 0; ci < c; ++ci) {
    const float av = a[ci];
    const float* row = x + ci * hw;
    for (int64_t p = 0; p < hw; ++p) {
      const float v = row[p] * av;
      mx[p] = mx[p] > v ? mx[p] : v;
      sm[p] += v;
    }
  }
}

CBAM_MULTIVERSION
void scale_row(const float* row, float av, const float* srow, float* orow, int64_t len) {
  for (int64_t p = 0; p < len; ++p) orow[p] = (row[p] * av) * srow[p];
}

void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4 &&
                  x.is_contiguous(),
              name, " must be a contiguous float32 CPU tensor (N, C, H, W)");
}

void check_gate(const at::Tensor& t, int64_t numel, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.numel() == numel,
              name, " must be a contiguous float32 CPU tensor of ", numel, " values");
}

int64_t row_grain(int64_t hw) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(hw, 1)); }

// (2, N, C): average and maximum of every channel over H x W.
at::Tensor channel_pool(const at::Tensor& x) {
  check_input(x, "x");
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  auto out = at::empty({2, n, c}, x.options());
  const float* px = x.data_ptr<float>();
  float* avg = out.data_ptr<float>();
  float* mx = avg + n * c;
  at::parallel_for(0, n * c, row_grain(hw), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
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
  check_input(out, "out");
  TORCH_CHECK(out.sizes() == x.sizes(), "out must have x's shape");
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  check_gate(a, n * c, "a");
  check_gate(s, n * hw, "s");
  const float* px = x.data_ptr<float>();
  const float* pa = a.data_ptr<float>();
  const float* ps = s.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, n * c, row_grain(hw), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scale_row(px + i * hw, pa[i], ps + (i / c) * hw, po + i * hw, hw);
    }
  });
}


// (N, 2, H, W): [max over channels ; mean over channels] of (F_c * a_c), a of N x C.
// The threads split the channels; each walks whole rows (sequential reads) into its own
// partial maps, which are then combined.
at::Tensor spatial_pool(const at::Tensor& x, const at::Tensor& a) {
  check_input(x, "x");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hw = h * w;
  check_gate(a, n * c, "a");
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), c));
  auto partial = at::empty({parts, n, 2, hw}, x.options());
  const float* px = x.data_ptr<float>();
  const float* pa = a.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = c * t / parts, c1 = c * (t + 1) / parts;
      for (int64_t s = 0; s < n; ++s) {
        float* mx = pp + (t * n + s) * 2 * hw;
        float* sm = mx + hw;
        std::fill(mx, mx + hw, kNegInf);
        std::fill(sm, sm + hw, 0.0f);
        spatial_rows(px + (s * c + c0) * hw, pa + s * c + c0, c1 - c0, hw, mx, sm);
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
        float best = kNegInf;
        for (int64_t ci = 0; ci < c; ++ci) best = nan_max(best, px[(s * c + ci) * hw + p] * pa[s * c + ci]);
        mx[p] = best;
      }
    }
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("channel_pool", &channel_pool, "(2, N, C) average and maximum over H x W");
  m.def("spatial_pool", &spatial_pool, "(N, 2, H, W) [max_c ; mean_c] of F * a");
  m.def("scale", &scale, "out = (F * a_c) * s_p");
}
