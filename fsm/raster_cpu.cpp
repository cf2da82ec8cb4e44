// The CPU rasterizer's inner loops (fsm/raster.py compiles this with the machine's C++ compiler
// and calls it through ctypes; without a compiler it falls back to its pure-torch path).
//
// Same rules as fsm/raster.py (gsplat 1.5.3 classic): pixel centres at +0.5, 16x16 tiles,
// alpha = min(0.999, o exp(-sigma)) skipped below 1/255, a pixel stops before the Gaussian that
// would bring its transmittance to <= 1e-4. The projection stays in torch (autograd); this file
// bins the projected splats into tiles, composites them front to back per pixel, and computes
// the compositing gradients by walking each pixel's drawn splats back to front.
//
// Layouts (row-major, C cameras, N Gaussians, D colour channels, F = D + 1 features):
//   means2d (C,N,2)  conics (C,N,3) = [A, B, C] with sigma = A dx^2/2 + B dx dy + C dy^2/2
//   depths (C,N)  colors (N,D)  opacities (N)  radii (C,N,2) int64 (0: culled)
//   tile lists: first (C*tiles+1) int64 offsets into ids (int32), each list front to back
//   features out (C,F,H,W) = [colour D, depth], transmittance out (C,H,W)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int TILE = 16;

template <typename S>
struct Splat {
    S x, y, a, b, c, o, log_lim;  // mean, conic, opacity, ln(255 o): sigma beyond it gives alpha < 1/255
    int32_t id;
};

// Tiles [x0,x1) x [y0,y1) touched by Gaussian g's box, as fsm/raster.py computes them.
template <typename S>
bool tile_box(const S* m2d, const int64_t* radii, int64_t g, int64_t tiles_x, int64_t tiles_y,
              int64_t& x0, int64_t& x1, int64_t& y0, int64_t& y1) {
    const S rx = (S)radii[2 * g], ry = (S)radii[2 * g + 1];
    if (!(rx > 0 && ry > 0)) return false;
    const S mx = m2d[2 * g], my = m2d[2 * g + 1];
    auto clampi = [](S v, int64_t hi) { return (int64_t)std::min<S>(std::max<S>(v, 0), (S)hi); };
    x0 = clampi(std::floor((mx - rx) / TILE), tiles_x);
    y0 = clampi(std::floor((my - ry) / TILE), tiles_y);
    x1 = clampi(std::ceil((mx + rx) / TILE), tiles_x);
    y1 = clampi(std::ceil((my + ry) / TILE), tiles_y);
    return x1 > x0 && y1 > y0;
}

template <typename S>
void bin_count(int64_t C, int64_t N, const S* m2d, const int64_t* radii, int64_t W, int64_t H, int64_t* counts) {
    const int64_t tx = (W + TILE - 1) / TILE, ty = (H + TILE - 1) / TILE;
    for (int64_t c = 0; c < C; ++c)
        for (int64_t g = 0; g < N; ++g) {
            int64_t x0, x1, y0, y1;
            if (!tile_box(m2d + 2 * c * N, radii + 2 * c * N, g, tx, ty, x0, x1, y0, y1)) continue;
            for (int64_t y = y0; y < y1; ++y)
                for (int64_t x = x0; x < x1; ++x) counts[(c * ty + y) * tx + x]++;
        }
}

// order (C,N): each camera's Gaussians sorted by depth, so every tile's list comes out sorted.
template <typename S>
void bin_fill(int64_t C, int64_t N, const S* m2d, const int64_t* radii, const int64_t* order, int64_t W, int64_t H,
              const int64_t* first, int32_t* ids) {
    const int64_t tx = (W + TILE - 1) / TILE, ty = (H + TILE - 1) / TILE;
    std::vector<int64_t> cursor(first, first + C * tx * ty);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < N; ++k) {
            const int64_t g = order[c * N + k];
            int64_t x0, x1, y0, y1;
            if (!tile_box(m2d + 2 * c * N, radii + 2 * c * N, g, tx, ty, x0, x1, y0, y1)) continue;
            for (int64_t y = y0; y < y1; ++y)
                for (int64_t x = x0; x < x1; ++x) ids[cursor[(c * ty + y) * tx + x]++] = (int32_t)g;
        }
}

template <typename S>
void gather(int64_t c, int64_t N, const S* m2d, const S* conics, const S* opac, const int32_t* ids, int64_t n,
            std::vector<Splat<S>>& out) {
    out.resize(n);
    for (int64_t k = 0; k < n; ++k) {
        const int64_t g = ids[k], cg = c * N + g;
        const S o = opac[g];
        out[k] = {m2d[2 * cg], m2d[2 * cg + 1], conics[3 * cg], conics[3 * cg + 1], conics[3 * cg + 2], o,
                  std::log(o * (S)255) + (S)1e-3, (int32_t)g};
    }
}

// One pixel's walk over its tile's list: calls draw(k, alpha, raw, T_before, dx, dy) for every
// drawn splat, returns the final transmittance.
template <typename S, typename Draw>
inline S walk(const std::vector<Splat<S>>& sp, S px, S py, Draw draw) {
    const S alpha_min = (S)(1.0 / 255.0), alpha_max = (S)0.999, t_stop = (S)1e-4;
    S T = 1;
    for (size_t k = 0; k < sp.size(); ++k) {
        const Splat<S>& s = sp[k];
        const S dx = s.x - px, dy = s.y - py;
        const S sigma = (S)0.5 * s.a * dx * dx + s.b * dx * dy + (S)0.5 * s.c * dy * dy;
        if (sigma > s.log_lim) continue;  // alpha < 1/255 for sure: skip the exp
        const S raw = s.o * std::exp(-sigma);
        const S alpha = std::min(raw, alpha_max);
        if (alpha < alpha_min) continue;
        const S next = T * (1 - alpha);
        if (next <= t_stop) break;
        draw(k, alpha, raw, T, dx, dy);
        T = next;
    }
    return T;
}

template <typename S>
void forward(int64_t C, int64_t N, int64_t D, const S* m2d, const S* conics, const S* depths, const S* colors,
             const S* opac, int64_t W, int64_t H, const int64_t* first, const int32_t* ids, S* feat, S* trans) {
    const int64_t tx = (W + TILE - 1) / TILE, ty = (H + TILE - 1) / TILE, HW = H * W;
    std::vector<Splat<S>> sp;
    std::vector<S> acc(D + 1);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < tx * ty; ++t) {
            const int64_t b = c * tx * ty + t;
            gather(c, N, m2d, conics, opac, ids + first[b], first[b + 1] - first[b], sp);
            const S* dep = depths + c * N;
            for (int64_t y = (t / tx) * TILE; y < std::min((t / tx + 1) * TILE, H); ++y)
                for (int64_t x = (t % tx) * TILE; x < std::min((t % tx + 1) * TILE, W); ++x) {
                    std::fill(acc.begin(), acc.end(), (S)0);
                    const S T = walk(sp, (S)x + (S)0.5, (S)y + (S)0.5, [&](size_t k, S alpha, S, S T0, S, S) {
                        const int64_t g = sp[k].id;
                        const S w = alpha * T0;
                        for (int64_t d = 0; d < D; ++d) acc[d] += w * colors[g * D + d];
                        acc[D] += w * dep[g];
                    });
                    for (int64_t d = 0; d <= D; ++d) feat[(c * (D + 1) + d) * HW + y * W + x] = acc[d];
                    trans[c * HW + y * W + x] = T;
                }
        }
}

// Gradients of features (C,F,H,W) and transmittance (C,H,W) -> splat parameters. For drawn
// splats i (front to back, transmittance T_i before each, T_f at the end), with f_i the features
// and gF, gT the incoming gradients at the pixel:
//   dL/df_i     = alpha_i T_i gF
//   dL/dalpha_i = T_i f_i.gF - (sum_{k>i} alpha_k T_k f_k.gF + gT T_f) / (1 - alpha_i)
// then through alpha = o exp(-sigma) (no gradient where the 0.999 clamp is active).
template <typename S>
void backward(int64_t C, int64_t N, int64_t D, const S* m2d, const S* conics, const S* depths, const S* colors,
              const S* opac, int64_t W, int64_t H, const int64_t* first, const int32_t* ids, const S* g_feat,
              const S* g_trans, S* g_m2d, S* g_conics, S* g_depths, S* g_colors, S* g_opac) {
    const int64_t tx = (W + TILE - 1) / TILE, ty = (H + TILE - 1) / TILE, HW = H * W;
    struct Drawn { size_t k; S alpha, raw, T, dx, dy; };
    std::vector<Splat<S>> sp;
    std::vector<Drawn> drawn;
    std::vector<S> gF(D + 1);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < tx * ty; ++t) {
            const int64_t b = c * tx * ty + t;
            gather(c, N, m2d, conics, opac, ids + first[b], first[b + 1] - first[b], sp);
            const S* dep = depths + c * N;
            for (int64_t y = (t / tx) * TILE; y < std::min((t / tx + 1) * TILE, H); ++y)
                for (int64_t x = (t % tx) * TILE; x < std::min((t % tx + 1) * TILE, W); ++x) {
                    drawn.clear();
                    const S T_f = walk(sp, (S)x + (S)0.5, (S)y + (S)0.5, [&](size_t k, S alpha, S raw, S T0, S dx, S dy) {
                        drawn.push_back({k, alpha, raw, T0, dx, dy});
                    });
                    for (int64_t d = 0; d <= D; ++d) gF[d] = g_feat[(c * (D + 1) + d) * HW + y * W + x];
                    const S gT = g_trans[c * HW + y * W + x];
                    S behind = 0;  // sum over splats behind the current one of alpha_k T_k f_k.gF
                    for (size_t j = drawn.size(); j-- > 0;) {
                        const Drawn& r = drawn[j];
                        const Splat<S>& s = sp[r.k];
                        const int64_t g = s.id, cg = c * N + g;
                        const S w = r.alpha * r.T;
                        S dot = gF[D] * dep[g];
                        for (int64_t d = 0; d < D; ++d) {
                            dot += gF[d] * colors[g * D + d];
                            g_colors[g * D + d] += w * gF[d];
                        }
                        g_depths[cg] += w * gF[D];
                        const S g_alpha = r.T * dot - (behind + gT * T_f) / (1 - r.alpha);
                        behind += w * dot;
                        if (r.raw > (S)0.999) continue;  // clamped: alpha does not depend on the splat
                        const S g_sigma = -r.alpha * g_alpha;  // d alpha / d sigma = -alpha
                        g_opac[g] += r.raw / s.o * g_alpha;  // d alpha / d o = exp(-sigma)
                        g_m2d[2 * cg] += g_sigma * (s.a * r.dx + s.b * r.dy);
                        g_m2d[2 * cg + 1] += g_sigma * (s.b * r.dx + s.c * r.dy);
                        g_conics[3 * cg] += g_sigma * (S)0.5 * r.dx * r.dx;
                        g_conics[3 * cg + 1] += g_sigma * r.dx * r.dy;
                        g_conics[3 * cg + 2] += g_sigma * (S)0.5 * r.dy * r.dy;
                    }
                }
        }
}

}  // namespace

// ctypes entry points: one per scalar type (f32, f64).
#define FSM_ENTRY(S, suffix)                                                                                          \
    extern "C" void bin_count_##suffix(int64_t C, int64_t N, const S* m2d, const int64_t* radii, int64_t W,           \
                                       int64_t H, int64_t* counts) {                                                   \
        bin_count<S>(C, N, m2d, radii, W, H, counts);                                                                  \
    }                                                                                                                  \
    extern "C" void bin_fill_##suffix(int64_t C, int64_t N, const S* m2d, const int64_t* radii, const int64_t* order, \
                                      int64_t W, int64_t H, const int64_t* first, int32_t* ids) {                      \
        bin_fill<S>(C, N, m2d, radii, order, W, H, first, ids);                                                        \
    }                                                                                                                  \
    extern "C" void forward_##suffix(int64_t C, int64_t N, int64_t D, const S* m2d, const S* conics, const S* depths,  \
                                     const S* colors, const S* opac, int64_t W, int64_t H, const int64_t* first,       \
                                     const int32_t* ids, S* feat, S* trans) {                                          \
        forward<S>(C, N, D, m2d, conics, depths, colors, opac, W, H, first, ids, feat, trans);                         \
    }                                                                                                                  \
    extern "C" void backward_##suffix(int64_t C, int64_t N, int64_t D, const S* m2d, const S* conics,                 \
                                      const S* depths, const S* colors, const S* opac, int64_t W, int64_t H,           \
                                      const int64_t* first, const int32_t* ids, const S* g_feat, const S* g_trans,     \
                                      S* g_m2d, S* g_conics, S* g_depths, S* g_colors, S* g_opac) {                    \
        backward<S>(C, N, D, m2d, conics, depths, colors, opac, W, H, first, ids, g_feat, g_trans, g_m2d, g_conics,    \
                    g_depths, g_colors, g_opac);                                                                       \
    }

FSM_ENTRY(float, f32)
FSM_ENTRY(double, f64)
