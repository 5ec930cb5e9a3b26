// Cooperative-matrix (tensor-core) matmul: out[z] = a[z] · b[z] (+ bias), all row-major, f16
// storage, f16 × f16 → f32 16×16×16 products.
//   a [batch, M, K], b [batch, K, N] (batch stride 0 for a shared weight), out [batch, M, N],
//   bias [N]. Needs K % 4 == 0 and N % 4 == 0 (whole vec4<f16> loads and stores); any M, N, K
//   otherwise: edge tiles load zeros into workgroup memory and store through a guarded staging copy.
// Specialised by HAS_BIAS, HAS_RES (add res[(row / res_rep)·N + col], ops/residual.rs), GEGLU
// (store x·gelu(g) per column pair, `Store::Geglu` in ops/matmul.rs) and GROUP_M (see ops/matmul.rs); a second file (matmul_coop_s1.wgsl or
// matmul_coop_s4.wgsl) declares the workgroup tiles As, Bs, their element width SW and put_a/put_b.
//
// Workgroup tile 128×256, k-step 32, 256 invocations that must form 8 subgroups of 32 (the host
// only selects this kernel on such adapters). The subgroups form a 2×4 grid; each owns a 64×64
// block as 4×4 accumulators. Every cooperative operation is executed by all subgroups the same
// number of times (uniform control flow); only addresses depend on the subgroup id.

const BM: u32 = 128u;
const BN: u32 = 256u;
const BK: u32 = 32u;
// Row strides of the workgroup tiles in f16 elements, padded by 8 so that the 16-byte row pieces
// of one 16×16 load land on different banks.
const AS: u32 = BK + 8u;
const BS: u32 = BN + 8u;
// Per-subgroup staging area: two 16×16 f32 accumulators side by side (16 rows of 32).
const STAGE: u32 = 512u;

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<T>>;
// Without a bias the dispatch binds b here again (every binding must be used).
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<T>>;
// Without a residual the dispatch binds a here again.
@group(0) @binding(5) var<storage, read> res: array<vec4<T>>;

var<workgroup> stage: array<f32, 8u * STAGE>;

alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;

fn tile_of(w: u32) -> vec2<u32> {
    let per_group = GROUP_M * p.tiles_n;
    let first_m = (w / per_group) * GROUP_M;
    let size_m = min(p.tiles_m - first_m, GROUP_M);
    let r = w % per_group;
    return vec2<u32>(first_m + r % size_m, r / size_m);
}

// One 16×32 slice (accumulator row i, accumulator column pair jp) of every subgroup's block has
// been stored to `stage`; all 256 invocations copy the 8 slices out with bias and bounds checks.
fn flush(i: u32, jp: u32, m0: u32, n0: u32, o_off4: u32, lid: u32, live: bool) {
    workgroupBarrier();
    for (var q = 0u; q < 4u; q++) {
        let idx = lid + 256u * q;
        let s = idx / 128u;              // stage slot = subgroup id
        let e = idx % 128u;
        let r = e / 8u;
        let c4 = e % 8u;
        let row = m0 + (s / 4u) * 64u + i * 16u + r;
        let col = n0 + (s % 4u) * 64u + jp * 32u + c4 * 4u;
        if (GEGLU) {
            // Two column groups (x_j, x_j+1, g_j, g_j+1), (x_j+2, .., g_j+3), j = col / 2, make
            // one output vec4: the even slots store, the odd ones only lent their values.
            // N % 8 == 0, one shared weight (batch 1).
            if (live && row < p.m && col < p.n && c4 % 2u == 0u) {
                let sv = s * STAGE + r * 32u + c4 * 4u;
                var u0 = vec4<f32>(stage[sv], stage[sv + 1u], stage[sv + 2u], stage[sv + 3u]);
                var u1 = vec4<f32>(stage[sv + 4u], stage[sv + 5u], stage[sv + 6u], stage[sv + 7u]);
                if (HAS_BIAS) {
                    u0 += vec4<f32>(f32(bias[col]), f32(bias[col + 1u]), f32(bias[col + 2u]), f32(bias[col + 3u]));
                    u1 += vec4<f32>(f32(bias[col + 4u]), f32(bias[col + 5u]), f32(bias[col + 6u]), f32(bias[col + 7u]));
                }
                let g = vec4<f32>(u0.x * gelu_f32(u0.z), u0.y * gelu_f32(u0.w), u1.x * gelu_f32(u1.z), u1.y * gelu_f32(u1.w));
                out[(row * (p.n / 2u) + col / 2u) / 4u] = vec4<T>(g);
            }
            continue;
        }
        if (live && row < p.m && col < p.n) {
            let sv = s * STAGE + r * 32u + c4 * 4u;
            var v = vec4<f32>(stage[sv], stage[sv + 1u], stage[sv + 2u], stage[sv + 3u]);
            if (HAS_BIAS) {
                v += vec4<f32>(f32(bias[col]), f32(bias[col + 1u]), f32(bias[col + 2u]), f32(bias[col + 3u]));
            }
            let o4 = o_off4 + (row * p.n + col) / 4u;
            if (HAS_RES) {
                // The output's flat row (batch included) is o4·4 / N; N % 4 == 0.
                v += vec4<f32>(res[(((o4 * 4u) / p.n) / p.res_rep) * (p.n / 4u) + col / 4u]);
            }
            out[o4] = vec4<T>(v);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    let per_batch = p.tiles_m * p.tiles_n;
    // Workgroups past the end (slack of the 2-D folding) compute a copy of the last tile and
    // store nothing: an early return would put the cooperative operations below in non-uniform
    // control flow.
    let total = per_batch * p.batch;
    let w_raw = wg_index(wid, nwg);
    let live = w_raw < total;
    let w = min(w_raw, total - 1u);
    let z = w / per_batch;
    let t = tile_of(w % per_batch);
    let m0 = t.x * BM;
    let n0 = t.y * BN;
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    let a_off4 = z * (p.a_bs / 4u);
    let b_off4 = z * (p.b_bs / 4u);
    let a_last = arrayLength(&a) - 1u;
    let b_last = arrayLength(&b) - 1u;

    // Global → register mapping: a tile rows are 8 vec4 (8 invocations per row), b tile rows are
    // 64 vec4 (64 invocations per row).
    let la_r = lid / 8u;      // + 32·i
    let la_c = lid % 8u;
    let lb_r = lid / 64u;     // + 4·i
    let lb_c = lid % 64u;
    var ra: array<vec4<f16>, 4>;
    var rb: array<vec4<f16>, 8>;
    let zero = vec4<f16>(0.0h);
    for (var i = 0u; i < 4u; i++) {
        let row = m0 + la_r + 32u * i;
        ra[i] = select(zero, vec4<f16>(a[min(a_off4 + row * k4 + la_c, a_last)]), row < p.m && la_c < k4);
    }
    for (var i = 0u; i < 8u; i++) {
        let kr = lb_r + 4u * i;
        let c = n0 / 4u + lb_c;
        rb[i] = select(zero, vec4<f16>(b[min(b_off4 + kr * n4 + c, b_last)]), kr < p.k && c < n4);
    }

    let sg_m = sg / 4u;
    let sg_n = sg % 4u;
    let a_base = sg_m * 64u * AS;
    let b_base = sg_n * 64u;

    var c00: MC; var c01: MC; var c02: MC; var c03: MC;
    var c10: MC; var c11: MC; var c12: MC; var c13: MC;
    var c20: MC; var c21: MC; var c22: MC; var c23: MC;
    var c30: MC; var c31: MC; var c32: MC; var c33: MC;

    let ktiles = (p.k + BK - 1u) / BK;
    for (var kt = 0u; kt < ktiles; kt++) {
        for (var i = 0u; i < 4u; i++) {
            put_a((la_r + 32u * i) * AS + la_c * 4u, ra[i]);
        }
        for (var i = 0u; i < 8u; i++) {
            put_b((lb_r + 4u * i) * BS + lb_c * 4u, rb[i]);
        }
        workgroupBarrier();
        // Fetch the next k-step while this one is multiplied.
        if (kt + 1u < ktiles) {
            let kq = (kt + 1u) * (BK / 4u);
            for (var i = 0u; i < 4u; i++) {
                let row = m0 + la_r + 32u * i;
                let c = kq + la_c;
                ra[i] = select(zero, vec4<f16>(a[min(a_off4 + row * k4 + c, a_last)]), row < p.m && c < k4);
            }
            let kb = (kt + 1u) * BK;
            for (var i = 0u; i < 8u; i++) {
                let kr = kb + lb_r + 4u * i;
                let c = n0 / 4u + lb_c;
                rb[i] = select(zero, vec4<f16>(b[min(b_off4 + kr * n4 + c, b_last)]), kr < p.k && c < n4);
            }
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
            let bo = kk * BS + b_base;
            let b0 = coopLoadT<MB>(&Bs[bo / SW], BS / SW);
            let b1 = coopLoadT<MB>(&Bs[(bo + 16u) / SW], BS / SW);
            let b2 = coopLoadT<MB>(&Bs[(bo + 32u) / SW], BS / SW);
            let b3 = coopLoadT<MB>(&Bs[(bo + 48u) / SW], BS / SW);
            let ao = a_base + kk;
            let a0 = coopLoadT<MA>(&As[ao / SW], AS / SW);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            let a1 = coopLoadT<MA>(&As[(ao + 16u * AS) / SW], AS / SW);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
            let a2 = coopLoadT<MA>(&As[(ao + 32u * AS) / SW], AS / SW);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c22 = coopMultiplyAdd(a2, b2, c22);
            c23 = coopMultiplyAdd(a2, b3, c23);
            let a3 = coopLoadT<MA>(&As[(ao + 48u * AS) / SW], AS / SW);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
            c32 = coopMultiplyAdd(a3, b2, c32);
            c33 = coopMultiplyAdd(a3, b3, c33);
        }
        workgroupBarrier();
    }

    // Epilogue: the store stride must be a constant (naga 30.0.2's SPIR-V writer panics on a
    // run-time coopStoreT stride).
    let o_off4 = z * (p.o_bs / 4u);
    let sb = sg * STAGE;
    coopStoreT(c00, &stage[sb], 32u); coopStoreT(c01, &stage[sb + 16u], 32u); flush(0u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c02, &stage[sb], 32u); coopStoreT(c03, &stage[sb + 16u], 32u); flush(0u, 1u, m0, n0, o_off4, lid, live);
    coopStoreT(c10, &stage[sb], 32u); coopStoreT(c11, &stage[sb + 16u], 32u); flush(1u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c12, &stage[sb], 32u); coopStoreT(c13, &stage[sb + 16u], 32u); flush(1u, 1u, m0, n0, o_off4, lid, live);
    coopStoreT(c20, &stage[sb], 32u); coopStoreT(c21, &stage[sb + 16u], 32u); flush(2u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c22, &stage[sb], 32u); coopStoreT(c23, &stage[sb + 16u], 32u); flush(2u, 1u, m0, n0, o_off4, lid, live);
    coopStoreT(c30, &stage[sb], 32u); coopStoreT(c31, &stage[sb + 16u], 32u); flush(3u, 0u, m0, n0, o_off4, lid, live);
    coopStoreT(c32, &stage[sb], 32u); coopStoreT(c33, &stage[sb + 16u], 32u); flush(3u, 1u, m0, n0, o_off4, lid, live);
}
