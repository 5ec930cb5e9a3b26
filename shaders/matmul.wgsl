// Portable tiled matmul: out[z] = a[z] · b[z] (+ bias), all row-major.
//   a [batch, M, K], b [batch, K, N] (batch stride 0 when b is a shared weight), out [batch, M, N],
//   bias [N]. Storage type T, f32 accumulation.
// Specialised by (see ops/matmul):
//   RM, RN    each thread owns RM×RN blocks of 4×4 outputs; the workgroup tile is (64·RM)×(64·RN)
//   HAS_BIAS  add bias[col]
//   HAS_RES   add res[((z·M + row) / res_rep)·N + col] (ops/residual.rs)
//   GEGLU     store x·gelu(g) per column pair: see `Store::Geglu` in ops/matmul
//   GROUP_M   row tiles per group in the launch order (L2 reuse of b)
// 256 invocations as 16×16: thread (tx, ty) owns rows g·64 + 4·ty + r and columns h·64 + 4·tx + c,
// so the vec4 reads from workgroup memory are conflict-free (b) or broadcast (a).
// A file before this one says how a is taken: matmul_a_plain.wgsl, or matmul_a_ln.wgsl /
// matmul_a_gn.wgsl for a LayerNorm / GroupNorm applied as it loads (ln_one, as a's elements are
// staged).

const BM: u32 = 64u * RM;
const BN: u32 = 64u * RN;
const BK: u32 = 16u;
// a's tile is stored transposed ([k][m]); one vec4 of padding per k-row spreads the transposing
// stores over the banks.
const AST: u32 = BM / 4u + 1u;
const BST: u32 = BN / 4u;
const LA: u32 = BM * BK / 256u;   // a elements each invocation loads per k-step
const LB: u32 = BN * BK / 256u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,
    tiles_n: u32,
    a_bs: u32,   // batch strides in elements
    b_bs: u32,
    o_bs: u32,
    batch: u32,
    res_rep: u32,
    seg_px: u32, // rows per GroupNorm segment of a (matmul_a_gn.wgsl); else unused
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
// Without a bias the dispatch binds b here again (every binding must be used).
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
// Without a residual the dispatch binds a here again.
@group(0) @binding(5) var<storage, read> res: array<T>;

// a's tile in the storage type: an operand normalised as it loads (ln_one) is rounded to T by
// this store as the norm's own pass rounds its output, and no compiler can skip the rounding.
var<workgroup> As: array<vec4<T>, BK * AST>;
var<workgroup> Bs: array<vec4<f32>, BK * BST>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let per_batch = p.tiles_m * p.tiles_n;
    let w = wg_index(wid, nwg);
    if (w >= per_batch * p.batch) {
        return;
    }
    let z = w / per_batch;
    let t = tile_of(w % per_batch);
    let m0 = t.x * BM;
    let n0 = t.y * BN;
    let a_off = z * p.a_bs;
    let b_off = z * p.b_bs;

    // Load mapping: a rows read 16 consecutive k (coalesced per 16 invocations); b rows read BN
    // consecutive columns.
    let la_k = lid % BK;
    let la_m = lid / BK;            // + 16·i
    let lb_n = lid % BN;
    let lb_k = lid / BN;            // + (256 / BN)·i
    let lb_step = 256u / BN;

    var ra: array<f32, LA>;
    var rb: array<f32, LB>;
    // What ln_one needs of each of this invocation's a rows (the same rows at every k-step).
    var rt: array<vec4<f32>, LA>;
    for (var i = 0u; i < LA; i++) {
        rt[i] = ln_row(m0 + la_m + 16u * i);
    }
    var acc: array<vec4<f32>, 16u * RM * RN / 4u>;   // [g·4 + r][h] rows of 4 columns

    let ktiles = (p.k + BK - 1u) / BK;
    // Prefetch the first k-step into registers.
    for (var i = 0u; i < LA; i++) {
        let row = m0 + la_m + 16u * i;
        let kk = la_k;
        ra[i] = select(0.0, f32(a[min(a_off + row * p.k + kk, arrayLength(&a) - 1u)]), row < p.m && kk < p.k);
    }
    for (var i = 0u; i < LB; i++) {
        let kk = lb_k + lb_step * i;
        let col = n0 + lb_n;
        rb[i] = select(0.0, f32(b[min(b_off + kk * p.n + col, arrayLength(&b) - 1u)]), kk < p.k && col < p.n);
    }

    let tx = lid % 16u;
    let ty = lid / 16u;
    for (var kt = 0u; kt < ktiles; kt++) {
        for (var i = 0u; i < LA; i++) {
            let m = la_m + 16u * i;
            let kk = kt * BK + la_k;
            // The zero padding stays zero.
            As[la_k * AST + m / 4u][m % 4u] = T(select(0.0, ln_one(ra[i], rt[i], kk), m0 + m < p.m && kk < p.k));
        }
        for (var i = 0u; i < LB; i++) {
            Bs[(lb_k + lb_step * i) * BST + lb_n / 4u][lb_n % 4u] = rb[i];
        }
        workgroupBarrier();
        // Fetch the next k-step while this one is multiplied.
        if (kt + 1u < ktiles) {
            let k0 = (kt + 1u) * BK;
            for (var i = 0u; i < LA; i++) {
                let row = m0 + la_m + 16u * i;
                let kk = k0 + la_k;
                ra[i] = select(0.0, f32(a[min(a_off + row * p.k + kk, arrayLength(&a) - 1u)]), row < p.m && kk < p.k);
            }
            for (var i = 0u; i < LB; i++) {
                let kk = k0 + lb_k + lb_step * i;
                let col = n0 + lb_n;
                rb[i] = select(0.0, f32(b[min(b_off + kk * p.n + col, arrayLength(&b) - 1u)]), kk < p.k && col < p.n);
            }
        }
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<vec4<f32>, RM>;
            var bv: array<vec4<f32>, RN>;
            for (var g = 0u; g < RM; g++) {
                av[g] = vec4<f32>(As[kk * AST + g * 16u + ty]);
            }
            for (var h = 0u; h < RN; h++) {
                bv[h] = Bs[kk * BST + h * 16u + tx];
            }
            for (var g = 0u; g < RM; g++) {
                for (var r = 0u; r < 4u; r++) {
                    for (var h = 0u; h < RN; h++) {
                        let i = (g * 4u + r) * RN + h;
                        acc[i] = fma(vec4<f32>(av[g][r]), bv[h], acc[i]);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    let o_off = z * p.o_bs;
    for (var g = 0u; g < RM; g++) {
        for (var r = 0u; r < 4u; r++) {
            let row = m0 + g * 64u + ty * 4u + r;
            if (row >= p.m) {
                continue;
            }
            for (var h = 0u; h < RN; h++) {
                let v = acc[(g * 4u + r) * RN + h];
                if (GEGLU) {
                    // (x_j, x_j+1, g_j, g_j+1) with j = col / 2; N % 4 == 0, one shared weight.
                    let col = n0 + h * 64u + tx * 4u;
                    if (col < p.n) {
                        var u = v;
                        if (HAS_BIAS) {
                            u += vec4<f32>(f32(bias[col]), f32(bias[col + 1u]), f32(bias[col + 2u]), f32(bias[col + 3u]));
                        }
                        let o = row * (p.n / 2u) + col / 2u;
                        out[o] = T(u.x * gelu_f32(u.z));
                        out[o + 1u] = T(u.y * gelu_f32(u.w));
                    }
                    continue;
                }
                for (var c = 0u; c < 4u; c++) {
                    let col = n0 + h * 64u + tx * 4u + c;
                    if (col < p.n) {
                        var x = v[c];
                        if (HAS_BIAS) {
                            x += f32(bias[col]);
                        }
                        if (HAS_RES) {
                            x += f32(res[((z * p.m + row) / p.res_rep) * p.n + col]);
                        }
                        out[o_off + row * p.n + col] = T(x);
                    }
                }
            }
        }
    }
}

// Launch order: groups of GROUP_M row tiles walk the column tiles together, so the workgroups in
// flight share a few row blocks of a and column blocks of b in L2.
fn tile_of(w: u32) -> vec2<u32> {
    let per_group = GROUP_M * p.tiles_n;
    let first_m = (w / per_group) * GROUP_M;
    let size_m = min(p.tiles_m - first_m, GROUP_M);
    let r = w % per_group;
    return vec2<u32>(first_m + r % size_m, r / size_m);
}
